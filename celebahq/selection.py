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

Both are UTF-8 text with LF or CRLF line ends (line numbers count either). Refused with `--select FILE, line N: …`:
a byte order mark (BOM) at the start, an image_list.txt header followed by no rows, a misspelt header (two or more
of its five fields close to the column names: `Idx orig_idx orig_file proc_md5 final_md5`), rows of image_list.txt
without the header line, a source listed twice, and listed sources that are not in the source folder
(`missing_sources`, with the line of each).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from gancore.errors import UserError, printable

OFFICIAL_COLUMNS = ("idx", "orig_idx", "orig_file", "proc_md5", "final_md5")


@dataclass(frozen=True)
class Pick:
    """One selected source: its manifest key, its 1-based export position and its output file (relative to OUT)."""

    source: str
    rank: int
    output: str
    line: int = field(default=0, compare=False)  # where a selection file lists it (0: not from a file)


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
    """Read a selection file (the official image_list.txt or one source per line); raises UserError if malformed
    ('--select FILE, line N: …', see the module's docstring)."""
    path = Path(path)
    where = f"--select {path}"
    try:
        text = path.read_text(encoding="utf-8")  # universal newlines: CRLF and CR line ends read as LF
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"{where}: cannot read ({getattr(error, 'strerror', None) or error})") from None
    if text.startswith("\ufeff"):
        raise UserError(f"{where}, line 1: starts with a UTF-8 byte order mark (BOM); save the file without it")
    numbered = [(number, line.strip()) for number, line in enumerate(text.split("\n"), start=1)
                if line.strip() and not line.strip().startswith("#")]
    if not numbered:
        raise UserError(f"{where}: no sources listed")
    first_line, first = numbered[0]
    if _is_image_list_header(first.split()):
        rows = parse_image_list(text, where)
        if not rows:
            raise UserError(f"{where}, line {first_line}: the header of image_list.txt is followed by no rows")
        picks = [Pick(row.orig_file, row.idx + 1, row.output, row.line) for row in rows]
    elif _is_image_list_row(first.split()):
        raise UserError(f"{where}, line {first_line}: a row of image_list.txt, but the header line "
                        f"{' '.join(OFFICIAL_COLUMNS)!r} is missing before it")
    else:
        picks = [Pick(source, position + 1, output_name(source), number)
                 for position, (number, source) in enumerate(numbered)]
    seen: dict[str, int] = {}
    for pick in picks:
        if pick.source in seen:
            raise UserError(f"{where}, line {pick.line}: {printable(pick.source)} is listed again (first on line "
                            f"{seen[pick.source]})")
        seen[pick.source] = pick.line
    return sorted(picks, key=lambda pick: pick.rank)


def missing_sources(picks: list[Pick], known: set[str], where: str) -> None:
    """Raise UserError when picks name sources that are not in `known` (the source folder's), with their lines."""
    missing = [pick for pick in picks if pick.source not in known]
    if missing:
        examples = ", ".join(f"{printable(pick.source)} (line {pick.line})" for pick in missing[:3])
        raise UserError(f"{where}: {len(missing)} listed sources are not in the source folder (e.g. {examples})")


def _is_image_list_header(fields: list[str]) -> bool:
    """Whether a first line is image_list.txt's header, maybe misspelt: it starts with `idx`, or two or more of
    its fields are close to the column names (a source path with spaces hardly is)."""
    close = [name for name in fields if difflib.get_close_matches(name.lower(), OFFICIAL_COLUMNS, n=1, cutoff=0.75)]
    return fields[:1] == ["idx"] or (len(fields) >= 3 and len(close) >= 2)


def _is_image_list_row(fields: list[str]) -> bool:
    """Whether a first line looks like a row of image_list.txt (two integers, a file, two md5s)."""
    return len(fields) == len(OFFICIAL_COLUMNS) and fields[0].isdigit() and fields[1].isdigit()


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
    line: int = field(default=0, compare=False)  # in image_list.txt

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
    numbered = [(number, line.split()) for number, line in enumerate(text.split("\n"), start=1)
                if line.strip() and not line.lstrip().startswith("#")]
    if not numbered or tuple(numbered[0][1]) != OFFICIAL_COLUMNS:
        number, found = numbered[0] if numbered else (1, [])
        raise UserError(f"{where}, line {number}: expected the header {' '.join(OFFICIAL_COLUMNS)!r}, found "
                        f"{printable(' '.join(found))!r}")
    rows, seen = [], set()
    for number, fields in numbered[1:]:
        row = _image_list_row(fields, f"{where}, line {number}", number)
        if in_order and row.idx != len(rows):
            raise UserError(f"{where}, line {number}: idx {row.idx}, expected {len(rows)} (rows in idx order)")
        if row.idx in seen:
            raise UserError(f"{where}, line {number}: idx {row.idx} is listed twice")
        seen.add(row.idx)
        rows.append(row)
    return rows


def _image_list_row(fields: list[str], where: str, line: int) -> ImageListRow:
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
    return ImageListRow(idx, orig_idx, fields[2], fields[3].lower(), fields[4].lower(), line)
