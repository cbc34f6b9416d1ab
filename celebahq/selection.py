"""Which sources a build writes, in which order, under which names.

Output names: a source's image is `images/<its path relative to the source folder, extension included>.png`
(`img_celeba/face.jpg` -> `images/face.jpg.png`, `face.png` -> `images/face.png.png`), so two sources that differ
only in their extension never share a file. A selection from the official `image_list.txt` names each image by
its CelebA-HQ number instead: `images/imgHQ00000.png` … `imgHQ29999.png`.

A selection is an ordered list of `Pick`s (source, rank = 1-based export position, output name):

- the best N by quality score (`best_picks`; equal scores in source order, as `celebahq rank` orders them);
- a selection file (`read_selection`): the official `image_list.txt` of CelebA-HQ (a header line `idx orig_idx
  orig_file proc_md5 final_md5`, then one line per image; `orig_file` names the CelebA source, `idx` its CelebA-HQ
  number, which gives its rank idx + 1 and its name), or our own list: one source path per line, in export order
  (blank lines and lines starting with `#` ignored).
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
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"--select {path}: cannot read ({getattr(error, 'strerror', None) or error})") from None
    lines = [line for line in lines if line and not line.startswith("#")]
    if not lines:
        raise UserError(f"--select {path}: no sources listed")
    picks = _official(path, lines) if lines[0].split()[:1] == ["idx"] else _plain(lines)
    duplicates = len(picks) - len({pick.source for pick in picks})
    if duplicates:
        raise UserError(f"--select {path}: {duplicates} sources listed more than once")
    return picks


def _plain(lines: list[str]) -> list[Pick]:
    return [Pick(source, position + 1, output_name(source)) for position, source in enumerate(lines)]


def _official(path: Path, lines: list[str]) -> list[Pick]:
    header = lines[0].split()
    missing = [column for column in ("idx", "orig_file") if column not in header]
    if missing:
        raise UserError(f"--select {path}: header {' '.join(header)!r} lacks {', '.join(missing)} "
                        f"(expected {' '.join(OFFICIAL_COLUMNS)})")
    idx_column, file_column = header.index("idx"), header.index("orig_file")
    picks = []
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split()
        try:
            idx, source = int(fields[idx_column]), fields[file_column]
        except (IndexError, ValueError):
            raise UserError(f"--select {path}: line {number} is not '{' '.join(header)}': {line[:80]!r}") from None
        if idx < 0:
            raise UserError(f"--select {path}: line {number}: negative idx {idx}")
        picks.append(Pick(source, idx + 1, f"images/{hq_name(idx)}.png"))
    if len({pick.rank for pick in picks}) != len(picks):
        raise UserError(f"--select {path}: an idx is listed more than once")
    return sorted(picks, key=lambda pick: pick.rank)
