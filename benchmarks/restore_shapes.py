"""How many distinct input shapes the restoration networks see in a build (cuDNN plans each new one).

    python benchmarks/restore_shapes.py [--sources 400] [--resolution 1024] [--batch 8]

Over a synthetic CelebA (benchmarks/celebahq_scale.py's generator), for every usable source: the cleanup net's
windows on the whole photo and, where the plan needs super-resolution, the SR net's windows on the face crop.
Counts distinct (windows per call, height, width) for the tiling in celebahq/restore/infer.py with its CPU and its
CUDA defaults (`Tiling`: near-equal tiles, bucketed windows; on CUDA bigger tiles, coarser padded sides,
power-of-two calls) and, as the baseline, for the tiling before bucketed windows (tiles clipped at the image edges, the
cleanup net's sides padded to 8, calls of as many same-shape tiles as there were, up to the batch). Prints the
counts after every quarter of the sources: a bounded count stops growing; then the pixels each tiling runs
through the network per image pixel. No network runs; seconds.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from celebahq_scale import make_synthetic_celeba
from PIL import Image

from celebahq.build_stages import discover_sources
from celebahq.geometry import plan_crop
from celebahq.restore.infer import DEFAULT_MARGIN, DEFAULT_TILE, Tiling, _round_up
from celebahq.restore.models import KINDS

ALIGN = {kind: model.ALIGN for kind, model in KINDS.items()}  # the networks' own side alignment


def calls(groups: dict[tuple[int, int], int], batch: int, power_of_two: bool) -> set[tuple[int, int, int]]:
    """(windows per call, height, width) of the calls that run `groups` {shape: window count} (the old tiling)."""
    shapes = set()
    for (height, width), count in groups.items():
        for start in range(0, count, batch):
            size = min(batch, count - start)
            shapes.add((min(1 << (size - 1).bit_length(), batch) if power_of_two else size, height, width))
    return shapes


def current(height: int, width: int, tiling: Tiling) -> set[tuple[int, int, int]]:
    """(network batch, height, width) of the calls infer.Restorer makes for an H×W image with `tiling`."""
    return {(count, *shape) for shape, windows in tiling.windows_by_shape(height, width).items()
            for count in tiling.call_sizes(len(windows))}


def network_pixels(height: int, width: int, tiling: Tiling) -> int:
    """Pixels the network processes for an H×W image with `tiling` (windows with margins and padding)."""
    return sum(len(windows) * shape[0] * shape[1] for shape, windows in tiling.windows_by_shape(height, width).items())


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
    parser.add_argument("--record", action="store_true",
                        help="also write the printed figures into their section of benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    schemes = ("previous", "cpu", "cuda")
    tilings = {(device, kind): Tiling.for_network(kind, ALIGN[kind], device == "cuda", batch=args.batch)
               for device in ("cpu", "cuda") for kind in ("cleanup", "sr")}
    seen = {(scheme, kind): set() for scheme in schemes for kind in ("cleanup", "sr")}
    work_done = dict.fromkeys(tilings, 0)
    image_pixels = {"cleanup": 0, "sr": 0}
    with tempfile.TemporaryDirectory(prefix="restore_shapes_") as work:
        items, table = discover_sources(make_synthetic_celeba(Path(work) / "celeba", args.sources))
        print(f"{'sources':>8} " + " ".join(f"{kind + ' ' + scheme:>15}" for kind in ("cleanup", "sr")
                                             for scheme in schemes))
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
                    image_pixels[kind] += rows * cols
                    for device in ("cpu", "cuda"):
                        seen[device, kind] |= current(rows, cols, tilings[device, kind])
                        work_done[device, kind] += network_pixels(rows, cols, tilings[device, kind])
            if number % max(len(items) // 4, 1) == 0 or number == len(items):
                print(f"{number:>8} " + " ".join(f"{len(seen[scheme, kind]):>15}" for kind in ("cleanup", "sr")
                                                 for scheme in schemes))
    print("network pixels per image pixel (margins, padding): " + ", ".join(
        f"{kind} {device} {work_done[device, kind] / max(image_pixels[kind], 1):.2f}" for device, kind in work_done))


if __name__ == "__main__":
    import results_record

    results_record.run_main("celebahq: restoration networks' call shapes", main)
