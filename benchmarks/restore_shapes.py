"""How many distinct input shapes the restoration networks see in a build (cuDNN plans each new one).

    python benchmarks/restore_shapes.py [--sources 400] [--resolution 1024] [--batch 8]

Over a synthetic CelebA (benchmarks/celebahq_scale.py's generator), for every usable source: the cleanup net's
windows on the whole photo and, where the plan needs super-resolution, the SR net's windows on the face crop.
Counts distinct (windows per call, height, width) for the tiling in celebahq/restore/infer.py (bucketed windows,
power-of-two calls on CUDA) and, as the baseline, for the tiling it replaced (tiles clipped at the image edges,
the cleanup net's sides padded to 8, calls of as many same-shape tiles as there were, up to the batch). Prints the
counts after every quarter of the sources: a bounded count stops growing. No network runs; seconds.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from celebahq_scale import make_synthetic_celeba

from celebahq.geometry import plan_crop
from celebahq.pipeline import discover_sources
from celebahq.restore.infer import BUCKET, DEFAULT_MARGIN, DEFAULT_TILE, _round_up, _windows

ALIGN = {"cleanup": 8, "sr": 1}  # the networks' own side alignment (models.ALIGN)


def calls(groups: dict[tuple[int, int], int], batch: int, power_of_two: bool) -> set[tuple[int, int, int]]:
    """(windows per call, height, width) of the calls that run `groups` {shape: window count}."""
    shapes = set()
    for (height, width), count in groups.items():
        for start in range(0, count, batch):
            size = min(batch, count - start)
            shapes.add((min(1 << (size - 1).bit_length(), batch) if power_of_two else size, height, width))
    return shapes


def current(height: int, width: int, kind: str, batch: int) -> set[tuple[int, int, int]]:
    tile, margin = DEFAULT_TILE[kind], DEFAULT_MARGIN[kind]
    groups: dict[tuple[int, int], int] = {}
    for rows in _windows(height, tile, margin, BUCKET):
        for cols in _windows(width, tile, margin, BUCKET):
            shape = (_round_up(rows[3] - rows[2], BUCKET), _round_up(cols[3] - cols[2], BUCKET))
            groups[shape] = groups.get(shape, 0) + 1
    return calls(groups, batch, power_of_two=True)


def previous(height: int, width: int, kind: str, batch: int) -> set[tuple[int, int, int]]:
    tile, margin, align = DEFAULT_TILE[kind], DEFAULT_MARGIN[kind], ALIGN[kind]
    groups: dict[tuple[int, int], int] = {}
    for top in range(0, height, tile):
        for left in range(0, width, tile):
            rows = min(top + tile + margin, height) - max(top - margin, 0)
            cols = min(left + tile + margin, width) - max(left - margin, 0)
            shape = (_round_up(rows, align), _round_up(cols, align))
            groups[shape] = groups.get(shape, 0) + 1
    return calls(groups, batch, power_of_two=False)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=int, default=400)
    parser.add_argument("--resolution", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args(argv)
    seen = {(scheme, kind): set() for scheme in ("previous", "current") for kind in ("cleanup", "sr")}
    with tempfile.TemporaryDirectory(prefix="restore_shapes_") as work:
        items, table = discover_sources(make_synthetic_celeba(Path(work) / "celeba", args.sources))
        print(f"{'sources':>8} {'cleanup before':>15} {'cleanup now':>12} {'sr before':>10} {'sr now':>7}")
        for number, item in enumerate(items, start=1):
            points = table.get(Path(item.name).name)
            width, height = Image.open(item.path).size
            try:
                plan = None if points is None else plan_crop(points, (width, height), args.resolution)
            except ValueError:
                plan = None
            if plan is not None:
                regions = [("cleanup", height, width)]
                left, top, right, bottom = plan.crop
                regions += [("sr", bottom - top, right - left)] if plan.superres > 1 else []
                for kind, rows, cols in regions:
                    seen["previous", kind] |= previous(rows, cols, kind, args.batch)
                    seen["current", kind] |= current(rows, cols, kind, args.batch)
            if number % max(len(items) // 4, 1) == 0 or number == len(items):
                counts = [len(seen[scheme, kind]) for kind in ("cleanup", "sr") for scheme in ("previous", "current")]
                print(f"{number:>8} {counts[0]:>15} {counts[1]:>12} {counts[2]:>10} {counts[3]:>7}")


if __name__ == "__main__":
    main()
