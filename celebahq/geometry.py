"""The CelebA-HQ crop geometry of the original `create_celebahq`, as pure functions (numpy in, numbers out).

Coordinates are (x, y) with y down. Landmarks are CelebA pixel indices; the recipe adds 0.5 to move them to
pixel centres, so every quad below is in continuous coordinates where pixel i covers [i, i + 1).

The constants the original wrote for 1024×1024 output scale with the output size R the way the FFHQ aligner does:
`zoom = R / (2 s)`, so `R · 0.1 / zoom = 0.1 · (2 s)` etc. are fixed fractions of the crop side in source pixels,
and the rendering happens at 4R × 4R before the final downscale to R × R.

Steps (spec section 4.3): oriented square → shrink for large faces → crop with border → super-resolution factor
for small faces → reflect padding where the square leaves the photo → render. `plan_crop` does the arithmetic of
all of them; `celebahq.render` applies a plan to pixels.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

#: Landmark order of CelebA's `list_landmarks_celeba.txt`.
LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "left_mouth", "right_mouth")

#: Landmarks may lie outside the image by at most this fraction of the crop's half-side s (else ValueError).
OUTSIDE_TOLERANCE = 0.25

#: Eyes closer than this many source pixels count as coinciding (ValueError).
MIN_EYE_DISTANCE = 0.5


@dataclass(frozen=True, eq=False)
class CropPlan:
    """Everything `render` needs to turn one photo into one R×R crop; all integers are pixels.

    `quad` rows are upper-left, lower-left, lower-right, upper-right of the output square, (x, y) in the coordinates
    of the image that is finally rendered (after shrink, crop, super-resolution and padding).
    """

    quad: np.ndarray  # float64 [4, 2], final quad in rendered-image pixels
    source_quad: np.ndarray  # float64 [4, 2], the same quad in original source pixels (for the manifest)
    zoom: float  # output pixels per source pixel before any resampling, R / (2 s)
    shrink: int  # integer downscale applied first (1 = none)
    shrunk_size: tuple[int, int]  # (W, H) after the shrink
    crop: tuple[int, int, int, int]  # (left, top, right, bottom) in shrunk pixels
    superres: int  # integer upscale factor (1 = none)
    pad: tuple[int, int, int, int]  # (left, top, right, bottom) reflect padding in upscaled pixels, 0 = none
    border: int  # crop border in shrunk pixels (the original reuses it, unscaled, for the padding test)
    blur_sigma: float  # Gaussian σ of the padding blur, in upscaled pixels
    resolution: int  # output side R
    image_size: tuple[int, int] = (0, 0)  # (W, H) of the source photo

    @property
    def cropped_size(self) -> tuple[int, int]:
        """(W, H) after the crop, shrunk pixels."""
        return (self.crop[2] - self.crop[0], self.crop[3] - self.crop[1])

    @property
    def upscaled_size(self) -> tuple[int, int]:
        """(W, H) after the super-resolution step."""
        w, h = self.cropped_size
        return (w * self.superres, h * self.superres)

    @property
    def padded_size(self) -> tuple[int, int]:
        """(W, H) of the image that is finally rendered (after padding)."""
        w, h = self.upscaled_size
        return (w + self.pad[0] + self.pad[2], h + self.pad[1] + self.pad[3])

    @property
    def padded(self) -> bool:
        return max(self.pad) > 0

    @property
    def render_size(self) -> int:
        """Side of the intermediate bilinear rendering (4R)."""
        return 4 * self.resolution

    def after_crop(self) -> CropPlan:
        """The same plan for the image that steps 4–5 (shrink, crop) produced: those steps become identities, so
        a decode worker can shrink and crop and hand the renderer only the cropped pixels."""
        width, height = self.cropped_size
        return dataclasses.replace(self, shrink=1, shrunk_size=(width, height), crop=(0, 0, width, height),
                                   image_size=(width, height))

    def to_dict(self) -> dict:
        """JSON-serialisable summary (for the manifest)."""
        return {
            "quad": self.source_quad.round(3).tolist(),
            "zoom": float(self.zoom),
            "shrink": self.shrink,
            "crop": list(self.crop),
            "superres": self.superres,
            "pad": list(self.pad),
            "border": self.border,
            "blur_sigma": float(self.blur_sigma),
            "resolution": self.resolution,
        }


def _validate(landmarks, image_size) -> tuple[np.ndarray, int, int]:
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape != (5, 2):
        raise ValueError(f"landmarks must be 5 (x, y) points, shape (5, 2); got shape {lm.shape}")
    if not np.all(np.isfinite(lm)):
        raise ValueError(f"degenerate landmarks: non-finite values {lm.tolist()}")
    try:
        width, height = (int(v) for v in image_size)
    except (TypeError, ValueError):
        raise ValueError(f"image_size must be (W, H); got {image_size!r}") from None
    if width < 1 or height < 1:
        raise ValueError(f"image_size must be positive; got {image_size!r}")
    return lm, width, height


def oriented_square(landmarks: np.ndarray) -> tuple[np.ndarray, float]:
    """The oriented crop square of the recipe: (quad [4, 2] in continuous source pixels, half-side s in pixels).

    quad rows are upper-left, lower-left, lower-right, upper-right. Raises ValueError for degenerate landmarks.
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    eye_avg = (lm[0] + lm[1]) * 0.5 + 0.5
    mouth_avg = (lm[3] + lm[4]) * 0.5 + 0.5
    eye_to_eye = lm[1] - lm[0]
    eye_to_mouth = mouth_avg - eye_avg
    d_eyes = float(np.hypot(*eye_to_eye))
    d_mouth = float(np.hypot(*eye_to_mouth))
    if d_eyes < MIN_EYE_DISTANCE:
        raise ValueError(f"degenerate landmarks: the eyes coincide ({d_eyes:.3g} px apart)")

    def rot90(v: np.ndarray) -> np.ndarray:
        return np.array([-v[1], v[0]])

    x = eye_to_eye - rot90(eye_to_mouth)
    norm = float(np.hypot(*x))
    if norm < 1e-6 * max(d_eyes, d_mouth):
        raise ValueError("degenerate landmarks: no orientation (mouth at the rotated eye-to-eye vector)")
    s = max(2.0 * d_eyes, 1.8 * d_mouth)
    x = x / norm * s
    y = rot90(x)
    c = eye_avg + 0.1 * eye_to_mouth
    quad = np.stack([c - x - y, c - x + y, c + x + y, c + x - y])
    return quad, s


