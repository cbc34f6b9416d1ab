"""`celebahq rank`: score a build's images, write the scores into its manifests, keep the best N.

Each finished image (the latest "ok" record of its source) gets `quality` (celebahq/quality.py), `rank`
(1 = best; equal scores in source order) and `selected` (rank ≤ N). `celebahq export` and `--num-images` then
take the selected images in rank order (celebahq/export.py). Scores already in the manifest are reused, so
ranking again after a resumed build only scores the new images (`rescore=True` scores everything again). The
report goes to OUT/ranking.json; ranking again without a `keep` keeps the N recorded there.

The manifests are append-only while a build runs; ranking rewrites each one whole, atomically (temp + rename,
celebahq/manifest.py), keeping every line and only adding fields. Run it once the build has finished: a
manifest that changes while the images are scored is not overwritten (UserError), so a build still
appending is never lost. An image whose file is missing or unreadable is reported, left unranked and not
selected.
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
from gancore.runtime import atomic_output
from gancore.sources import BadImage, FileListSource, decode_image

from .manifest import (
    MANIFEST_NAME,
    latest_records,
    manifest_names,
    read_all_manifests,
    read_manifest,
    write_manifest,
)
from .quality import score_sources

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

    def to_dict(self) -> dict:
        return asdict(self)


def _stamp(path: Path) -> tuple[int, int]:
    status = path.stat()
    return status.st_size, status.st_mtime_ns


def ranked_records(out_dir: str | os.PathLike) -> list[dict]:
    """The latest records of a ranked build that have a rank, best first."""
    latest = latest_records(read_all_manifests(out_dir)).values()
    return sorted((r for r in latest if r.get("rank") is not None), key=lambda r: r["rank"])


def rank_build(out_dir: str | os.PathLike, keep: int | None = None, rescore: bool = False, batch_size: int = 16,
               device=None, num_workers: int | None = None, progress: bool = True) -> RankReport:
    """Score, rank and select the finished images of the build in `out_dir`; rewrite its manifests."""
    started = time.perf_counter()
    out_dir = Path(out_dir)
    names = manifest_names(out_dir)
    if not names:
        raise UserError(f"{out_dir}: no {MANIFEST_NAME} (not a celebahq build, or it has not started)")
    if keep is not None and keep < 1:
        raise UserError(f"--keep {keep}: must be at least 1")
    stamps = {name: _stamp(out_dir / name) for name in names}  # before reading: a later append shows
    files = {name: read_manifest(out_dir, name) for name in names}
    latest = {}  # source -> (manifest name, line)
    for name in names:
        for line, record in enumerate(files[name]):
            latest[record["source"]] = (name, line)
    finished = [files[name][line] for name, line in latest.values() if files[name][line].get("status") == "ok"]
    if not finished:
        raise UserError(f"{out_dir}: no finished images in its manifests")
    if keep is None and (out_dir / RANKING_NAME).is_file():
        keep = json.loads((out_dir / RANKING_NAME).read_text()).get("keep")  # ranking again keeps the last N

    to_score = {str(out_dir / r["output"]): r for r in finished if rescore or r.get("quality") is None}
    report = score_sources([FileListSource(list(to_score), name=str(out_dir / "images"))], batch_size=batch_size,
                           device=device, num_workers=num_workers, progress=progress)
    for path, record in to_score.items():
        record["quality"] = report.scores.get(path)
    skipped = {to_score[path]["source"]: reason for path, reason in report.skipped.items()}

    order = sorted((r for r in finished if r.get("quality") is not None), key=lambda r: (-r["quality"], r["source"]))
    selected = len(order) if keep is None else min(keep, len(order))
    for record in finished:
        record.update(rank=None, selected=False)
    for position, record in enumerate(order):
        record.update(rank=position + 1, selected=position < selected)

    for name in names:
        if _stamp(out_dir / name) != stamps[name]:
            raise UserError(f"{out_dir / name} changed while ranking (is a build still writing to {out_dir}?); "
                               "nothing was rewritten there: rank again once the build has finished")
        write_manifest(out_dir, files[name], name)
    best = [{"source": r["source"], "output": r["output"], "quality": r["quality"]} for r in order[:5]]
    ranking = RankReport(ranked=len(order), selected=selected, scored=len(report.scores), keep=keep,
                         skipped=skipped, best=best, seconds=round(time.perf_counter() - started, 3))
    with atomic_output(out_dir / RANKING_NAME) as temporary:
        temporary.write_text(json.dumps(ranking.to_dict(), indent=1))
    return ranking


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
    out_dir, path = Path(out_dir), Path(path)
    records = ranked_records(out_dir)
    if not records:
        raise UserError(f"{out_dir}: no ranked images; run celebahq rank {out_dir} first")
    count = min(count, (len(records) + 1) // 2)

    def row(title: str, chosen: list[dict]) -> tuple[str, list[tuple[np.ndarray, str]]]:
        return title, [(_thumbnail(out_dir / r["output"], side), f"#{r['rank']}  {r['quality']:.4f}") for r in chosen]

    sheet = contact_sheet([row(f"best {count} of {len(records)} (rank, quality)", records[:count]),
                           row(f"worst {count}", records[-count:])], side)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as temporary:
        Image.fromarray(sheet).save(temporary, "PNG", optimize=True)
    return path
