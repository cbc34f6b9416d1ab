"""SWD speed: ganeval (torch) vs a vectorised NumPy/SciPy version of the original algorithm, same images.

    python benchmarks/swd_speed.py                       # CPU: ours vs NumPy, 1024 images at 128²
    python benchmarks/swd_speed.py --num-images 16384 --gpu-only --resolution 128   # GPU figures only

The NumPy baseline follows tkarras/progressive_growing_of_gans metrics/sliced_wasserstein.py step by step:
scipy.ndimage.convolve pyramid per minibatch, fancy-index patch extraction, per-channel normalisation, float32
projections sorted with np.sort(axis=0). It reuses the test suite's reference pyramid/normalisation/sliced-W
functions (toolkit_testing/swd_reference.py) and only vectorises the patch extraction. Both implementations get
the same uint8 images; the printed SWD values should agree to sampling noise (different random patches).
Prints wall-clock seconds, images/s, the ratio, and on CUDA the peak GPU memory.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ganeval.swd import compute_swd, pyramid_resolutions
from toolkit_testing import swd_reference as ref

ROOT = Path(__file__).resolve().parent.parent


def make_images(num_images: int, resolution: int, seed: int) -> np.ndarray:
    """uint8 NCHW: random crops/flips of the bundled example photographs, resized to `resolution`."""
    rng = np.random.default_rng(seed)
    photos = [np.asarray(Image.open(p).convert("RGB")) for p in sorted((ROOT / "examples" / "real").glob("*.png"))]
    out = np.empty((num_images, 3, resolution, resolution), np.uint8)
    for index in range(num_images):
        photo = photos[rng.integers(len(photos))]
        side = int(rng.integers(64, 129))
        top, left = rng.integers(0, 129 - side, size=2)
        crop = Image.fromarray(photo[top:top + side, left:left + side]).resize((resolution, resolution),
                                                                                Image.BILINEAR)
        array = np.asarray(crop)
        out[index] = (array[:, ::-1] if rng.random() < 0.5 else array).transpose(2, 0, 1)
    return out


def numpy_swd(images_a: np.ndarray, images_b: np.ndarray, seed: int, minibatch: int = 64) -> list[float]:
    """The original algorithm, vectorised NumPy/SciPy, CPU. Returns SWD ×1e3 per level."""
    rng = np.random.RandomState(seed)
    sizes = pyramid_resolutions(*images_a.shape[2:])
    all_descriptors = []
    for images in (images_a, images_b):
        per_level = [[] for _ in sizes]
        for start in range(0, len(images), minibatch):
            pyramid = ref.laplacian_pyramid(images[start:start + minibatch].astype(np.float32), len(sizes))
            for level, band in enumerate(pyramid):
                n, c, h, w = band.shape
                rows = rng.randint(3, h - 3, size=(n, 128, 1, 1)) - 3 + np.arange(7)[:, None]
                cols = rng.randint(3, w - 3, size=(n, 128, 1, 1)) - 3 + np.arange(7)[None, :]
                patches = band.transpose(0, 2, 3, 1)[np.arange(n)[:, None, None, None], rows, cols]
                per_level[level].append(patches.transpose(0, 1, 4, 2, 3).reshape(-1, c * 49))
        all_descriptors.append([ref.normalize(np.concatenate(d)) for d in per_level])
    values = []
    for level in range(len(sizes)):
        distances = []
        for _ in range(4):
            directions = rng.randn(147, 128)
            directions = (directions / np.sqrt(np.sum(directions ** 2, axis=0, keepdims=True))).astype(np.float32)
            distances.append(ref.sliced_wasserstein(all_descriptors[0][level], all_descriptors[1][level],
                                                    directions))
        values.append(1e3 * float(np.mean(distances)))
    return values


def timed(function):
    start = time.perf_counter()
    value = function()
    return value, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-images", type=int, default=1024)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--gpu-only", action="store_true", help="skip the CPU runs (for large GPU sizes)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--record", action="store_true",
                        help="also write the printed figures into their section of benchmarks/RESULTS.md")
    args = parser.parse_args()

    images_a = make_images(args.num_images, args.resolution, 1)
    images_b = make_images(args.num_images, args.resolution, 2)
    report = {"num_images": args.num_images, "resolution": args.resolution,
              "torch": torch.__version__, "threads": torch.get_num_threads()}
    common = {"num_images": args.num_images, "seed": 1000, "progress": False, "num_workers": 0}
    if not args.gpu_only:
        baseline, baseline_s = timed(lambda: numpy_swd(images_a, images_b, 1000))
        ours, ours_s = timed(lambda: compute_swd(images_a, images_b, device="cpu", **common))
        report["numpy_original"] = {"seconds": baseline_s, "avg": float(np.mean(baseline)), "levels": baseline}
        report["ganeval_cpu"] = {"seconds": ours_s, "avg": ours.avg, "levels": list(ours.levels.values())}
        report["cpu_speedup"] = baseline_s / ours_s
    if torch.cuda.is_available():
        compute_swd(images_a[:64], images_b[:64], device="cuda", **dict(common, num_images=64))  # warm-up
        torch.cuda.reset_peak_memory_stats()
        gpu, gpu_s = timed(lambda: compute_swd(images_a, images_b, device="cuda", **common))
        report["ganeval_cuda"] = {"seconds": gpu_s, "avg": gpu.avg, "images_per_s": 2 * args.num_images / gpu_s,
                                  "peak_gpu_memory_gb": torch.cuda.max_memory_allocated() / 2**30,
                                  "device": torch.cuda.get_device_name()}
        if "numpy_original" in report:
            report["cuda_speedup_vs_numpy"] = report["numpy_original"]["seconds"] / gpu_s
    if args.json:
        print(json.dumps(report, indent=1))
        return
    print(f"SWD speed, {args.num_images} + {args.num_images} images at {args.resolution}², "
          f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    for key in ("numpy_original", "ganeval_cpu", "ganeval_cuda"):
        if key in report:
            entry = report[key]
            extra = (f", peak GPU {entry['peak_gpu_memory_gb']:.2f} GiB on {entry['device']}"
                     if key == "ganeval_cuda" else "")
            print(f"  {key:<15} {entry['seconds']:8.2f} s   {2 * args.num_images / entry['seconds']:8.1f} img/s"
                  f"   SWD avg {entry['avg']:.3f}{extra}")
    for key in ("cpu_speedup", "cuda_speedup_vs_numpy"):
        if key in report:
            print(f"  {key}: {report[key]:.1f}x")


if __name__ == "__main__":
    import results_record

    title = "ganeval: SWD speed, GPU only" if "--gpu-only" in sys.argv else "ganeval: SWD speed"
    results_record.run_main(title, main)
