"""The original's training schedule (spec 5.1): a continuous level of detail driven by the images shown.

lod = log2(R) - log2(initial resolution) - phase - max(t - training_kimg, 0) / transition_kimg, clamped at 0,
with phase = floor(kimg / (training_kimg + transition_kimg)) and t the kimg into the phase: each resolution is
stabilised for training_kimg, then the next one fades in over transition_kimg while lod falls by 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gancore.errors import UserError

from .configs import TrainingConfig


@dataclass(frozen=True)
class Phase:
    """The schedule at one point: lod, working resolution, global minibatch, learning rates, tick length."""

    kimg: float
    lod: float
    resolution: int
    minibatch: int
    G_lr: float
    D_lr: float
    tick_kimg: float

    @property
    def fade_weight(self) -> float:
        """Weight of the previous resolution's path during a fade (lod - floor(lod)); 0 when stable."""
        return self.lod - math.floor(self.lod)

    @property
    def lod_bounds(self) -> tuple[int, int]:
        """(floor(lod), ceil(lod)): the optimizers are reset whenever this pair changes."""
        return math.floor(self.lod), math.ceil(self.lod)


def compute_lod(kimg: float, resolution: int, initial_resolution: int, training_kimg: float,
                transition_kimg: float) -> float:
    """The original's level of detail at `kimg` thousand images shown (0 = full resolution)."""
    phase_kimg = training_kimg + transition_kimg
    phase = math.floor(kimg / phase_kimg) if phase_kimg > 0 else 0
    t = kimg - phase * phase_kimg
    lod = math.log2(resolution) - math.floor(math.log2(initial_resolution)) - phase
    if transition_kimg > 0:
        lod -= max(t - training_kimg, 0.0) / transition_kimg
    return max(lod, 0.0)


def training_phase(config: TrainingConfig, kimg: float, num_gpus: int = 1) -> Phase:
    """Schedule values at `kimg` for a run of `config` (config.resolution must be set) on `num_gpus`."""
    resolution = config.resolution
    initial = config.lod_initial_resolution if config.progressive else resolution
    lod = compute_lod(kimg, resolution, initial, config.lod_training_kimg, config.lod_transition_kimg)
    current = 2 ** (int(math.log2(resolution)) - math.floor(lod))
    lr_scale = 1.0
    if config.lr_rampup_kimg > 0 and kimg < config.lr_rampup_kimg:
        lr_scale = math.exp(-5.0 * (1.0 - kimg / config.lr_rampup_kimg) ** 2)
    return Phase(kimg=kimg, lod=lod, resolution=current, minibatch=global_minibatch(config, current, num_gpus),
                 G_lr=config.G_lr_dict.get(current, config.G_lr) * lr_scale,
                 D_lr=config.D_lr_dict.get(current, config.D_lr) * lr_scale,
                 tick_kimg=config.tick_kimg_dict.get(current, config.tick_kimg_base))


def global_minibatch(config: TrainingConfig, resolution: int, num_gpus: int = 1) -> int:
    """The original's minibatch at a working resolution: the dict's (or base) value rounded down to a multiple of
    the GPU count, then capped at max_minibatch_per_gpu × GPUs. May be 0 (refused by `check_gpu_split`)."""
    minibatch = config.minibatch_dict.get(resolution, config.minibatch_base)
    minibatch -= minibatch % num_gpus
    if resolution in config.max_minibatch_per_gpu:
        minibatch = min(minibatch, config.max_minibatch_per_gpu[resolution] * num_gpus)
    return minibatch


@dataclass(frozen=True)
class GpuSplit:
    """How one working resolution's minibatch is shared: `per_gpu` images on each of the GPUs, and the
    minibatch-stddev group D takes over them (min(mbstd_group_size, per_gpu) as the original; 0 = no layer)."""

    resolution: int
    minibatch: int
    per_gpu: int
    group: int


