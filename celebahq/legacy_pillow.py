"""The original `create_celebahq` pre-delta render, bit for bit: Pillow 3.1.1's resampling and numpy 1.x float32
arithmetic, re-implemented in numpy (current Pillow and numpy 2 give other bits).

NVIDIA's CelebA-HQ deltas are differences against images made with Pillow 3.1.1 on numpy 1.x. Three things moved
since then, each written here from the original sources:

* `resize_antialias`: Pillow 3.1.1 `libImaging/Resample.c` (`ImagingResample`): a horizontal pass, a transpose, the
  same pass again; float32 filter weights (support 3 × max(in/out, 1), normalised by their float32 sum), each
  output accumulated in float32 from 0.5 in tap order, then truncated to uint8 (so: round half up) after each
  pass. Pillow ≥ 4 computes the weights in double and accumulates integers.
* `transform_quad_bilinear`: Pillow 3.1.1 `libImaging/Geometry.c` (`quad_transform`, `bilinear_filter32RGB`):
  output pixel (x, y) samples the source at a0 + a1·x + a2·y + a3·x·y (pixel corners, in double; Pillow ≥ 4 adds
  0.5 to x and y), black outside [0, W) × [0, H), bilinear between pixel centres with the edge pixel repeated,
  truncated to uint8. `quad_data` is `Image.__transformer`'s QUAD coefficients as numpy 1.x computed them from
  the original's float32 corners (differences in float32, the products in double).
* `legacy_plan`: the original's crop arithmetic with numpy 1.x's promotion rules: landmarks and the quad in float32,
  a float32 scalar times a Python number in float64 (NEP 50 made that float32 in numpy 2), float32 arrays times a
  float64 scalar in float32.

The padding step (reflect, blur, fade to the median) is numpy/scipy code in the original too and is shared with
the reference renderer (`celebahq.render.pad_with_blur`; `pad_blur_legacy` adds the original's rounding to uint8).
`render_legacy` chains the steps; tests compare each function with hand-worked cases and with md5s of Pillow 3.1.1
itself (built from its sdist under Python 3.6).

Compiled kernels: the loops of `resize_antialias`, `transform_quad_bilinear` and `pad_blur_legacy` also exist in C
(celebahq/_native/legacy_pillow.c, built on first use by gancore.native without -ffast-math and with
-ffp-contract=off): per output value the same float32/double operations in the same order (scipy.ndimage's
`correlate1d` loop for the blur), so the same bytes, several times faster. Each function takes `native` (default
True: the compiled kernel when it can be built and passes its self-check against the numpy path on first use);
`native=False`, GANEVAL_NATIVE=0 or no C compiler give the numpy path. `kernel_status()` says which is used.
"""

from __future__ import annotations

import ctypes
import math
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from celebahq.render import pad_with_blur
from gancore.native import KernelSet

_F32 = np.float32


def _f32(value: float) -> float:
    """Round a Python float to float32 (a C `float` store) and return it as a Python float."""
    return float(_F32(value))


# ----------------------------------------------------------------------------------------------------------------
# Resample.c (Pillow 3.1.1): ANTIALIAS = LANCZOS, support 3


def _sinc(x: float) -> float:
    """`sinc_filter(float x)`: x = (float)(x·π); return (float)(sin(x) / x)."""
    if x == 0.0:
        return 1.0
    x = _f32(x * math.pi)
    return _f32(math.sin(x) / x)


def _lanczos(x: float) -> float:
    """`lanczos_filter(float x)`, every intermediate a C float."""
    if -3.0 <= x < 3.0:
        return _f32(_sinc(x) * _sinc(_f32(x / 3.0)))
    return 0.0


