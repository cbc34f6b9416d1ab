"""Trainer figures for the device suite: `run(budget_seconds) -> list[Row]`.

On a GPU: the real D, EMA and G steps of celebahq-1024's networks (the released 1-GPU preset's minibatch at each
working resolution, stable phase) at every resolution 4²–1024², in fp32 (TF32 off) and bf16 autocast: images/s
and peak GPU memory (allocated and reserved) per point; whether the gradient penalty and every gradient stay
finite under bf16; the 64² fp32 peak once more with cuDNN's autotuner off (its trial workspaces count in the
peak); and the projection of a whole celebahq-1024 run (the schedule's kimg at each working resolution ×
the measured fp32 and bf16 images/s) beside the times the original's README gives.

Every point gets an equal share of the budget left when it starts (warm-up steps, then timed steps until its
share is spent, at least one), so the last resolution is always reached. On a CPU (smoke mode): the same rows
for a narrow 1024² config (8 feature maps at most, 2 at 1024², minibatch 2), one step per point, bf16 at 4² and
1024² only (a CPU without bf16 units emulates it slowly).

    python benchmarks/device_train.py [--budget 150]          # prints the rows
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass

import torch
from device_common import Row  # the device suite's row type
from train_speed import measure

from gancore.runtime import resolve_device
from progan.configs import resolve_config
from progan.schedule import training_phase

# What the original's README reports for CelebA-HQ 1024² (preset-v2-1gpu, on one Tesla V100), in hours.
ORIGINAL_REPORTED_HOURS = {"preset-v2-1gpu on 1× V100 (README)": 14 * 24.0,
                           "preset-v2-8gpus on 8× V100 (README)": 2 * 24.0}
SMOKE_OVERRIDES = {"fmap_base": 1024, "fmap_max": 8, "latent_size": 8, "minibatch_base": 2, "minibatch_dict": {},
                   "max_minibatch_per_gpu": {}}


@dataclass
class Plan:
    config_name: str
    overrides: dict
    resolutions: list[int]
    steps: int    # timed steps at most per point
    warmup: int
    label: str
    bf16_resolutions: list[int]  # where bf16 is measured too


def _plan(device: torch.device) -> Plan:
    if device.type == "cuda":
        every = [2 ** k for k in range(2, 11)]
        return Plan("celebahq-1024", {}, every, 50, 2, torch.cuda.get_device_name(device), every)
    return Plan("celebahq-1024", SMOKE_OVERRIDES, [2 ** k for k in range(2, 11)], 1, 0, "CPU smoke mode", [4, 1024])


def projected_hours(config, images_per_second: dict[int, float], step_kimg: float = 1.0) -> float:
    """Hours of a whole run of `config` (1 GPU): its schedule walked in `step_kimg` steps, each at the measured
    images/s of that step's working resolution (fades run at the new resolution, as the trainer does)."""
    seconds, kimg = 0.0, 0.0
    while kimg < config.total_kimg:
        span = min(step_kimg, config.total_kimg - kimg)
        resolution = training_phase(config, kimg + span / 2).resolution  # mid-step: growth starts after a bound
        seconds += span * 1000 / images_per_second[resolution]
        kimg += span
    return seconds / 3600


def run(budget_seconds: float) -> list[Row]:
    """Rows of img/s and peak memory per resolution and precision, bf16 finiteness, the autotuner check and the
    run projection."""
    started = time.perf_counter()
    device = resolve_device("auto")
    plan = _plan(device)
    config = resolve_config(plan.config_name, plan.overrides)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    name = plan.config_name + (" (smoke)" if plan.overrides else "")
    points = [(r, precision) for r in plan.resolutions for precision in ("fp32", "bf16")
              if precision == "fp32" or r in plan.bf16_resolutions]
    rows, finite, speeds = [], [], {"fp32": {}, "bf16": {}}
    for index, (resolution, precision) in enumerate(points):
        share = (budget_seconds - (time.perf_counter() - started)) / (len(points) - index + 1)  # +1: the extra row
        point_started = time.perf_counter()
        result = measure(config, resolution, device, precision == "bf16", plan.steps, plan.warmup,
                         max_seconds=max(share * 0.6, 0.0))
        seconds = time.perf_counter() - point_started
        speeds[precision][resolution] = result["images_per_second"]
        note = (f"{plan.label}, minibatch {result['minibatch']}, {result['steps']} timed D+EMA+G steps after "
                f"{plan.warmup}, TF32 off")
        rows.append(Row(f"train {name} {resolution}² {precision}", result["images_per_second"], "img/s", note,
                        seconds))
        if "gpu_peak_mb" in result:
            rows.append(Row(f"train {name} {resolution}² {precision} peak memory", result["gpu_peak_mb"] / 1024,
                            "GiB", f"allocated; reserved {result['gpu_peak_reserved_mb'] / 1024:.2f} GiB"))
        if precision == "bf16":
            finite.append((resolution, math.isfinite(result["gradient_penalty"]) and result["gradients_finite"]))
    bad = [resolution for resolution, ok in finite if not ok]
    rows.append(Row(f"train {name} bf16 gradient penalty finite", float(not bad), "bool",
                    f"{plan.label}: checked at {', '.join(f'{r}²' for r, _ in finite)}"
                    + (f"; not finite at {', '.join(map(str, bad))}" if bad else "")))
    if device.type == "cuda":
        rows.extend(_autotuner_rows(config, device, plan))
    for precision, measured in speeds.items():
        if len(measured) < len(plan.resolutions):
            continue
        hours = projected_hours(config, measured)
        reported = "; ".join(f"{what}: {value:.0f} h" for what, value in ORIGINAL_REPORTED_HOURS.items())
        rows.append(Row(f"train {name} projected whole run ({config.total_kimg:.0f} kimg) {precision}", hours, "h",
                        f"{plan.label}, 1 GPU, schedule kimg per resolution × the img/s above; the original "
                        f"reports {reported}"))
    return rows


def _autotuner_rows(config, device: torch.device, plan: Plan) -> list[Row]:
    """64² fp32 peak memory with cuDNN's autotuner off: how much of the peak its trial workspaces were."""
    torch.backends.cudnn.benchmark = False
    try:
        result = measure(config, 64, device, False, 3, 1)
    finally:
        torch.backends.cudnn.benchmark = True
    return [Row(f"train {plan.config_name} 64² fp32 peak memory, cudnn.benchmark off", result["gpu_peak_mb"] / 1024,
                "GiB", f"allocated; reserved {result['gpu_peak_reserved_mb'] / 1024:.2f} GiB; "
                f"{result['images_per_second']:.1f} img/s")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=150.0, help="Seconds for all points.")
    args = parser.parse_args()
    for row in run(args.budget):
        print(f"{row.name:<64} {row.value:>12.2f} {row.unit:<6} {row.note}")


if __name__ == "__main__":
    main()
