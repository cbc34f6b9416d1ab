"""ganeval's optional compiled CPU kernels (ganeval/_native/*.c), built on first use by gancore.native.

The MS-SSIM kernel (msssim.c) is plain C99 (benchmarks/metrics_speed.py times it); ganeval.msssim falls back to
PyTorch when it cannot be built. GANEVAL_NATIVE=0 turns it off; `status(name)` says which build is loaded, or
why none is. How and where kernels are built and cached: gancore.native.
"""

from __future__ import annotations

from pathlib import Path

from gancore.native import NATIVE_ENV_VAR, KernelSet, turned_off

SOURCE_DIR = Path(__file__).resolve().parent / "_native"
KERNELS = KernelSet(SOURCE_DIR)
load, disable, status = KERNELS.load, KERNELS.disable, KERNELS.status

__all__ = ["KERNELS", "NATIVE_ENV_VAR", "SOURCE_DIR", "disable", "load", "status", "turned_off"]
