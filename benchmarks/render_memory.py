"""Peak memory and time of one `render_torch_tensor` call over the bundled example photos.

    python benchmarks/render_memory.py [--batch 8] [--resolution 1024] [--device cpu]

Renders the first `--batch` photos of examples/celeba_wild_mini (CelebA landmarks, Lanczos stand-in for SR) in one
call and prints the wall time, the peak RSS of this process (ru_maxrss; on CUDA also the peak allocated GPU memory)
and the md5 of the output, so two versions of the render can be compared for memory, speed and bytes. Run it in a
fresh process per measurement: ru_maxrss only grows.
"""

from __future__ import annotations

import argparse
import hashlib
import resource
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from celebahq.landmarks import read_celeba_landmarks
from celebahq.render import render_torch_tensor

ROOT = Path(__file__).resolve().parent.parent

MINI = ROOT / "examples" / "celeba_wild_mini"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--resolution", type=int, default=1024)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--record", action="store_true",
                        help="also write the printed figures into their section of benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    table = read_celeba_landmarks(MINI / "Anno" / "list_landmarks_celeba.txt")
    names = sorted(table)[:args.batch]
    images = [np.asarray(Image.open(MINI / "img_celeba" / name).convert("RGB")) for name in names]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    out = render_torch_tensor(images, [table[name] for name in names], args.resolution, device=args.device)
    pixels = out.cpu().numpy()
    wall = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    gpu = (f", peak GPU memory allocated {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB"
           if args.device.startswith("cuda") else "")
    print(f"{len(names)} photos at {args.resolution}² on {args.device}: {wall:.1f} s, peak RSS {peak / 2**20:.2f} GiB "
          f"({before / 2**20:.2f} GiB before the render){gpu}, md5 {hashlib.md5(pixels.tobytes()).hexdigest()}")


if __name__ == "__main__":
    import results_record

    results_record.run_main("celebahq: render time and memory", main)