def gpu_splits(config: TrainingConfig, num_gpus: int = 1) -> list[GpuSplit]:
    """One GpuSplit per working resolution the run trains at (config.resolution must be set)."""
    first = config.lod_initial_resolution if config.progressive else config.resolution
    rows = []
    for log2 in range(int(math.log2(min(first, config.resolution))), int(math.log2(config.resolution)) + 1):
        minibatch = global_minibatch(config, 2 ** log2, num_gpus)
        per_gpu = minibatch // num_gpus
        group = min(config.mbstd_group_size, per_gpu) if config.mbstd_group_size > 1 else 0
        rows.append(GpuSplit(2 ** log2, minibatch, per_gpu, group))
    return rows


def check_gpu_split(config: TrainingConfig, num_gpus: int = 1, name: str = "this config") -> None:
    """UserError when a GPU would get fewer than 2 images at some resolution, or its images cannot be split into
    whole minibatch-stddev groups (the original cannot run either; we do not round silently)."""
    for split in gpu_splits(config, num_gpus):
        asked = config.minibatch_dict.get(split.resolution, config.minibatch_base)
        rounded = f" ({split.minibatch} after rounding and capping)" if asked != split.minibatch else ""
        where = (f"{name} on {num_gpus} GPU{'s' if num_gpus > 1 else ''}: at {split.resolution}x{split.resolution} "
                 f"the minibatch of {asked}{rounded} gives {split.per_gpu} image{'s' if split.per_gpu != 1 else ''}"
                 f" per GPU")
        if split.per_gpu < 2:
            raise UserError(f"{where}; every GPU needs at least 2 (minibatch statistics per GPU). {SPLIT_HINT}")
        if split.group and split.per_gpu % split.group:
            raise UserError(f"{where}, not a multiple of the minibatch-stddev group {split.group}. {SPLIT_HINT}")


SPLIT_HINT = ("Use fewer GPUs, a preset made for this GPU count (celebahq-1024 has the released code's presets for "
              "1, 2, 4 and 8 GPUs), or raise the minibatch with --set 'minibatch_dict={\"RES\": N}' "
              "(or change mbstd_group_size).")


def schedule_table(config: TrainingConfig, num_gpus: int = 1) -> list[dict]:
    """One row per stabilise/fade stage up to total_kimg: start kimg, lod range, resolution, global and per-GPU
    minibatch, minibatch-stddev group, G and D lr."""
    splits = {split.resolution: split for split in gpu_splits(config, num_gpus)}
    return [{**row, "per_gpu": splits[row["resolution"]].per_gpu, "group": splits[row["resolution"]].group}
            for row in _stages(config, num_gpus)]


def _stages(config: TrainingConfig, num_gpus: int) -> list[dict]:
    rows = []
    if not config.progressive:
        phase = training_phase(config, 0.0, num_gpus)
        return [{"start_kimg": 0.0, "end_kimg": config.total_kimg, "kind": "full", "resolution": phase.resolution,
                 "lod": [0.0, 0.0], "minibatch": phase.minibatch, "G_lr": phase.G_lr, "D_lr": phase.D_lr}]
    start, stage = 0.0, 0
    while start < config.total_kimg:
        fading = stage % 2 == 1
        length = config.lod_transition_kimg if fading else config.lod_training_kimg
        end = min(start + length, config.total_kimg)
        first, last = training_phase(config, start, num_gpus), training_phase(config, max(end - 1e-9, start), num_gpus)
        if last.lod == 0.0 and not fading:
            end = config.total_kimg
        rows.append({"start_kimg": start, "end_kimg": end, "kind": "fade" if fading else "stabilise",
                     "resolution": first.resolution if not fading else last.resolution,
                     "lod": [first.lod, last.lod], "minibatch": last.minibatch, "G_lr": last.G_lr, "D_lr": last.D_lr})
        if end >= config.total_kimg:
            break
        start, stage = end, stage + 1
    return rows
