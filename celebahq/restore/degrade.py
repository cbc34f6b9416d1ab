"""The synthetic degradations the networks are trained and evaluated on, and the classical baselines.

All functions take and return uint8 HWC RGB arrays in [0, 255].
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

SR_SCALE = 4


def jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    """Encode with PIL's JPEG encoder at `quality` (its defaults: 4:2:0 chroma subsampling) and decode again."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=int(quality))
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def downscale(image: np.ndarray, factor: int = SR_SCALE) -> np.ndarray:
    """Antialiased downscale by an integer factor (PIL bicubic, whose kernel widens by the factor); the sides are
    first cropped to multiples of the factor."""
    height, width = (side // factor * factor for side in image.shape[:2])
    pil = Image.fromarray(np.ascontiguousarray(image[:height, :width]))
    return np.asarray(pil.resize((width // factor, height // factor), Image.Resampling.BICUBIC))


def crop_to_multiple(image: np.ndarray, factor: int = SR_SCALE) -> np.ndarray:
    """The part of `image` that `downscale` keeps (sides cut to multiples of the factor)."""
    return image[:image.shape[0] // factor * factor, :image.shape[1] // factor * factor]


def bicubic_upscale(image: np.ndarray, factor: int) -> np.ndarray:
    """The SR baseline: PIL bicubic upscale by an integer factor (Lanczos is celebahq.render.lanczos_upscale)."""
    height, width = image.shape[:2]
    return np.asarray(Image.fromarray(image).resize((width * factor, height * factor), Image.Resampling.BICUBIC))
