"""The reference render backend: step by step as the original, with PIL, numpy and scipy (uint8 HWC arrays)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.ndimage
from PIL import Image

from .common import (
    Upscale,
    apply_upscale,
    check_downscale,
    check_image,
    lanczos_upscale,
    plan_for,
    shrunk_crop,
)

_PIL_FILTERS = {"lanczos": Image.Resampling.LANCZOS, "box": Image.Resampling.BOX}


def pad_with_blur(image: np.ndarray, pad: Sequence[int], blur_sigma: float) -> np.ndarray:
    """Step 7: reflect-pad a float32 HWC image and blend the padding into blur and the median colour.

    pad: (left, top, right, bottom) pixels; blur_sigma: Gaussian σ in pixels. Returns float32 HWC (not rounded).
    A side with pad 0 does not take part in the mask (the original never has one: all four sides get ≥ the minimum
    padding once padding is needed). All pads 0 returns a copy.
    """
    img = np.asarray(image, dtype=np.float32)
    left, top, right, bottom = (int(p) for p in pad)
    if min(left, top, right, bottom) < 0:
        raise ValueError(f"pads must be non-negative; got {tuple(pad)}")
    if max(left, top, right, bottom) == 0:
        return img.copy()
    img = np.pad(img, ((top, bottom), (left, right), (0, 0)), mode="reflect")
    height, width = img.shape[:2]
    y, x, _ = np.mgrid[:height, :width, :1]
    x, y = x.astype(np.float32), y.astype(np.float32)
    sides = ((x, left), (y, top), (width - 1 - x, right), (height - 1 - y, bottom))
    distance = np.minimum.reduce([t / np.float32(p) for t, p in sides if p > 0])
    mask = np.float32(1.0) - distance  # 1 at the outer edge, 0 at the photo's edge, < 0 inside
    img = img + (scipy.ndimage.gaussian_filter(img, [blur_sigma, blur_sigma, 0]) - img) * np.clip(
        mask * 3.0 + 1.0, 0.0, 1.0)
    img = img + (np.median(img, axis=(0, 1)) - img) * np.clip(mask, 0.0, 1.0)
    return img.astype(np.float32, copy=False)


def render_pil(
    image: np.ndarray,
    landmarks,
    resolution: int = 1024,
    upscale: Upscale | None = None,
    downscale: str = "lanczos",
) -> np.ndarray:
    """Reference render: uint8 RGB image [H, W, 3] + CelebA 5 landmarks (or a CropPlan) → uint8 [R, R, 3].

    upscale(image_uint8_hwc, factor) -> uint8 hwc is the super-resolution stage (default: PIL Lanczos, the original
    release's stand-in). downscale: "lanczos" (the original code) or "box" (the paper's text).
    With a CropPlan, its own resolution is used.
    """
    image = check_image(image)
    check_downscale(downscale)
    plan = plan_for(image, landmarks, resolution)
    upscale = upscale or lanczos_upscale
    size = plan.render_size

    img = shrunk_crop(image, plan)
    if plan.superres > 1:
        img = apply_upscale(upscale, img, plan.superres)
    if plan.padded:
        padded = pad_with_blur(img.astype(np.float32), plan.pad, plan.blur_sigma)
        img = np.uint8(np.clip(np.round(padded), 0, 255))
    pil = Image.fromarray(np.ascontiguousarray(img))
    pil = pil.transform((size, size), Image.Transform.QUAD, (plan.quad + 0.5).flatten().tolist(),
                        Image.Resampling.BILINEAR)
    pil = pil.resize((plan.resolution, plan.resolution), _PIL_FILTERS[downscale])
    return np.asarray(pil)
