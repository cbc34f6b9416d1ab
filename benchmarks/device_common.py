"""What the sections of benchmarks/device_suite.py share: the result row, the run's context, timing, images.

A section is a module `benchmarks/device_<name>.py` with `run(budget_seconds: float) -> list[Row]`. It reads
the device and the smoke flag with `SuiteContext.from_environment()` (the runner sets the variables, so they
also reach processes a section starts, e.g. torchrun), times GPU work with `timed` and keeps to its budget
with `Deadline`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
DEVICE_ENV_VAR = "GANEVAL_SUITE_DEVICE"
SMOKE_ENV_VAR = "GANEVAL_SUITE_SMOKE"


@dataclass
class Row:
    """One figure of the suite: `value` in `unit` (e.g. 812.3 "images/s"; NaN: skipped, the note says why).

    `seconds`: the wall time of the measurement, when known. The runner fills `section` (the module's short
    name) and `device` when a section leaves them empty.
    """

    name: str  # what was measured, with its size: "SWD 16384 images at 128²"
    value: float
    unit: str
    note: str = ""
    seconds: float | None = None
    section: str = ""
    device: str = ""


@dataclass
class SuiteContext:
    device: torch.device
    smoke: bool  # tiny sizes, seconds in all: checks that the code runs, not how fast

    @classmethod
    def from_environment(cls) -> SuiteContext:
        """$GANEVAL_SUITE_DEVICE (default: cuda if available, else cpu) and $GANEVAL_SUITE_SMOKE=1."""
        name = os.environ.get(DEVICE_ENV_VAR) or ("cuda" if torch.cuda.is_available() else "cpu")
        return cls(device=torch.device(name), smoke=os.environ.get(SMOKE_ENV_VAR) == "1")


class Deadline:
    """A section's budget: `left()` seconds remain; `expired()` once it is spent."""

    def __init__(self, budget_seconds: float):
        self.end = time.perf_counter() + budget_seconds

    def left(self) -> float:
        return self.end - time.perf_counter()

    def expired(self) -> bool:
        return self.left() <= 0


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(function, device: torch.device):
    """(function's value, wall seconds), the device synchronised before and after."""
    synchronize(device)
    start = time.perf_counter()
    value = function()
    synchronize(device)
    return value, time.perf_counter() - start


def photographs() -> torch.Tensor:
    """The bundled 128×128 example photographs (examples/real), uint8 NCHW on the CPU."""
    files = sorted((ROOT / "examples" / "real").glob("*.png"))
    return torch.from_numpy(np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])).permute(0, 3, 1, 2)


def photo_crops(count: int, resolution: int, seed: int, device: torch.device, chunk: int = 256) -> torch.Tensor:
    """uint8 NCHW [count, 3, resolution, resolution] on `device`: random crops (half to all of the side) and
    mirrors of the example photographs, resized bilinearly (antialiased when shrinking). Seeded."""
    pool = photographs().to(device)
    generator = np.random.default_rng(seed)
    out = torch.empty(count, 3, resolution, resolution, dtype=torch.uint8, device=device)
    side_max = pool.shape[-1]
    for start in range(0, count, chunk):
        stop = min(start + chunk, count)
        side = int(generator.integers(side_max // 2, side_max + 1))  # one crop size per chunk
        top, left = generator.integers(0, side_max - side + 1, size=2)
        picks = torch.from_numpy(generator.integers(len(pool), size=stop - start)).to(device)
        crops = pool[picks, :, top:top + side, left:left + side].float()
        crops = F.interpolate(crops, size=(resolution, resolution), mode="bilinear", align_corners=False,
                              antialias=resolution < side)
        mirror = torch.from_numpy(generator.random(stop - start) < 0.5).to(device)
        crops = torch.where(mirror[:, None, None, None], crops.flip(-1), crops)
        out[start:stop] = crops.round().clamp(0, 255).to(torch.uint8)
    return out


def peak_memory_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


__all__ = ["DEVICE_ENV_VAR", "SMOKE_ENV_VAR", "Deadline", "Row", "SuiteContext", "peak_memory_gib",
           "photo_crops", "photographs", "synchronize", "timed"]
