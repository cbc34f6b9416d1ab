"""What both render backends share: the checks of their inputs, the shrink and crop (steps 4–5) on uint8 arrays,
and the host super-resolution stand-in (PIL Lanczos)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

from celebahq.geometry import CropPlan, plan_crop

Upscale = Callable[[np.ndarray, int], np.ndarray]

DOWNSCALE_FILTERS = ("lanczos", "box")


def check_image(image: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """A uint8 HWC RGB array, or a [3, H, W] tensor (uint8, or float with uint8 values), checked."""
    if isinstance(image, torch.Tensor):
        if image.ndim != 3 or image.shape[0] != 3 or min(image.shape[1:]) < 1:
            raise ValueError(f"expected a [3, H, W] image tensor; got shape {tuple(image.shape)}")
        return image
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 HWC RGB image; got dtype {image.dtype}, shape {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"empty image, shape {image.shape}")
    return image


def plan_for(image: np.ndarray | torch.Tensor, plan_or_landmarks, resolution: int) -> CropPlan:
    height, width = image.shape[1:] if isinstance(image, torch.Tensor) else image.shape[:2]
    if isinstance(plan_or_landmarks, CropPlan):
        plan = plan_or_landmarks
        if tuple(plan.image_size) != (width, height):
            raise ValueError(f"the plan is for a {plan.image_size} image; got {(width, height)}")
        return plan
    return plan_crop(plan_or_landmarks, (width, height), resolution)


def check_downscale(downscale: str) -> str:
    if downscale not in DOWNSCALE_FILTERS:
        raise ValueError(f"downscale must be one of {DOWNSCALE_FILTERS}; got {downscale!r}")
    return downscale


def lanczos_upscale(image: np.ndarray, factor: int) -> np.ndarray:
    """The original release's "simulated super-resolution": PIL Lanczos resize by an integer factor (uint8 HWC)."""
    height, width = image.shape[:2]
    return np.asarray(Image.fromarray(image).resize((width * factor, height * factor), Image.Resampling.LANCZOS))


def shrink_and_crop(image: np.ndarray, plan: CropPlan) -> tuple[np.ndarray, CropPlan]:
    """Steps 4–5 done ahead (e.g. in a decode worker): uint8 HWC source -> (cropped uint8 HWC, the plan for it).
    Rendering the pair gives the same pixels as rendering the source with `plan`."""
    return shrunk_crop(image, plan), plan.after_crop()


def shrunk_crop(image: np.ndarray, plan: CropPlan) -> np.ndarray:
    """Steps 4–5 on uint8 HWC: PIL Lanczos shrink by the plan's integer factor, then the crop (shrunk pixels)."""
    if plan.shrink > 1:
        image = np.asarray(Image.fromarray(image).resize(plan.shrunk_size, Image.Resampling.LANCZOS))
    left, top, right, bottom = plan.crop
    return image[top:bottom, left:right]



def apply_upscale(upscale: Upscale, image: np.ndarray, factor: int) -> np.ndarray:
    out = np.asarray(upscale(np.ascontiguousarray(image), factor))
    expected = (image.shape[0] * factor, image.shape[1] * factor, 3)
    if out.dtype != np.uint8 or out.shape != expected:
        raise ValueError(f"upscale must return uint8 {expected}; got {out.dtype} {out.shape}")
    return out