@lru_cache(maxsize=64)
def resample_coefficients(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pillow 3.1.1's LANCZOS weights for one axis: (first input index int64 [out], weights float32 [out, kmax]).

    Output o reads inputs first[o] + t for t < kmax with weights[o, t] (0 past the window's clipped end).
    """
    scale = _f32(_f32(in_size) / _f32(out_size))
    filterscale = max(scale, 1.0)
    support = _f32(3.0 * filterscale)
    kmax = math.ceil(support) * 2 + 1
    ss = _f32(1.0 / filterscale)
    first = np.zeros(out_size, dtype=np.int64)
    weights = np.zeros((out_size, kmax), dtype=np.float32)
    for out in range(out_size):
        center = _f32((out + 0.5) * scale)
        xmin = max(math.floor(_f32(center - support)), 0)
        xmax = min(math.ceil(_f32(center + support)), in_size)
        taps = [_f32(_lanczos(_f32((_f32(x - center) + 0.5) * ss)) * ss) for x in range(xmin, xmax)]
        total = _F32(0.0)
        for w in taps:
            total = _F32(total + _F32(w))
        if total != 0.0:
            taps = [_F32(w) / total for w in taps]
        first[out] = xmin
        weights[out, :len(taps)] = taps
    return first, weights


def _regular_span(first: np.ndarray, kmax: int, in_size: int) -> tuple[int, int, int]:
    """(lo, hi, step): outputs lo..hi-1 whose windows start at first[lo] + step·(o - lo) and lie inside the input,
    so each tap of them is one strided slice (an integer-factor downscale: all but a few outputs at the edges)."""
    if len(first) < 3:
        return 0, 0, 1
    step = int(np.bincount(np.diff(first).clip(0)).argmax())
    if step < 1:  # upscaling: windows advance by 0 or 1 input, no long regular run
        return 0, 0, 1
    inside = (first >= 0) & (first + kmax <= in_size)
    best, lo = (0, 0), None
    for o in range(len(first) + 1):
        if lo is not None and (o == len(first) or not inside[o] or first[o] - first[o - 1] != step):
            best, lo = max(best, (lo, o), key=lambda span: span[1] - span[0]), None
        if lo is None and o < len(first) and inside[o]:
            lo = o
    return best[0], best[1], step


def _resample_axis(image: np.ndarray, out_size: int, axis: int) -> np.ndarray:
    """One `ImagingResampleHorizontal` pass along `axis` (1: rows, the first pass; 0: columns, the second pass,
    which 3.1.1 runs on the transposed image) of uint8 [H, W, C]."""
    in_size = image.shape[axis]
    first, weights = resample_coefficients(in_size, out_size)
    kmax = weights.shape[1]
    lo, hi, step = _regular_span(first, kmax, in_size)
    shape = list(image.shape)
    shape[axis] = out_size
    acc = np.full(shape, 0.5, dtype=np.float32)
    span = [slice(None)] * 3
    span[axis] = slice(lo, hi)
    edge = np.r_[0:lo, hi:out_size]
    view = [None, None, None]
    view[axis] = slice(None)
    for tap in range(kmax):  # 3.1.1 adds the taps in this order, each product and sum rounded to float32
        w = weights[:, tap][tuple(view)]
        if hi > lo:
            start = first[lo] + tap
            src = [slice(None)] * 3
            src[axis] = slice(start, start + step * (hi - lo - 1) + 1, step)
            acc[tuple(span)] += image[tuple(src)].astype(np.float32) * w[tuple(span)]
        if len(edge):
            index = np.minimum(first[edge] + tap, in_size - 1)  # past the window the weight is 0
            part = np.take(image, index, axis=axis).astype(np.float32) * np.take(w, edge, axis=axis)
            edge_span = [slice(None)] * 3
            edge_span[axis] = edge
            acc[tuple(edge_span)] += part
    return np.clip(acc, 0.0, 255.0).astype(np.uint8)  # clip8: (int) truncation toward zero, then 0..255


def _native_resample_axis(kernel: ctypes.CDLL, image: np.ndarray, out_size: int, axis: int) -> np.ndarray:
    """`_resample_axis` in the compiled kernel (the same bytes). A pass along the columns runs along the rows of
    the transposed image (vectorised), then transposes back."""
    if axis == 1:
        return _native_transpose(kernel, _native_resample_axis(kernel, _native_transpose(kernel, image), out_size, 0))
    height, width, channels = image.shape
    first, weights = resample_coefficients(height, out_size)
    out = np.empty((out_size, width, channels), dtype=np.uint8)
    _check(kernel.legacy_resample_rows(_ptr(image), height, width * channels, _ptr(first), _ptr(weights),
                                       weights.shape[1], out_size, _ptr(out)))
    return out


def _native_transpose(kernel: ctypes.CDLL, image: np.ndarray) -> np.ndarray:
    """uint8 [H, W, C] -> [W, H, C], contiguous."""
    height, width, channels = image.shape
    out = np.empty((width, height, channels), dtype=np.uint8)
    _check(kernel.legacy_transpose(_ptr(image), height, width, channels, _ptr(out)))
    return out


def resize_antialias(image: np.ndarray, size: tuple[int, int], native: bool = True) -> np.ndarray:
    """Pillow 3.1.1 `Image.resize(size, ANTIALIAS)` of uint8 HWC (RGB) -> uint8 [size[1], size[0], C].

    Same size returns a copy (3.1.1 returns the image unchanged); otherwise both passes always run. native: the
    compiled kernel when available (the same bytes), else numpy."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    width, height = (int(v) for v in size)
    if (width, height) == (image.shape[1], image.shape[0]):
        return image.copy()
    kernel = _kernel() if native else None
    if kernel is None:
        return _resample_axis(_resample_axis(image, width, axis=1), height, axis=0)
    return _native_resample_axis(kernel, _native_resample_axis(kernel, image, width, axis=1), height, axis=0)


# ----------------------------------------------------------------------------------------------------------------
# Geometry.c (Pillow 3.1.1): transform(QUAD, BILINEAR)


def quad_data(corners: np.ndarray, width: int, height: int) -> tuple[float, ...]:
    """`Image.__transformer`'s 8 QUAD coefficients as Pillow 3.1.1 computed them from the original's data.

    corners: float32 [4, 2] NW, SW, SE, NE (the original's `quad + 0.5`); width, height: the output size.
    The corners are numpy float32 scalars there, so differences are float32 and `* As` (a Python float) double.
    """
    nw, sw, se, ne = np.asarray(corners, dtype=np.float32).reshape(4, 2)
    x0, y0 = nw
    as_, at = 1.0 / width, 1.0 / height
    return (float(x0), float(ne[0] - x0) * as_, float(sw[0] - x0) * at, float(se[0] - sw[0] - ne[0] + x0) * as_ * at,
            float(y0), float(ne[1] - y0) * as_, float(sw[1] - y0) * at, float(se[1] - sw[1] - ne[1] + y0) * as_ * at)


def _bilinear_rows(image: np.ndarray, xin: np.ndarray, yin: np.ndarray) -> np.ndarray:
    """`bilinear_filter32RGB` at source coordinates xin, yin (float64 [h, w]) -> uint8 [h, w, C]."""
    height, width, channels = image.shape
    inside = (xin >= 0.0) & (xin < width) & (yin >= 0.0) & (yin < height)
    xin, yin = xin - 0.5, yin - 0.5
    x, y = np.floor(xin), np.floor(yin)
    dx, dy = (xin - x)[..., None], (yin - y)[..., None]
    x, y = x.astype(np.int64), y.astype(np.int64)
    x0, x1 = np.clip(x, 0, width - 1), np.clip(x + 1, 0, width - 1)
    row0 = np.clip(y, 0, height - 1) * width
    # a missing next row (y + 1 outside the image) gives v2 = v1 in the C code: reading row y again does the same
    row1 = np.where((y + 1 >= 0) & (y + 1 < height), y + 1, np.clip(y, 0, height - 1)) * width
    flat = image.reshape(-1, channels)

    def along_x(row: np.ndarray) -> np.ndarray:
        a = np.take(flat, row + x0, axis=0).astype(np.float64)
        return a + (np.take(flat, row + x1, axis=0) - a) * dx

    v1 = along_x(row0)
    v = v1 + (along_x(row1) - v1) * dy
    v[~inside] = 0.0  # outside [0, W) x [0, H): the fill (black)
    return v.astype(np.uint8)  # (UINT8) v: truncation


def transform_quad_bilinear(image: np.ndarray, size: tuple[int, int], data: tuple[float, ...],
                            rows_per_block: int = 256, native: bool = True) -> np.ndarray:
    """Pillow 3.1.1 `Image.transform(size, QUAD, …, BILINEAR)` of uint8 HWC with the coefficients of `quad_data`.

    Returns uint8 [size[1], size[0], C]; in numpy computed in blocks of rows (bounded memory at 4096²). native: the
    compiled kernel when available (the same bytes)."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    width, height = (int(v) for v in size)
    a0, a1, a2, a3, a4, a5, a6, a7 = (float(v) for v in data)
    out = np.empty((height, width, image.shape[2]), dtype=np.uint8)
    kernel = _kernel() if native else None
    if kernel is not None:
        coefficients = np.array([a0, a1, a2, a3, a4, a5, a6, a7], dtype=np.float64)
        _check(kernel.legacy_quad_bilinear(_ptr(image), *image.shape, _ptr(coefficients), height, width, 0,
                                           _ptr(out)))
        return out
    x = np.arange(width, dtype=np.float64)[None, :]
    for top in range(0, height, rows_per_block):
        y = np.arange(top, min(top + rows_per_block, height), dtype=np.float64)[:, None]
        xin = a0 + a1 * x + a2 * y + a3 * x * y  # C's left-to-right order: ((a0 + a1x) + a2y) + (a3x)y
        yin = a4 + a5 * x + a6 * y + a7 * x * y
        out[top:top + len(y)] = _bilinear_rows(image, xin, yin)
    return out


# ----------------------------------------------------------------------------------------------------------------
# The original's crop arithmetic (numpy 1.x, float32 landmarks)


@dataclass(frozen=True)
class LegacyPlan:
    """The original `process_func`'s decisions for one photo, in its own number types.

    quad: float32 [4, 2] NW, SW, SE, NE in the pixels of the image that is finally transformed; shrunk_size,
    cropped (left, top, right, bottom) or None when the crop is the whole image, pad (left, top, right, bottom) or
    None; blur_sigma in upscaled pixels; resolution R (the original: 1024, rendered at 4R then resized to R).
    """

    quad: np.ndarray
    shrink: int
    shrunk_size: tuple[int, int]
    crop: tuple[int, int, int, int] | None
    superres: int
    pad: tuple[int, int, int, int] | None
    blur_sigma: float
    resolution: int


def _rot90(v: np.ndarray) -> np.ndarray:
    return np.array([-v[1], v[0]], dtype=np.float32)


def _oriented_quad(lm: np.ndarray) -> tuple[np.ndarray, float]:
    """Float32 quad [4, 2] and the float64 half-side product the original computes (its `np.hypot(*x) * 2`)."""
    eye_avg = (lm[0] + lm[1]) * _F32(0.5) + _F32(0.5)
    mouth_avg = (lm[3] + lm[4]) * _F32(0.5) + _F32(0.5)
    eye_to_eye = lm[1] - lm[0]
    eye_to_mouth = mouth_avg - eye_avg
    x = eye_to_eye - _rot90(eye_to_mouth)
    x = x / np.hypot(x[0], x[1])  # float32 / float32 scalar
    # numpy 1.x: float32 scalar * Python float -> float64; the float32 array * float64 scalar -> float32 loop.
    half = max(float(np.hypot(*eye_to_eye)) * 2.0, float(np.hypot(*eye_to_mouth)) * 1.8)
    x = x * _F32(half)
    y = _rot90(x)
    c = eye_avg + eye_to_mouth * _F32(0.1)
    quad = np.stack([c - x - y, c - x + y, c + x + y, c + x - y]).astype(np.float32)
    return quad, float(np.hypot(x[0], x[1])) * 2


def legacy_plan(landmarks, image_size: tuple[int, int], resolution: int = 1024) -> LegacyPlan:
    """The original crop decisions for CelebA's 5 landmarks [5, 2] (parsed to float32 as the original does) on a
    (W, H) photo. `resolution` replaces the original's 1024 (its 4096 becomes 4R); only 1024 is the official one."""
    lm = np.asarray(landmarks, dtype=np.float32).reshape(5, 2)
    width, height = (int(v) for v in image_size)
    quad, side = _oriented_quad(lm)
    zoom = resolution / side
    shrink = int(np.floor(0.5 / zoom))
    size = (width, height)
    if shrink > 1:
        size = (int(np.round(float(width) / shrink)), int(np.round(float(height) / shrink)))
        quad = (quad / _F32(shrink)).astype(np.float32)
        zoom *= shrink
    shrunk_size = size
    border = max(int(np.round(resolution * 0.1 / zoom)), 3)
    crop = (int(np.floor(min(quad[:, 0]))), int(np.floor(min(quad[:, 1]))),
            int(np.ceil(max(quad[:, 0]))), int(np.ceil(max(quad[:, 1]))))
    crop = (max(crop[0] - border, 0), max(crop[1] - border, 0), min(crop[2] + border, size[0]),
            min(crop[3] + border, size[1]))
    if crop[2] - crop[0] < size[0] or crop[3] - crop[1] < size[1]:
        size = (crop[2] - crop[0], crop[3] - crop[1])
        quad = (quad - np.array(crop[:2], dtype=np.float64)).astype(np.float32)
    else:
        crop = None
    superres = int(np.exp2(np.ceil(np.log2(zoom))))
    if superres > 1:
        size = (size[0] * superres, size[1] * superres)
        quad = (quad * _F32(superres)).astype(np.float32)
        zoom /= superres
    pad = (int(np.floor(min(quad[:, 0]))), int(np.floor(min(quad[:, 1]))),
           int(np.ceil(max(quad[:, 0]))), int(np.ceil(max(quad[:, 1]))))
    pad = (max(-pad[0] + border, 0), max(-pad[1] + border, 0), max(pad[2] - size[0] + border, 0),
           max(pad[3] - size[1] + border, 0))
    if max(pad) > border - 4:
        pad = tuple(int(p) for p in np.maximum(pad, int(np.round(resolution * 0.3 / zoom))))
        quad = (quad + np.array(pad[:2], dtype=np.float64)).astype(np.float32)
    else:
        pad = None
    return LegacyPlan(quad=quad, shrink=max(shrink, 1), shrunk_size=shrunk_size, crop=crop,
                      superres=max(superres, 1), pad=pad, blur_sigma=resolution * 0.02 / zoom,
                      resolution=int(resolution))


def render_legacy(image: np.ndarray, landmarks, resolution: int = 1024, native: bool = True) -> np.ndarray:
    """The original's pre-delta image: uint8 HWC RGB photo + 5 landmarks -> uint8 [R, R, 3] (the original stores
    it transposed to CHW before hashing: `image.transpose(2, 0, 1)`). native: the compiled kernels when available
    (the same bytes), else numpy."""
    image = np.ascontiguousarray(image)
    plan = legacy_plan(landmarks, (image.shape[1], image.shape[0]), resolution)
    if plan.shrink > 1:
        image = resize_antialias(image, plan.shrunk_size, native)
    if plan.crop is not None:
        left, top, right, bottom = plan.crop
        image = image[top:bottom, left:right]
    if plan.superres > 1:
        image = resize_antialias(image, (image.shape[1] * plan.superres, image.shape[0] * plan.superres), native)
    if plan.pad is not None:
        image = pad_blur_legacy(image, plan.pad, plan.blur_sigma, native)
    size = 4 * plan.resolution
    data = quad_data(plan.quad + _F32(0.5), size, size)
    kernel = _kernel() if native else None
    if kernel is not None:
        return _native_quad_then_resize(kernel, image, size, data, plan.resolution)
    image = transform_quad_bilinear(image, (size, size), data, native=False)
    return resize_antialias(image, (plan.resolution, plan.resolution), native=False)


def _native_quad_then_resize(kernel: ctypes.CDLL, image: np.ndarray, size: int, data: tuple[float, ...],
                             resolution: int) -> np.ndarray:
    """`transform_quad_bilinear` to size² then `resize_antialias` to resolution², compiled (the same bytes): the
    transform writes its output transposed, so the resize's column pass runs along rows without a transpose."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    coefficients = np.array(data, dtype=np.float64)
    transposed = np.empty((size, size, image.shape[2]), dtype=np.uint8)
    _check(kernel.legacy_quad_bilinear(_ptr(image), *image.shape, _ptr(coefficients), size, size, 1,
                                       _ptr(transposed)))
    columns_done = _native_transpose(kernel, _native_resample_axis(kernel, transposed, resolution, 0))
    return _native_resample_axis(kernel, columns_done, resolution, 0)


# ----------------------------------------------------------------------------------------------------------------
# The padding step with the original's rounding, and the compiled kernels


def pad_blur_legacy(image: np.ndarray, pad, blur_sigma: float, native: bool = True) -> np.ndarray:
    """The original's padding step on uint8 HWC: `render.pad_with_blur` of the float32 image (reflect pad
    (left, top, right, bottom), Gaussian blur σ = blur_sigma blended in, fade to the median), then
    uint8(clip(round(·), 0, 255)) with numpy's round half to even. native: the compiled kernel (scipy.ndimage's
    correlate1d loop in double, same bytes) when available."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    left, top, right, bottom = (int(p) for p in pad)
    kernel = _kernel() if native else None
    if kernel is None or min(left, top, right, bottom) < 0 or max(left, top, right, bottom) == 0 \
            or not blur_sigma > 1e-15:  # the cases the kernel leaves to numpy (an error, a copy, no blur)
        return np.uint8(np.clip(np.round(pad_with_blur(image.astype(np.float32), pad, blur_sigma)), 0, 255))
    padded = np.pad(image, ((top, bottom), (left, right), (0, 0)), mode="reflect")
    height, width, channels = padded.shape
    weights = gaussian_half_kernel(blur_sigma)
    radius = len(weights) - 1
    blurred = np.empty(padded.shape, dtype=np.float32)
    _check(kernel.legacy_gaussian_rows(_ptr(padded), height, width * channels, _ptr(weights), radius,
                                       _ptr(blurred)))
    _check(kernel.legacy_gaussian_cols(_ptr(blurred), height, width, channels, _ptr(weights), radius,
                                       _ptr(blurred)))
    pads = np.array([left, top, right, bottom], dtype=np.int64)
    _check(kernel.legacy_pad_blend(_ptr(padded), _ptr(blurred), height, width, channels, _ptr(pads), 0, None, None))
    median = np.empty(channels, dtype=np.float32)  # np.median(blurred, axis=(0, 1)), by a radix select
    _check(kernel.legacy_channel_median(_ptr(blurred), height * width, channels, _ptr(median)))
    out = np.empty(padded.shape, dtype=np.uint8)
    _check(kernel.legacy_pad_blend(_ptr(padded), _ptr(blurred), height, width, channels, _ptr(pads), 1,
                                   _ptr(median), _ptr(out)))
    return out