def plan_crop(landmarks: np.ndarray, image_size: tuple[int, int], resolution: int = 1024) -> CropPlan:
    """Plan the CelebA-HQ crop of one photo (spec section 4.3, constants scaled with `resolution`).

    landmarks: CelebA's 5 points [5, 2] (left eye, right eye, nose, left mouth, right mouth), source pixel indices.
    image_size: (W, H) of the source photo in pixels. resolution: output side R in pixels.
    Raises ValueError for degenerate landmarks or landmarks far outside the image.
    """
    lm, width, height = _validate(landmarks, image_size)
    resolution = int(resolution)
    if resolution < 4:
        raise ValueError(f"resolution must be at least 4; got {resolution}")

    quad, s = oriented_square(lm)
    # Landmarks far outside the photo: the crop would be mostly invented padding.
    margin = OUTSIDE_TOLERANCE * s
    outside = np.maximum(np.maximum(-lm[:, 0], lm[:, 0] - width), np.maximum(-lm[:, 1], lm[:, 1] - height))
    if np.any(outside > margin):
        worst = int(np.argmax(outside))
        raise ValueError(
            f"landmarks outside the image: {LANDMARK_NAMES[worst]} at {lm[worst].tolist()} is "
            f"{outside[worst]:.1f} px outside the {width}×{height} image (tolerance {margin:.1f} px)"
        )
    source_quad = quad.copy()
    zoom = resolution / (2.0 * s)

    # Shrink (large faces): integer factor, size rounded half to even like np.round.
    shrink = math.floor(0.5 / zoom)
    shrunk_size = (width, height)
    if shrink > 1:
        shrunk_size = (int(np.rint(width / shrink)), int(np.rint(height / shrink)))
        shrunk_size = (max(shrunk_size[0], 1), max(shrunk_size[1], 1))
        quad = quad / shrink
        zoom *= shrink
    else:
        shrink = 1

    # Crop: bounding box grown by the border, clipped to the image.
    border = max(int(np.rint(resolution * 0.1 / zoom)), 3)
    left = max(math.floor(quad[:, 0].min()) - border, 0)
    top = max(math.floor(quad[:, 1].min()) - border, 0)
    right = min(math.ceil(quad[:, 0].max()) + border, shrunk_size[0])
    bottom = min(math.ceil(quad[:, 1].max()) + border, shrunk_size[1])
    if right <= left or bottom <= top:
        raise ValueError(f"landmarks outside the image: the crop square misses the {width}×{height} image")
    quad = quad - np.array([left, top], dtype=np.float64)

    # Super-resolution factor (small faces); the border is deliberately not rescaled (as the original).
    superres = int(2 ** math.ceil(math.log2(zoom)))
    if superres > 1:
        quad = quad * superres
        zoom /= superres
    else:
        superres = 1
    up_w, up_h = (right - left) * superres, (bottom - top) * superres

    # Padding where the square (plus border) leaves the photo.
    pad = (
        max(border - math.floor(quad[:, 0].min()), 0),
        max(border - math.floor(quad[:, 1].min()), 0),
        max(math.ceil(quad[:, 0].max()) - up_w + border, 0),
        max(math.ceil(quad[:, 1].max()) - up_h + border, 0),
    )
    if max(pad) > border - 4:
        minimum = int(np.rint(resolution * 0.3 / zoom))
        pad = tuple(max(p, minimum) for p in pad)
        quad = quad + np.array(pad[:2], dtype=np.float64)
    else:
        pad = (0, 0, 0, 0)

    return CropPlan(
        quad=quad,
        source_quad=source_quad,
        zoom=float(resolution / (2.0 * s)),
        shrink=shrink,
        shrunk_size=shrunk_size,
        crop=(left, top, right, bottom),
        superres=superres,
        pad=pad,
        border=border,
        blur_sigma=float(resolution * 0.02 / zoom),
        resolution=resolution,
        image_size=(width, height),
    )


