"""`BuildOptions`: the settings of one `celebahq build` (its flags), with their defaults and checks."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import torch

from gancore import distributed
from gancore.errors import UserError
from gancore.runtime import resolve_device

from .restore.infer import shipped_weights

SR_CHOICES = ("lanczos", "net")  # super-resolution stages: the original's stand-in, the shipped network
CLEANUP_CHOICES = ("none", "net")  # cleanup stages: none (the original), the shipped network


def default_stages(device: str | None = None) -> tuple[str, str]:
    """(cleanup, sr) that `celebahq build` uses unless told: the networks when their weights are installed and the
    build runs on CUDA; on a CPU the stand-ins (the networks would make the bundled example ~5× slower there)."""
    on_cuda = torch.cuda.is_available() if device in (None, "auto") else str(device).startswith("cuda")
    if on_cuda and shipped_weights("cleanup").is_file() and shipped_weights("sr").is_file():
        return "net", "net"
    return "none", "lanczos"


@dataclass(frozen=True)
class BuildOptions:
    """Settings of one build (the flags of `celebahq build`). None means "the default", filled in by `resolved`
    (the CLI and `build()` share it, so they agree); an instance is never changed."""

    resolution: int = 1024
    backend: str = "auto"  # "torch" (batched), "pil" (the reference) or "auto": torch on CUDA, else pil
    # (on a CPU the PIL path is faster: benchmarks/celebahq_speed.py)
    sr: str | None = None  # super-resolution stage for small faces; None: default_stages(device)
    cleanup: str | None = None  # JPEG cleanup stage on each decoded photo; None: default_stages(device)
    downscale: str = "lanczos"  # 4R -> R filter: "lanczos" (original code) or "box" (paper text)
    batch_size: int = 8
    num_workers: int | None = None  # decoding processes (None: min(4, CPUs))
    num_writers: int | None = None  # PNG-encoding processes (None: min(8, CPUs))
    device: str | None = None
    shard: tuple[int, int] | None = None  # None: this torchrun rank of the world, else (0, 1)
    limit: int | None = None  # only the first N sources (quick trials)
    num_images: int | None = None  # two passes: score everything, write the best N
    select: str | None = None  # a selection file: write exactly these sources (celebahq/selection.py)
    png: bool = True  # write OUT/images/*.png
    h5: str | None = None  # also write the multi-resolution HDF5 of the selection here (needs a selection)
    zip: str | None = None  # also write a dataset zip of the selection here (needs a selection)
    accept_odd_landmarks: bool = False  # render points whose geometry cannot be a face's (swapped eyes, …)
    progress: bool = True

    def resolved(self) -> BuildOptions:
        """A copy with every default filled in and every value checked (UserError for a bad one)."""
        device = resolve_device(self.device, share_gpus=True)  # torchrun: more ranks than GPUs take turns
        default_cleanup, default_sr = default_stages(str(device))
        cpus = os.cpu_count() or 1
        shard = self.shard or ((distributed.rank(), distributed.world_size()) if distributed.is_distributed()
                               else (0, 1))
        options = dataclasses.replace(
            self, device=str(device), backend=("torch" if device.type == "cuda" else "pil") if self.backend == "auto"
            else self.backend, sr=self.sr or default_sr, cleanup=self.cleanup or default_cleanup, shard=shard,
            num_workers=min(4, cpus) if self.num_workers is None else self.num_workers,
            num_writers=self.num_writers or min(8, cpus))
        options._check()
        return options

    def _check(self) -> None:
        for name, value, choices in (("backend", self.backend, ("torch", "pil")), ("sr", self.sr, SR_CHOICES),
                                     ("cleanup", self.cleanup, CLEANUP_CHOICES),
                                     ("downscale", self.downscale, ("lanczos", "box"))):
            if value not in choices:
                raise UserError(f"--{name} {value!r}: choose one of {', '.join(choices)}")
        for kind, stage in (("cleanup", self.cleanup), ("sr", self.sr)):
            if stage == "net" and not shipped_weights(kind).is_file():
                raise UserError(f"--{kind} net: no shipped weights at {shipped_weights(kind)}")
        if self.resolution < 4 or self.resolution & (self.resolution - 1):
            raise UserError(f"--resolution {self.resolution}: must be a power of two ≥ 4")
        if self.num_images is not None and self.num_images < 1:
            raise UserError(f"--num-images {self.num_images}: must be at least 1")
        if self.num_images is not None and self.resolution < 64:
            raise UserError(f"--num-images ranks by quality, which needs --resolution ≥ 64 (got {self.resolution})")
        if self.num_images is not None and self.select is not None:
            raise UserError("give --num-images or --select, not both")
        if (self.h5 or self.zip) and self.num_images is None and self.select is None:
            raise UserError("--h5/--zip in a build need a selection: --num-images N or --select FILE")
        if (self.h5 or self.zip) and self.shard[1] > 1:
            raise UserError("--h5/--zip cannot be written by the shards of a build (each holds part of the "
                            "images): build, then run `celebahq export OUT --h5 FILE` (or --zip)")
        if not (self.png or self.h5 or self.zip):
            raise UserError("--no-png needs --h5 or --zip: nothing would be written")