def gaussian_half_kernel(sigma: float) -> np.ndarray:
    """scipy.ndimage.gaussian_filter's weights (truncate 4) at distances 0 … radius: float64 [radius + 1], the
    formula of scipy's `_gaussian_kernel1d` (normalised by numpy's sum over the whole window)."""
    sigma = float(sigma)
    radius = int(4.0 * sigma + 0.5)
    x = np.arange(-radius, radius + 1)
    phi = np.exp(-0.5 / (sigma * sigma) * x ** 2)
    phi = phi / phi.sum()
    return np.ascontiguousarray(phi[radius:])


_KERNELS = KernelSet(Path(__file__).resolve().parent / "_native")
_KERNEL_NAME = "legacy_pillow"
_KERNEL_LOCK = threading.RLock()  # re-entered by the self-check, which runs the public functions
_kernel_library = {}  # "library": the checked ctypes library, or None once it is known to be unusable
_SIGNATURES = {  # argument kinds: p pointer, i int64, d int (stage)
    "legacy_resample_rows": "piippiip",
    "legacy_transpose": "piiip",
    "legacy_quad_bilinear": "piiipiidp",
    "legacy_gaussian_rows": "piipip",
    "legacy_gaussian_cols": "piiipip",
    "legacy_pad_blend": "ppiiipdpp",
    "legacy_channel_median": "piip",
}


