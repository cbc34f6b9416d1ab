"""Real photographs and the degradations the quality score must see (tests and benchmarks/quality_benchmark.py).

Photographs: the public-domain samples shipped with scikit-image and matplotlib that are at least 512² (smaller
ones are not upscaled: that would blur them), centre-cropped to a square. Degradations are deterministic and
return uint8 HW3 images, as a build's PNGs are.
"""

from __future__ import annotations

import io

import cv2
import numpy as np
from PIL import Image

# the scikit-image samples that are photographs of at least 512², and the square crop taken from each
SKIMAGE_PHOTOS = {"astronaut": 512, "camera": 512, "immunohistochemistry": 512, "hubble_deep_field": 512,
                  "retina": 1024, "moon": 512, "grass": 512, "gravel": 512}
# a brick wall: a periodic texture that starts at the bottom of the quality scale; benchmark only (see docs)
PERIODIC_TEXTURES = {"brick": 512}


def centre_square(image: np.ndarray, side: int) -> np.ndarray:
    """uint8 HW or HWC -> uint8 side×side×3 RGB, the central square (grayscale repeated into RGB)."""
    top, left = (image.shape[0] - side) // 2, (image.shape[1] - side) // 2
    crop = image[top:top + side, left:left + side]
    crop = np.repeat(crop[..., None], 3, axis=2) if crop.ndim == 2 else crop[..., :3]
    return np.array(crop)  # a writable copy (the sample arrays are read-only)


def sample_photographs(names: dict[str, int] | None = None) -> dict[str, np.ndarray]:
    """{name: uint8 HW3 square crop ≥ 512²}: the scikit-image photographs above and matplotlib's grace_hopper."""
    import matplotlib.cbook
    import skimage.data

    photos = {name: centre_square(getattr(skimage.data, name)(), side)
              for name, side in (SKIMAGE_PHOTOS if names is None else names).items()}
    if names is None:
        path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)  # 512×600, US Navy
        photos["grace_hopper"] = centre_square(np.asarray(Image.open(path).convert("RGB")), 512)
    return photos


def _to_uint8(pixels: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def _rotated_grid(image: np.ndarray, angle_degrees: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (u, v) along and across a direction `angle_degrees` from the x axis."""
    y, x = np.mgrid[0:image.shape[0], 0:image.shape[1]].astype(np.float64)
    angle = np.deg2rad(angle_degrees)
    return x * np.cos(angle) + y * np.sin(angle), -x * np.sin(angle) + y * np.cos(angle)


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of standard deviation `sigma` pixels (reflected borders), rounded back to uint8."""
    if sigma == 0:
        return image
    return _to_uint8(cv2.GaussianBlur(image.astype(np.float32), (0, 0), sigma, borderType=cv2.BORDER_REFLECT101))


def dot_screen(image: np.ndarray, amplitude: float = 12.0, period: float = 6.0, angle: float = 45.0) -> np.ndarray:
    """A visible halftone screen: round dots (a lattice of `period` pixels turned by `angle`, with harmonics)
    added with ±`amplitude` grey levels, as a scanned print shows."""
    u, v = _rotated_grid(image, angle)
    lattice = np.cos(2 * np.pi * u / period) * np.cos(2 * np.pi * v / period)
    dots = np.clip((lattice - 0.3) * 3, 0, 1)  # flat-topped round dots: a cosine cut off, so harmonics too
    return _to_uint8(image + amplitude * (dots - dots.mean())[..., None])


def stripes(image: np.ndarray, amplitude: float = 8.0, period: float = 7.0, angle: float = 90.0) -> np.ndarray:
    """Periodic sinusoidal stripes of ±`amplitude` grey levels (angle 90: horizontal bands, like scan lines)."""
    u, _ = _rotated_grid(image, angle)
    return _to_uint8(image + amplitude * np.sin(2 * np.pi * u / period)[..., None])


def jpeg(image: np.ndarray, quality: int = 5) -> np.ndarray:
    """Encode and decode with PIL's JPEG at `quality` (5: strong 8×8 blocking)."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(buffer).convert("RGB"))


def brightness(image: np.ndarray, factor: float = 1.0, offset: float = 0.0) -> np.ndarray:
    """A global brightness change: every channel times `factor` plus `offset` grey levels, clipped and rounded."""
    return _to_uint8(image.astype(np.float64) * factor + offset)


def rotate90(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.rot90(image))


def mirror(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(image[:, ::-1])


BLUR_SIGMAS = (0, 0.5, 1, 2, 4)
# degradations that must lower the score, and changes that must move it by less than 2%
DEFECTS = {"halftone dot screen": dot_screen, "horizontal stripes": stripes,
           "30° stripes": lambda image: stripes(image, period=9.0, angle=30.0), "JPEG quality 5": jpeg}
NEUTRAL = {"rotation 90°": rotate90, "mirror": mirror, "brightness ×0.8": lambda image: brightness(image, 0.8),
           "brightness ×1.1": lambda image: brightness(image, 1.1),
           "brightness +10": lambda image: brightness(image, offset=10)}
