"""Which sources a build writes, in which order, under which names.

Output names: a source's image is `images/<its path relative to the source folder, extension included>.png`
(`img_celeba/face.jpg` -> `images/face.jpg.png`, `face.png` -> `images/face.png.png`), so two sources that differ
only in their extension never share a file. A selection from the official `image_list.txt` names each image by
its CelebA-HQ number instead: `images/imgHQ00000.png` … `imgHQ29999.png`.

A selection is an ordered list of `Pick`s (source, rank = 1-based export position, output name):

- the best N by quality score (`best_picks`; equal scores in source order, as `celebahq rank` orders them);
- a selection file (`read_selection`): the official `image_list.txt` of CelebA-HQ (a header line `idx orig_idx
  orig_file proc_md5 final_md5`, then one line per image; `orig_file` names the CelebA source, `idx` its CelebA-HQ
  number, which gives its rank idx + 1 and its name; read by `parse_image_list`, the one reader of that format,
  which `celebahq official` uses too), or our own list: one source path per line, in export order (blank lines and
  lines starting with `#` ignored).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from gancore.errors import UserError

OFFICIAL_COLUMNS = ("idx", "orig_idx", "orig_file", "proc_md5", "final_md5")


@dataclass(frozen=True)
class Pick:
    """One selected source: its manifest key, its 1-based export position and its output file (relative to OUT)."""

    source: str
    rank: int
    output: str


def hq_name(idx: int) -> str:
    """CelebA-HQ's name for image number `idx` (0-based): imgHQ00000 … imgHQ29999."""
    return f"imgHQ{idx:05d}"


def output_name(source: str) -> str:
    """The output file (relative to OUT) of a source key: `images/<source>.png`, extension kept."""
    return f"images/{source}.png"


def quality_order(records: Iterable[dict]) -> list[dict]:
    """Records that have a quality score, best first; equal scores in source order."""
    return sorted((r for r in records if r.get("quality") is not None), key=lambda r: (-r["quality"], r["source"]))


def best_picks(records: Iterable[dict], keep: int) -> list[Pick]:
    """The `keep` best-scored records as picks, ranks 1 … keep."""
    return [Pick(r["source"], position + 1, output_name(r["source"]))
            for position, r in enumerate(quality_order(records)[:keep])]


def read_selection(path: str | os.PathLike) -> list[Pick]:
    """Read a selection file (the official image_list.txt or one source per line); raises UserError if malformed."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"--select {path}: cannot read ({getattr(error, 'strerror', None) or error})") from None
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    if not lines:
        raise UserError(f"--select {path}: no sources listed")
    if lines[0].split()[:1] == ["idx"]:
        picks = [Pick(row.orig_file, row.idx + 1, row.output) for row in parse_image_list(text, f"--select {path}")]
    else:
        picks = [Pick(source, position + 1, output_name(source)) for position, source in enumerate(lines)]
    duplicates = len(picks) - len({pick.source for pick in picks})
    if duplicates:
        raise UserError(f"--select {path}: {duplicates} sources listed more than once")
    return sorted(picks, key=lambda pick: pick.rank)


# ----------------------------------------------------------------------------------------------------------------
# The official image_list.txt (read by `build --select` and by `celebahq official`)


@dataclass(frozen=True)
class ImageListRow:
    """One row of CelebA-HQ's image_list.txt: image `idx` (0-based) comes from CelebA file `orig_file`, landmark
    row `orig_idx`; md5s (hex) of its pre-delta and final uint8 CHW bytes. Names: its image, its output file and
    where the release keeps its delta."""

    idx: int
    orig_idx: int
    orig_file: str
    proc_md5: str
    final_md5: str

    @property
    def name(self) -> str:
        return hq_name(self.idx)

    @property
    def output(self) -> str:
        return f"images/{self.name}.png"

    @property
    def zip_name(self) -> str:
        return f"deltas{self.idx - self.idx % 1000:05d}.zip"

    @property
    def member(self) -> str:
        return f"delta{self.idx:05d}.dat"


def parse_image_list(text: str, where: str, in_order: bool = False) -> list[ImageListRow]:
    """The rows of an image_list.txt's text: the header `idx orig_idx orig_file proc_md5 final_md5`, then one row
    per line (blank lines and lines starting with `#` skipped), in the file's order; each idx at most once, and
    with `in_order` row i has idx i. Anything else raises UserError '<where>, line N: …'."""
    numbered = [(number, line.split()) for number, line in enumerate(text.splitlines(), start=1)
                if line.strip() and not line.lstrip().startswith("#")]
    if not numbered or tuple(numbered[0][1]) != OFFICIAL_COLUMNS:
        number = numbered[0][0] if numbered else 1
        raise UserError(f"{where}, line {number}: expected the header {' '.join(OFFICIAL_COLUMNS)!r}")
    rows, seen = [], set()
    for number, fields in numbered[1:]:
        row = _image_list_row(fields, f"{where}, line {number}")
        if in_order and row.idx != len(rows):
            raise UserError(f"{where}, line {number}: idx {row.idx}, expected {len(rows)} (rows in idx order)")
        if row.idx in seen:
            raise UserError(f"{where}, line {number}: idx {row.idx} is listed twice")
        seen.add(row.idx)
        rows.append(row)
    return rows


def _image_list_row(fields: list[str], where: str) -> ImageListRow:
    if len(fields) != len(OFFICIAL_COLUMNS):
        raise UserError(f"{where}: expected {len(OFFICIAL_COLUMNS)} fields ({' '.join(OFFICIAL_COLUMNS)}), "
                        f"found {len(fields)}")
    try:
        idx, orig_idx = int(fields[0]), int(fields[1])
    except ValueError:
        raise UserError(f"{where}: idx and orig_idx must be integers, found {fields[0]!r} {fields[1]!r}") from None
    if idx < 0 or orig_idx < 0:
        raise UserError(f"{where}: idx and orig_idx must be ≥ 0, found {idx} {orig_idx}")
    for column, value in zip(OFFICIAL_COLUMNS[3:], fields[3:]):
        if len(value) != 32 or any(c not in "0123456789abcdef" for c in value.lower()):
            raise UserError(f"{where}: {column} {value!r} is not an md5 (32 hex digits)")
    if not fields[2].isascii() or "/" in fields[2] or fields[2].startswith("."):
        raise UserError(f"{where}: orig_file {fields[2]!r} is not a plain CelebA file name")
    return ImageListRow(idx, orig_idx, fields[2], fields[3].lower(), fields[4].lower())