def quad_coefficients(quad: np.ndarray, size: int) -> np.ndarray:
    """PIL's QUAD coefficients for corners `quad` (already offset as passed to PIL) and a size×size output.

    Output pixel (i, j) samples the source at continuous coordinates
    (a0 + a1 X + a2 Y + a3 X Y, a4 + a5 X + a6 Y + a7 X Y) with X = i + 0.5, Y = j + 0.5 (Pillow ≥ 4).
    """
    nw, sw, se, ne = np.asarray(quad, dtype=np.float64)
    inv = 1.0 / size
    return np.array([
        nw[0], (ne[0] - nw[0]) * inv, (sw[0] - nw[0]) * inv, (se[0] - sw[0] - ne[0] + nw[0]) * inv * inv,
        nw[1], (ne[1] - nw[1]) * inv, (sw[1] - nw[1]) * inv, (se[1] - sw[1] - ne[1] + nw[1]) * inv * inv,
    ])


def source_to_output(plan: CropPlan, points: np.ndarray) -> np.ndarray:
    """Where source pixels land in the R×R output: float64 [N, 2] output pixel indices (pixel centre = integer).

    points: [N, 2] source pixel indices (the landmarks' convention). Follows every resampling of the render exactly,
    including the shrink's rounded size and the +0.5 the original passes to PIL's QUAD transform.
    """
    u = np.asarray(points, dtype=np.float64).reshape(-1, 2) + 0.5  # continuous source coordinates
    if plan.shrink > 1:
        u = u * (np.array(plan.shrunk_size, dtype=np.float64) / np.array(plan.image_size, dtype=np.float64))
    u = (u - np.array(plan.crop[:2], dtype=np.float64)) * plan.superres + np.array(plan.pad[:2], dtype=np.float64)
    # The render samples source continuous coordinate q(X) + 0.5 at output continuous coordinate X (the quad is a
    # square, so q is affine): content at u appears where q(X) = u - 0.5.
    q0 = plan.quad[0]
    size = plan.render_size
    basis = np.stack([(plan.quad[3] - q0) / size, (plan.quad[1] - q0) / size], axis=1)  # columns: d/dX, d/dY
    xy = np.linalg.solve(basis, (u - 0.5 - q0).T).T
    return xy / 4.0 - 0.5
