"""The quality score (celebahq/quality.py) vs variance of the Laplacian on real photographs; speed at 1024².

    python benchmarks/quality_benchmark.py            # the cases table, then images/s on the CPU (and the GPU)
    python benchmarks/quality_benchmark.py --json     # the same as one JSON object

Cases (toolkit_testing/quality_cases.py, the same as tests/celebahq/test_quality.py): the nine sample
photographs of scikit-image and matplotlib (≥ 512²) plus scikit-image's brick wall, a periodic texture.
For each measure it checks that the value falls strictly with Gaussian blur σ = 0, 0.5, 1, 2, 4; that a
halftone dot screen, stripes and JPEG quality 5 lower it; that rotation, mirroring and brightness changes move
it by less than 2%; and lists every image where it does not.

Variance of the Laplacian (cv2.Laplacian of the 8-bit grey image, ksize 1, then its variance) is the usual
blur detector, and the speed baseline with the slow, obvious NumPy version of our score
(toolkit_testing/quality_reference.py). Speed: 8 different 1024² photographs (the retina crop and 2×2 mosaics of
the 512² ones), one batch, best of `--repeat` runs, all in the same run so the ratios hold on a busy machine.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time

import cv2
import numpy as np
import torch

from celebahq.quality import quality_score
from toolkit_testing.quality_cases import (
    BLUR_SIGMAS,
    DEFECTS,
    NEUTRAL,
    PERIODIC_TEXTURES,
    gaussian_blur,
    sample_photographs,
)
from toolkit_testing.quality_reference import reference_quality


def variance_of_laplacian(image: np.ndarray) -> float:
    """uint8 HW3 RGB -> variance of the 3×3 Laplacian of its 8-bit grey version (the common blur detector)."""
    return float(cv2.Laplacian(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var())


def our_score(image: np.ndarray) -> float:
    return float(quality_score(torch.from_numpy(image).permute(2, 0, 1)[None])[0])


MEASURES = {"ours": our_score, "variance of Laplacian": variance_of_laplacian}


def run_cases(photos: dict[str, np.ndarray]) -> dict:
    """{"failures": {measure: {check: [images where it fails]}}, "changes": {measure: {check: {image: %}}},
    "values": {measure: {image: {case: value}}}}; a blur check's change is its smallest step (σ to the next σ)."""
    results = {key: {measure: {} for measure in MEASURES} for key in ("failures", "changes", "values")}
    for name, image in photos.items():
        variants = {f"blur σ={sigma}": gaussian_blur(image, sigma) for sigma in BLUR_SIGMAS}
        variants.update({case: apply(image) for case, apply in {**DEFECTS, **NEUTRAL}.items()})
        for measure, function in MEASURES.items():
            value = {case: function(variant) for case, variant in variants.items()}
            results["values"][measure][name] = value
            clean = value["blur σ=0"]
            blur = [value[f"blur σ={sigma}"] for sigma in BLUR_SIGMAS]
            steps = [100 * (after / before - 1) for before, after in itertools.pairwise(blur)]
            checks = [("falls strictly with blur", max(steps), max(steps) < 0)]
            for case in DEFECTS:
                change = 100 * (value[case] / clean - 1)
                checks.append((f"{case} lowers it", change, change < 0))
            for case in NEUTRAL:
                change = 100 * (value[case] / clean - 1)
                checks.append((f"{case} moves it < 2%", change, abs(change) < 2))
            for check, change, passed in checks:
                results["changes"][measure].setdefault(check, {})[name] = round(change, 2)
                failed = results["failures"][measure].setdefault(check, [])
                if not passed:
                    failed.append(f"{name} ({change:+.1f}%)")
    return results


def speed_images(photos: dict[str, np.ndarray]) -> np.ndarray:
    """uint8 [8, 1024, 1024, 3]: the retina crop and 2×2 mosaics of the 512² photographs."""
    small = [image for image in photos.values() if image.shape[0] == 512]

    def mosaic(first: int) -> np.ndarray:
        tiles = [small[(first + k) % len(small)] for k in range(4)]
        return np.concatenate([np.concatenate(tiles[:2], 1), np.concatenate(tiles[2:], 1)], 0)

    return np.stack([photos["retina"], *(mosaic(first) for first in range(7))])


def best_time(function, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return min(times)


def run_speed(images: np.ndarray, repeat: int) -> dict:
    batch = torch.from_numpy(images).permute(0, 3, 1, 2)
    quality_score(batch[:1])  # warm-up: the annulus tables
    seconds = {
        "ours (torch, CPU, one batch of 8)": best_time(lambda: quality_score(batch), repeat),
        "variance of Laplacian (OpenCV)": best_time(lambda: [variance_of_laplacian(i) for i in images], repeat),
        "ours, NumPy reference": best_time(lambda: [reference_quality(i) for i in images], max(1, repeat // 2)),
    }
    if torch.cuda.is_available():
        on_gpu = batch.cuda()
        quality_score(on_gpu)

        def gpu():
            quality_score(on_gpu)
            torch.cuda.synchronize()

        seconds["ours (torch, GPU, one batch of 8)"] = best_time(gpu, repeat)
    return {name: {"seconds": round(value, 4), "images_per_second": round(len(images) / value, 2)}
            for name, value in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--record", action="store_true",
                        help="also write the printed figures into their section of benchmarks/RESULTS.md")
    args = parser.parse_args()

    photos = {**sample_photographs(), **sample_photographs(PERIODIC_TEXTURES)}
    cases = run_cases(photos)
    speed = run_speed(speed_images(photos), args.repeat)
    if args.json:
        print(json.dumps({"cases": cases, "speed": speed, "threads": torch.get_num_threads()}))
        return
    print(f"{len(photos)} images: {', '.join(photos)}\n")
    print("| check | ours: change, photographs | ours: fails on | variance of Laplacian: change, photographs "
          "| variance of Laplacian: fails on |\n|---|---|---|---|---|")
    for check in cases["failures"]["ours"]:
        cells = []
        for measure in MEASURES:
            changes = [v for image, v in cases["changes"][measure][check].items() if image not in PERIODIC_TEXTURES]
            cells += [f"{min(changes):+.1f} … {max(changes):+.1f}%", ", ".join(cases["failures"][measure][check]) or "—"]
        print(f"| {check} | " + " | ".join(cells) + " |")
    baseline = speed["variance of Laplacian (OpenCV)"]["images_per_second"]
    print(f"\n1024² images, {torch.get_num_threads()} torch threads:\n\n| measure | images/s | vs variance of "
          "Laplacian |\n|---|---|---|")
    for name, figures in speed.items():
        print(f"| {name} | {figures['images_per_second']:.1f} | {figures['images_per_second'] / baseline:.2f}× |")


if __name__ == "__main__":
    import results_record

    results_record.run_main("celebahq: quality score vs variance of the Laplacian", main)
