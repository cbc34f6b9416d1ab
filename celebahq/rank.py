"""`celebahq rank`: score a build's images, write the scores into its manifests, keep the best N.

Each finished image (the latest "ok" record of its source) gets `quality` (celebahq/quality.py), `rank`
(1 = best; equal scores in source order) and `selected` (rank ≤ N). `celebahq export` and `--num-images` then
take the selected images in rank order (celebahq/export.py). Scores already in the manifest are reused, so
ranking again after a resumed build only scores the new images (`rescore=True` scores everything again). The
report goes to OUT/ranking.json; ranking again without a `keep` keeps the N recorded there.

The manifests are append-only while a build runs; ranking rewrites each one whole, atomically (temp + rename,
celebahq/manifest.py), keeping every line (damaged ones verbatim) and only adding fields. It holds the build
folder's writer lock (gancore.locking): while a build writes there, `rank` is refused with one line naming it,
and no build starts while `rank` rewrites; as a second guard a manifest that changes while the images are
scored is not overwritten (UserError). An image whose file is missing or unreadable is reported, left unranked
and not selected. The report says how many manifest records were read and how many damaged lines skipped.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from gancore.errors import UserError
from gancore.locking import FolderLock
from gancore.outputs import atomic_output, check_output_path
from gancore.sources import BadImage, FileListSource, decode_image

from .manifest import MANIFEST_NAME, ManifestSummary, latest_records, load_all_manifests, write_manifest
from .quality import score_sources
from .selection import quality_order

RANKING_NAME = "ranking.json"


@dataclass
class RankReport:
    ranked: int  # finished images with a score
    selected: int
    scored: int  # scored in this run (the others' scores came from the manifest)
    keep: int | None  # the N asked for (None: everything)
    skipped: dict[str, str] = field(default_factory=dict)  # source -> why its image could not be scored
    best: list[dict] = field(default_factory=list)  # the first few: {"source", "output", "quality"}
    seconds: float = 0.0
    manifest: str = ""  # "read N manifest records, skipped K damaged lines (…)"

    def to_dict(self) -> dict:
        return asdict(self)


def _stamp(path: Path) -> tuple[int, int]:
    status = path.stat()
    return status.st_size, status.st_mtime_ns


def ranked_records(out_dir: str | os.PathLike) -> list[dict]:
    """The latest records of a ranked build that have a rank, best first."""
    latest = latest_records(load_all_manifests(out_dir).records).values()
    return sorted((r for r in latest if r.get("rank") is not None), key=lambda r: r["rank"])


def rank_build(out_dir: str | os.PathLike, keep: int | None = None, rescore: bool = False, batch_size: int = 16,
               device=None, num_workers: int | None = None, progress: bool = True) -> RankReport:
    """Score, rank and select the finished images of the build in `out_dir`; rewrite its manifests (holding the
    folder's writer lock: UserError while a build writes there)."""
    out_dir = Path(out_dir)
    if not (out_dir / MANIFEST_NAME).is_file() and not list(out_dir.glob("manifest-*-of-*.jsonl")):
        raise UserError(f"{out_dir}: no {MANIFEST_NAME} (not a celebahq build, or it has not started)")
    if keep is not None and keep < 1:
        raise UserError(f"--keep {keep}: must be at least 1")
    with FolderLock(out_dir, "celebahq rank"):
        return _rank_locked(out_dir, keep, rescore, batch_size, device, num_workers, progress)


def _rank_locked(out_dir: Path, keep, rescore, batch_size, device, num_workers, progress) -> RankReport:
    started = time.perf_counter()
    stamps = {path.name: _stamp(path) for path in _manifest_paths(out_dir)}  # before reading: a later append shows
    summary = load_all_manifests(out_dir)
    latest = latest_records(summary.records)  # the record objects themselves: updating one updates its file
    finished = [record for record in latest.values() if record.get("status") == "ok"]
    if not finished:
        raise UserError(f"{out_dir}: no finished images in its manifests ({summary.describe()})")
    if keep is None and (out_dir / RANKING_NAME).is_file():
        keep = json.loads((out_dir / RANKING_NAME).read_text()).get("keep")  # ranking again keeps the last N

    to_score = {str(out_dir / r["output"]): r for r in finished if rescore or r.get("quality") is None}
    report = score_sources([FileListSource(list(to_score), name=str(out_dir / "images"))], batch_size=batch_size,
                           device=device, num_workers=num_workers, progress=progress)
    for path, record in to_score.items():
        record["quality"] = report.scores.get(path)
    skipped = {to_score[path]["source"]: reason for path, reason in report.skipped.items()}

    order = quality_order(finished)
    selected = len(order) if keep is None else min(keep, len(order))
    for record in finished:
        record.update(rank=None, selected=False)
    for position, record in enumerate(order):
        record.update(rank=position + 1, selected=position < selected)

    _rewrite(out_dir, summary, stamps)
    best = [{"source": r["source"], "output": r["output"], "quality": r["quality"]} for r in order[:5]]
    ranking = RankReport(ranked=len(order), selected=selected, scored=len(report.scores), keep=keep,
                         skipped=skipped, best=best, seconds=round(time.perf_counter() - started, 3),
                         manifest=summary.describe())
    with atomic_output(out_dir / RANKING_NAME) as temporary:
        temporary.write_text(json.dumps(ranking.to_dict(), indent=1))
    return ranking


def _manifest_paths(out_dir: Path) -> list[Path]:
    return [path for path in [out_dir / MANIFEST_NAME, *sorted(out_dir.glob("manifest-*-of-*.jsonl"))]
            if path.is_file()]


def _rewrite(out_dir: Path, summary: ManifestSummary, stamps: dict[str, tuple[int, int]]) -> None:
    """Rewrite every manifest with the updated records, unless one changed since `stamps` were taken."""
    for file in summary.files:
        if _stamp(out_dir / file.name) != stamps.get(file.name):
            raise UserError(f"{out_dir / file.name} changed while ranking (is a build still writing to {out_dir}?); "
                            "nothing was rewritten there: rank again once the build has finished")
    for file in summary.files:
        write_manifest(out_dir, file.records, file.name, damaged=[line for _, line in file.damaged])


# --------------------------------------------------------------------------------------------------------------
# Contact sheet


def _thumbnail(path: Path, side: int) -> np.ndarray:
    """uint8 side×side×3 thumbnail of an image file (grey when it cannot be read)."""
    try:
        image = Image.fromarray(decode_image(path))
    except BadImage:
        return np.full((side, side, 3), 128, np.uint8)
    return np.asarray(image.resize((side, side), Image.LANCZOS))


def contact_sheet(rows: list[tuple[str, list[tuple[np.ndarray, str]]]], side: int) -> np.ndarray:
    """[(row title, [(uint8 side×side×3 thumbnail, caption), …]), …] -> uint8 HW3 sheet on white: each row a
    title line, then its thumbnails left to right with their captions under them."""
    line = 14  # PIL's default bitmap font is 11 px high
    columns = max(len(items) for _, items in rows)
    gap = 6
    width = gap + columns * (side + gap)
    height = len(rows) * (line + side + line + gap) + gap
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    top = gap
    for title, items in rows:
        draw.text((gap, top), title, fill="black")
        for column, (thumbnail, caption) in enumerate(items):
            left = gap + column * (side + gap)
            sheet.paste(Image.fromarray(thumbnail), (left, top + line))
            draw.text((left, top + line + side + 1), caption, fill="black")
        top += line + side + line + gap
    return np.asarray(sheet)


def write_preview(out_dir: str | os.PathLike, path: str | os.PathLike, count: int = 6, side: int = 112) -> Path:
    """Write a contact sheet of the `count` best and `count` worst ranked images of a build (PNG, atomic)."""
    out_dir, path = Path(out_dir), check_output_path(path)
    records = ranked_records(out_dir)
    if not records:
        raise UserError(f"{out_dir}: no ranked images; run celebahq rank {out_dir} first")
    count = min(count, (len(records) + 1) // 2)

    def row(title: str, chosen: list[dict]) -> tuple[str, list[tuple[np.ndarray, str]]]:
        return title, [(_thumbnail(out_dir / r["output"], side), f"#{r['rank']}  {r['quality']:.4f}") for r in chosen]

    sheet = contact_sheet([row(f"best {count} of {len(records)} (rank, quality)", records[:count]),
                           row(f"worst {count}", records[-count:])], side)
    with atomic_output(path) as temporary:
        Image.fromarray(sheet).save(temporary, "PNG", optimize=True)
    return path