def _ptr(array: np.ndarray) -> int:
    return array.ctypes.data


def _check(code: int) -> None:
    if code != 0:
        raise MemoryError("celebahq legacy kernel: out of memory for its scratch buffers")


_UNSET = object()


def _kernel() -> ctypes.CDLL | None:
    """The compiled celebahq/_native/legacy_pillow.c, or None (numpy path). On first use it is built and every
    function is checked against the numpy path on small images; one differing byte turns it off for the process
    (the reason in `kernel_status()`)."""
    with _KERNEL_LOCK:
        if "library" not in _kernel_library:
            library = _KERNELS.load(_KERNEL_NAME)
            if library is not None:
                kinds = {"p": ctypes.c_void_p, "i": ctypes.c_int64, "d": ctypes.c_int}
                for name, signature in _SIGNATURES.items():
                    function = getattr(library, name)
                    function.argtypes = [kinds[k] for k in signature]
                    function.restype = ctypes.c_int
                problem = _self_check(library)
                if problem:
                    _KERNELS.disable(_KERNEL_NAME, f"self-check failed: {problem} differs from the numpy path")
                    library = None
            _kernel_library["library"] = library
        return _kernel_library["library"]


def _self_check(library: ctypes.CDLL) -> str | None:
    """The first stage whose compiled bytes differ from numpy's on small random images, or None."""
    previous = _kernel_library.get("library", _UNSET)
    _kernel_library["library"] = library  # the functions below take the compiled path while this runs
    try:
        image = np.random.RandomState(0).randint(0, 256, (29, 37, 3)).astype(np.uint8)
        corners = np.float32([[3.2, -2.7], [1.1, 30.3], [35.9, 27.4], [36.6, 0.4]]) + _F32(0.5)
        data, square = quad_data(corners, 64, 48), quad_data(corners, 64, 64)
        checks = {
            "resize": lambda native: resize_antialias(image, (13, 80), native),
            "quad transform": lambda native: transform_quad_bilinear(image, (64, 48), data, native=native),
            "quad transform and resize": lambda native: (
                _native_quad_then_resize(library, image, 64, square, 16) if native else
                resize_antialias(transform_quad_bilinear(image, (64, 64), square, native=False), (16, 16), False)),
            "pad blur": lambda native: pad_blur_legacy(image, (5, 7, 3, 40), 2.6, native),
        }
        for stage, run in checks.items():
            if not np.array_equal(run(True), run(False)):
                return stage
        return None
    finally:  # whatever was loaded before (a direct call must not drop an already checked library)
        if previous is _UNSET:
            del _kernel_library["library"]
        else:
            _kernel_library["library"] = previous


def kernel_status() -> str:
    """One line: the compiled kernel in use for the legacy render, or why numpy is used."""
    _kernel()
    return _KERNELS.status(_KERNEL_NAME)
