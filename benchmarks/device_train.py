"""Trainer figures for the device suite: `run(budget_seconds) -> list[Row]`.

On a GPU: the real D and G steps of celebahq-1024's networks (the released 1-GPU preset's minibatch at each
working resolution, stable phase) in fp32 (TF32 off) and bf16 autocast: images/s and peak GPU memory per
resolution, and whether the gradient penalty and every gradient stay finite under bf16. On a CPU (smoke mode):
the same rows for the `tiny` config at 4², 8², 16² with 2 timed steps each.

    python benchmarks/device_train.py [--budget 240]          # prints the rows
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from device_common import Row  # the device suite's row type
from train_speed import measure

from gancore.runtime import resolve_device
from progan.configs import resolve_config


def _plan(device: torch.device) -> tuple[str, list[int], int, int]:
    """(config, resolutions, timed steps, warm-up steps) for this device."""
    if device.type == "cuda":
        return "celebahq-1024", [2 ** k for k in range(2, 11)], 10, 3
    return "tiny", [4, 8, 16], 2, 1


def run(budget_seconds: float) -> list[Row]:
    """Rows of img/s and peak memory per resolution and precision, then bf16 finiteness; points that do not fit in
    `budget_seconds` (checked before each one) are reported as skipped."""
    started = time.perf_counter()
    device = resolve_device("auto")
    name, resolutions, steps, warmup = _plan(device)
    config = resolve_config(name)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    label = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU smoke mode"
    rows, finite, spent_per_point = [], [], 0.0
    for resolution in resolutions:
        for precision in ("fp32", "bf16"):
            elapsed = time.perf_counter() - started
            if elapsed + 2 * spent_per_point > budget_seconds:
                rows.append(Row(f"train {name} {resolution}² {precision}", math.nan, "img/s",
                                f"skipped: {budget_seconds:.0f} s budget spent"))
                continue
            point_started = time.perf_counter()
            result = measure(config, resolution, device, precision == "bf16", steps, warmup)
            spent_per_point = max(spent_per_point, time.perf_counter() - point_started)
            note = f"{label}, minibatch {result['minibatch']}, {steps} D+G steps, TF32 off"
            rows.append(Row(f"train {name} {resolution}² {precision}", result["images_per_second"], "img/s", note))
            if "gpu_peak_mb" in result:
                rows.append(Row(f"train {name} {resolution}² {precision} peak memory", result["gpu_peak_mb"], "MiB",
                                note))
            if precision == "bf16":
                finite.append((resolution, math.isfinite(result["gradient_penalty"]) and result["gradients_finite"]))
    if finite:
        bad = [resolution for resolution, ok in finite if not ok]
        rows.append(Row(f"train {name} bf16 gradient penalty finite", float(not bad), "bool",
                        f"{label}: checked at {', '.join(f'{r}²' for r, _ in finite)}"
                        + (f"; not finite at {', '.join(map(str, bad))}" if bad else "")))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=240.0, help="Seconds for all points.")
    args = parser.parse_args()
    for row in run(args.budget):
        print(f"{row.name:<48} {row.value:>12.1f} {row.unit:<6} {row.note}")


if __name__ == "__main__":
    main()
