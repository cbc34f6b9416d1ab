"""Arithmetic per source of a build's device stages, and what the banded products save (no GPU needed).

    python benchmarks/render_flops.py [--sources 500] [--resolution 1024] [--time-side SIDE]

Over a synthetic CelebA (benchmarks/celebahq_scale.py's generator), from each usable source's crop plan: GFLOP of
the cleanup and SR networks on CUDA's tiling (network pixels × the networks' cost per megapixel), of the padding
blur (two 1-D passes over the padded face) and of the per-photo Lanczos resizes after the SR net (factors 2, 8, 16),
each both as the [n, n_out] matrix product the GPU path used until 2026-11-26 and as `render._banded_rows`' blocks.
Means per source. Then, measured on this machine: one blur pass (3 channels, float32) over a face of the median
padded side (or `--time-side`) with the median σ, both ways, and the largest difference of their results.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from celebahq_scale import make_synthetic_celeba
from PIL import Image
from restore_shapes import ALIGN, network_pixels

from celebahq.build_stages import discover_sources
from celebahq.geometry import CropPlan, plan_crop
from celebahq.render.torch_backend import _BAND_BLOCK, _band_matrix, _banded_rows
from celebahq.restore.infer import Tiling, shipped_weights
from celebahq.restore.models import load_restorer
from toolkit_testing.flops import gflops_per_megapixel

LANCZOS_TAPS = 7  # per phase, upsampling (support 3)


def band_gflop(rows: int, n: int, n_out: int, taps: int, phases: int, step: int, banded: bool) -> float:
    """Multiply-adds × 2 of a pass over `rows` rows of n inputs -> n_out outputs: the dense [n, n_out] product,
    or `_banded_rows`' blocks (span × P·block per block)."""
    if not banded:
        return 2 * rows * n * n_out / 1e9
    positions = -(-n_out // phases)
    block = min(_BAND_BLOCK, positions)
    span = step * (block - 1) + taps
    return 2 * rows * -(-positions // block) * span * phases * block / 1e9


def plan_gflop(plan: CropPlan, tilings: dict[str, Tiling], cost: dict[str, float]) -> dict[str, float]:
    """GFLOP of one source's device stages (see the module docstring)."""
    width, height = plan.image_size
    out = {"cleanup": network_pixels(height, width, tilings["cleanup"]) / 1e6 * cost["cleanup"]}
    left, top, right, bottom = plan.crop
    crop_h, crop_w = bottom - top, right - left
    factor = plan.superres
    for banded in (False, True):
        key = "banded" if banded else "dense"
        out[f"lanczos {key}"] = out[f"blur {key}"] = 0.0
        if factor > 1 and factor != 4:  # 4× by the net, then Lanczos by factor / 4 (up) or 2 (down)
            h4, w4, ratio = 4 * crop_h, 4 * crop_w, factor / 4
            up, f = (ratio > 1), int(max(ratio, 1 / ratio))
            phases, taps, step = (f, LANCZOS_TAPS, 1) if up else (1, 6 * f, f)
            h_out, w_out = factor * crop_h, factor * crop_w
            out[f"lanczos {key}"] = (band_gflop(3 * h4, w4, w_out, taps, phases, step, banded)
                                     + band_gflop(3 * w_out, h4, h_out, taps, phases, step, banded))
        if plan.padded:
            padded_w, padded_h = plan.padded_size
            taps = 2 * int(4.0 * plan.blur_sigma + 0.5) + 1
            out[f"blur {key}"] = (band_gflop(3 * padded_w, padded_h + taps - 1, padded_h, taps, 1, 1, banded)
                                  + band_gflop(3 * padded_h, padded_w + taps - 1, padded_w, taps, 1, 1, banded))
    if factor > 1:
        out["sr"] = network_pixels(crop_h, crop_w, tilings["sr"]) / 1e6 * cost["sr"] * 16
    return out


def time_blur_pass(side: int, sigma: float) -> tuple[float, float, float]:
    """Seconds of one 'valid' correlation pass over 3·side rows of side + taps − 1 inputs as the dense product and
    as banded blocks, and the largest difference between the two results."""
    radius = int(4.0 * sigma + 0.5)
    kernel = np.exp(-0.5 / sigma**2 * np.arange(-radius, radius + 1, dtype=np.float64) ** 2)
    kernel = torch.from_numpy(kernel / kernel.sum()).to(torch.float32)[None]
    rows = torch.rand(3 * side, side + 2 * radius) * 255
    started = time.perf_counter()
    dense = rows @ _band_matrix(rows.shape[1], side, kernel, 1)
    dense_seconds = time.perf_counter() - started
    started = time.perf_counter()
    banded = _banded_rows(rows, kernel, 0, 1, side)
    banded_seconds = time.perf_counter() - started
    return dense_seconds, banded_seconds, float((dense - banded).abs().max())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=int, default=500)
    parser.add_argument("--resolution", type=int, default=1024)
    parser.add_argument("--time-side", type=int, default=0, help="side of the timed blur (default: the median)")
    parser.add_argument("--record", action="store_true",
                        help="also write the printed figures into their section of benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    tilings = {kind: Tiling.for_network(kind, ALIGN[kind], on_cuda=True) for kind in ("cleanup", "sr")}
    networks = {kind: load_restorer(shipped_weights(kind), kind)[0] for kind in ("cleanup", "sr")}
    cost = {"cleanup": gflops_per_megapixel(networks["cleanup"]),
            "sr": gflops_per_megapixel(networks["sr"]) / 16}  # per input megapixel
    totals: dict[str, float] = {}
    padded_sides, sigmas = [], []
    with tempfile.TemporaryDirectory(prefix="render_flops_") as work:
        items, table = discover_sources(make_synthetic_celeba(Path(work) / "celeba", args.sources))
        for item in items:
            points = table.get(Path(item.name).name)
            try:
                plan = None if points is None else plan_crop(points, Image.open(item.path).size, args.resolution)
            except ValueError:
                plan = None
            if plan is None:
                continue
            for key, value in plan_gflop(plan, tilings, cost).items():
                totals[key] = totals.get(key, 0.0) + value
            if plan.padded:
                padded_sides.append(max(plan.padded_size))
                sigmas.append(plan.blur_sigma)
    count = len(items) - sum(1 for item in items if Path(item.name).name not in table)
    side, sigma = int(np.median(padded_sides)), float(np.median(sigmas))
    print(f"{count} sources with landmarks, {len(padded_sides)} padded; padded side median {side} px (95th "
          f"percentile {np.percentile(padded_sides, 95):.0f}), blur σ median {sigma:.1f} px")
    for key in sorted(totals):
        print(f"  {key:<16} {totals[key] / count:8.1f} GFLOP per source")
    side = args.time_side or side
    dense, banded, difference = time_blur_pass(side, sigma)
    print(f"one blur pass over a {side}² face, σ {sigma:.1f}, float32 on this CPU ({torch.get_num_threads()} "
          f"threads): dense product {dense:.2f} s, banded blocks {banded:.3f} s ({dense / banded:.0f}× less time), "
          f"largest difference {difference:.1e} (values 0–255)")


if __name__ == "__main__":
    import results_record

    results_record.run_main("celebahq: render arithmetic per source", main)
