"""The device shrink (`celebahq.render.resize_pillow_torch`) beside the installed Pillow, on real photographs.

    python benchmarks/pillow_shrink.py [--record]

For the astronaut, Grace Hopper and coffee photographs and tall crops of them (height 2–3× the width), each shrunk
by 2, 3 and 5 as `plan_crop` would (sides rounded): the largest and the mean absolute difference to
`PIL.Image.resize(size, LANCZOS)` in grey levels, and both times. Upstream Pillow runs the horizontal pass first,
as `resize_pillow_torch` does; a Pillow build that runs the vertical pass first for some images shows up here as
non-zero rows (seen with the Pillow 13.0.0 wheel of our CI machine, on the tall crops only).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import matplotlib
import numpy as np
import PIL
import torch
from PIL import Image
from skimage import data

from celebahq.render import resize_pillow_torch


def photographs() -> dict[str, np.ndarray]:
    grace = np.asarray(Image.open(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")
                       .convert("RGB"))
    photos = {"astronaut": data.astronaut(), "grace": grace, "coffee": data.coffee()}
    photos |= {f"{name} tall crop": image[:, image.shape[1] // 3:image.shape[1] // 3 + image.shape[0] // 2 - 40]
               for name, image in list(photos.items())}
    return {name: np.ascontiguousarray(image) for name, image in photos.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", action="store_true",
                        help="also write the printed figures into their section of benchmarks/RESULTS.md")
    parser.parse_args()
    print(f"Pillow {PIL.__version__}, torch {torch.__version__}, CPU")
    print(f"{'photo':<22} {'size':>9} {'shrink':>6} {'max':>4} {'mean':>7} {'PIL ms':>7} {'torch ms':>8}")
    for name, image in photographs().items():
        height, width = image.shape[:2]
        for shrink in (2, 3, 5):
            size = (int(np.rint(width / shrink)), int(np.rint(height / shrink)))
            started = time.perf_counter()
            expected = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS))
            pil_ms = 1e3 * (time.perf_counter() - started)
            x = torch.from_numpy(image.copy()).permute(2, 0, 1).float()
            started = time.perf_counter()
            got = resize_pillow_torch(x, size).permute(1, 2, 0).to(torch.uint8).numpy()
            torch_ms = 1e3 * (time.perf_counter() - started)
            difference = np.abs(got.astype(np.int16) - expected)
            print(f"{name:<22} {width:>4}×{height:<4} {shrink:>6} {difference.max():>4} {difference.mean():>7.4f} "
                  f"{pil_ms:>7.1f} {torch_ms:>8.1f}")


if __name__ == "__main__":
    import results_record

    results_record.run_main("celebahq: torch shrink vs the installed Pillow", main)
