"""The fast render backend: torch on any device, emulating Pillow's arithmetic (celebahq/render/__init__.py)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from celebahq.geometry import CropPlan, quad_coefficients
from gancore.runtime import host_to_device

from .common import Upscale, apply_upscale, check_downscale, check_image, plan_for, shrunk_crop

# Rounding guard for the emulated uint8 truncation of PIL's bilinear filter: float32 weights that should sum to 1
# make 255 into 254.99998; PIL computes in double.
_TRUNCATE_EPS = 1e-3


@dataclass(frozen=True)
class DeviceUpscale:
    """A super-resolution stage that runs on tensors: `function(x, factor)`, x float32 [3, H, W] with uint8
    values on the render's device -> float32 [3, factor·H, factor·W] with uint8 values on the same device."""

    function: Callable[[torch.Tensor, int], torch.Tensor]


def _apply_device_upscale(upscale: DeviceUpscale, x: torch.Tensor, factor: int) -> torch.Tensor:
    out = upscale.function(x, factor)
    expected = (3, x.shape[1] * factor, x.shape[2] * factor)
    if tuple(out.shape) != expected or out.device != x.device:
        raise ValueError(f"device upscale must return {expected} on {x.device}; got {tuple(out.shape)} on {out.device}")
    return out.to(torch.float32)




def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@contextmanager
def _exact_float32():
    """Disable TF32 in cuDNN convolutions (on by default) and in float32 matrix products (off by default, on after
    `torch.set_float32_matmul_precision("high")`): it would cost up to ~0.3 grey levels per pass."""
    old, old_matmul = torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision()
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = old
        torch.set_float32_matmul_precision(old_matmul)


def _lanczos(x: np.ndarray) -> np.ndarray:
    out = np.sinc(x) * np.sinc(x / 3.0)
    return np.where((x >= -3.0) & (x < 3.0), out, 0.0)


def _box(x: np.ndarray) -> np.ndarray:
    return ((x > -0.5) & (x <= 0.5)).astype(np.float64)


_FILTERS = {"lanczos": (3.0, _lanczos), "box": (0.5, _box)}


def _round_clip(x: torch.Tensor) -> torch.Tensor:
    """PIL's 8-bit store after a resampling pass: round half up, clip to [0, 255]."""
    return torch.floor(x + 0.5).clamp_(0.0, 255.0)


def _conv_rows(x: torch.Tensor, weight: torch.Tensor, pad_left: int, pad_right: int, stride: int) -> torch.Tensor:
    """Correlate every row of x [M, n] with weight [P, K] (zero padding), normalised by the weight that lies inside
    the row (what PIL does where the image edge cuts a filter window). Returns [M, P, n_out]."""
    n = x.shape[-1]
    if pad_left == pad_right:  # the convolution pads by itself: no padded copy of x (200 MB for a 4096² canvas)
        out = F.conv1d(x[:, None], weight[:, None], stride=stride, padding=pad_left)
    else:
        out = F.conv1d(F.pad(x[:, None], (pad_left, pad_right)), weight[:, None], stride=stride)
    ones = F.pad(torch.ones(1, 1, n, dtype=x.dtype, device=x.device), (pad_left, pad_right))
    norm = F.conv1d(ones, weight[:, None], stride=stride)
    return out.div_(norm)


def _resample_last_dim(x: torch.Tensor, factor: int, up: bool, filter_name: str, dense: bool = False) -> torch.Tensor:
    """PIL's resample along the last dimension of x [..., n], by an integer factor, float in and out (no rounding).

    dense=True computes the same sums as batched matrix products over blocks of the row (`_banded_rows`) instead
    of a strided convolution."""
    shape = x.shape
    rows = x.reshape(-1, shape[-1])
    n = shape[-1]
    weight, first = _resample_taps(factor, up, filter_name, x.dtype, x.device)
    taps = weight.shape[1]
    if up:
        if dense:
            return _normalised_banded_rows(rows, weight, first, 1, n * factor).reshape(*shape[:-1], n * factor)
        out = _conv_rows(rows, weight, -first, first + taps - 1, 1)  # [M, f, n]
        return out.transpose(1, 2).reshape(*shape[:-1], n * factor)
    if n % factor:
        raise ValueError(f"downscale by {factor} needs a multiple of {factor}; got {n}")
    n_out = n // factor
    if dense:
        return _normalised_banded_rows(rows, weight, first, factor, n_out).reshape(*shape[:-1], n_out)
    pad_right = max(factor * (n_out - 1) + taps - n + first, 0)
    out = _conv_rows(rows, weight, -first, pad_right, factor)[:, 0, :n_out]
    return out.reshape(*shape[:-1], n_out)


@functools.lru_cache(maxsize=64)
def _resample_taps(factor: int, up: bool, filter_name: str, dtype: torch.dtype,
                   device: torch.device) -> tuple[torch.Tensor, int]:
    """PIL's integer-factor resample as taps on `device` (made once per process): (weights [P, K], first) where
    output o = P·i + p (P = factor phases up, 1 down) sums inputs step·i + first + k with weight [p, k], step 1 up
    and `factor` down (before the normalisation by the weight inside the row)."""
    support, fn = _FILTERS[filter_name]
    if up:
        # output o = f·i + p has centre i + (p + 0.5)/f; taps i + k with weight filter(k + 0.5 - (p + 0.5)/f).
        centres = (np.arange(factor) + 0.5) / factor
        k_min = int(np.floor(centres.min() - support + 0.5))
        k_max = int(np.floor(centres.max() + support + 0.5)) - 1
        k = np.arange(k_min, k_max + 1)
        lo = np.floor(centres - support + 0.5)[:, None]
        hi = np.floor(centres + support + 0.5)[:, None]
        weight, first = np.where((k >= lo) & (k < hi), fn(k + 0.5 - centres[:, None]), 0.0), k_min
    else:
        # output o has centre f·o + f/2; taps f·o + j with weight filter((j + 0.5 - f/2) / f).
        scaled = support * factor
        first = int(np.floor(factor / 2 - scaled + 0.5))
        j = np.arange(first, int(np.floor(factor / 2 + scaled + 0.5)))
        weight = fn((j + 0.5 - factor / 2) / factor)[None]
        if first > 0:
            raise AssertionError("filter window does not start at or before its output")
    return host_to_device(weight, device, dtype), first


_BAND_BLOCK = 256  # positions per block of `_banded_rows`: an output multiplies step·(block − 1) + taps inputs


def _banded_rows(rows: torch.Tensor, weight: torch.Tensor, first: int, step: int, n_out: int) -> torch.Tensor:
    """rows [M, n] -> [M, n_out]: output o = P·i + p (P = weight's rows, the phases) is Σ_k rows[step·i + first + k]
    · weight[p, k], inputs outside 0 … n−1 counting as zero (a zero-padded strided correlation, `_conv_rows`' sums
    before its normalisation).

    Computed as one batched matrix product: the row cut into blocks of `_BAND_BLOCK` positions i (overlapping
    views), each block times the same banded [span, P·block] matrix. cuBLAS has no per-shape planning (cuDNN plans
    every new shape, ~0.5 ms of host time: the rows' lengths change with every photo), and a block's band holds
    span − taps zeros per column where an [n, n_out] matrix would multiply n − taps per output (the padding blur:
    230 GFLOP per source that way, 40 in blocks; counted by benchmarks/render_flops.py)."""
    phases, taps = weight.shape
    positions = -(-n_out // phases)
    block = min(_BAND_BLOCK, positions)
    blocks = -(-positions // block)
    span = step * (block - 1) + taps
    length = step * block * (blocks - 1) + span  # the zero-padded row the blocks cover, from input index `first`
    padded = F.pad(rows, (-first, length + first - rows.shape[-1]))  # a negative pad crops
    band = _band_matrix(span, phases * block, weight, step)
    with _exact_float32():
        out = padded.unfold(-1, span, step * block) @ band  # [M, blocks, P·block]
    return out.reshape(rows.shape[0], -1)[:, :n_out]


def _normalised_banded_rows(rows: torch.Tensor, weight: torch.Tensor, first: int, step: int,
                            n_out: int) -> torch.Tensor:
    """`_banded_rows` divided by the weight that lies inside the row (PIL's edge rule, as `_conv_rows`)."""
    inside = _banded_rows(torch.ones((1, rows.shape[-1]), dtype=rows.dtype, device=rows.device), weight, first,
                          step, n_out)
    return _banded_rows(rows, weight, first, step, n_out).div_(inside)


def _band_matrix(n: int, n_out: int, weight: torch.Tensor, step: int) -> torch.Tensor:
    """[n, n_out] on weight's device: output o = P·i + p (P = weight's rows, the phases) has taps at inputs
    step·i + k with weights weight[p, k] (taps past n − 1 dropped), built on the device."""
    phases, taps = weight.shape
    per_phase = n_out // phases
    padded = torch.zeros((max(n, step * (per_phase - 1) + taps), n_out), dtype=weight.dtype, device=weight.device)
    for p in range(phases):  # element (step·i + k, P·i + p) of the padded matrix, for all i and k at once
        padded.as_strided((per_phase, taps), (step * n_out + phases, n_out), p).copy_(weight[p])
    return padded[:n]


_PRECISION_BITS = 22  # Pillow's fixed-point weights for 8-bit images (32 - 8 - 2)


def pillow_weights(n_in: int, n_out: int, filter_name: str = "lanczos") -> np.ndarray:
    """Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` as a dense float64 matrix [n_in, n_out]: column o holds
    output o's weights, each an integer (22-bit fixed point, i.e. the weight × 2²²), so that a pass over uint8 values
    is exact in float64. Window: centre (o + 0.5)·in/out, support scaled by max(in/out, 1), taps that the image
    edge cuts off are dropped and the rest normalised to sum 1 before the rounding to fixed point."""
    support, fn = _FILTERS[filter_name]
    scale = n_in / n_out
    filter_scale = max(scale, 1.0)
    reach = support * filter_scale
    centre = (np.arange(n_out) + 0.5) * scale  # all outputs at once: [n_out] windows of ≤ `width` taps
    first = np.maximum((centre - reach + 0.5).astype(np.int64), 0)  # astype truncates toward 0, as C's (int)
    stop = np.minimum((centre + reach + 0.5).astype(np.int64), n_in)
    width = int((stop - first).max())
    inputs = first[:, None] + np.arange(width)
    inside = inputs < stop[:, None]
    taps = np.where(inside, fn((inputs - centre[:, None] + 0.5) / filter_scale), 0.0)
    total = taps.sum(axis=1, keepdims=True)
    taps = np.divide(taps, total, out=taps.copy(), where=total != 0)
    fixed = np.trunc(taps * (1 << _PRECISION_BITS) + np.where(taps < 0, -0.5, 0.5))
    matrix = np.zeros((n_in, n_out))
    outputs = np.broadcast_to(np.arange(n_out)[:, None], inputs.shape)
    matrix[inputs[inside], outputs[inside]] = fixed[inside]
    return matrix


def _pillow_pass(x: torch.Tensor, n_out: int, filter_name: str) -> torch.Tensor:
    """One 8-bit Pillow pass along the last dimension of x [..., n] (uint8 values): [..., n_out], uint8 values."""
    weights = host_to_device(pillow_weights(x.shape[-1], n_out, filter_name), x.device)
    sums = x.to(torch.float64) @ weights + (1 << (_PRECISION_BITS - 1))
    return torch.floor(sums * (1.0 / (1 << _PRECISION_BITS))).clamp_(0.0, 255.0).to(x.dtype)


def resize_pillow_torch(x: torch.Tensor, size: tuple[int, int], filter_name: str = "lanczos") -> torch.Tensor:
    """`PIL.Image.resize(size, LANCZOS | BOX)` of uint8-valued images x [..., H, W] (float, any device) to
    size = (width, height), any ratio: upstream Pillow's two 8-bit passes (horizontal first), each bit-exact
    (float64 sums of fixed-point integers). Returns x's dtype with integer values 0–255 on x's device."""
    if filter_name not in _FILTERS:
        raise ValueError(f"unknown filter {filter_name!r}")
    width, height = (int(v) for v in size)
    if width < 1 or height < 1:
        raise ValueError(f"resize to {size}: sides must be ≥ 1")
    if width != x.shape[-1]:
        x = _pillow_pass(x, width, filter_name)
    if height != x.shape[-2]:
        x = _pillow_pass(x.transpose(-1, -2), height, filter_name).transpose(-1, -2)
    return x.contiguous()


def shrink_and_crop_tensor(x: torch.Tensor, plan: CropPlan) -> tuple[torch.Tensor, CropPlan]:
    """`shrink_and_crop` on the device: float [3, H, W] with uint8 values (the whole photo `plan` is for) ->
    (float [3, h, w] on the same device, the plan for it)."""
    if tuple(x.shape[1:]) != tuple(plan.image_size)[::-1]:
        raise ValueError(f"the plan is for a {plan.image_size} image; got {tuple(x.shape)}")
    if plan.shrink > 1:
        x = resize_pillow_torch(x, plan.shrunk_size, "lanczos")
    left, top, right, bottom = plan.crop
    return x[:, top:bottom, left:right], plan.after_crop()


def resize_torch(x: torch.Tensor, factor: int, up: bool, filter_name: str = "lanczos",
                 varied_shapes: bool = False) -> torch.Tensor:
    """Pillow-exact (to rounding) integer-factor resize of uint8-valued float images [..., H, W]:
    horizontal pass, 8-bit rounding, vertical pass, 8-bit rounding. Returns float with integer values.

    varied_shapes=True (a photo's own size, new for nearly every call): off the CPU each pass is a batched matrix
    product over blocks of the rows (`_banded_rows`) instead of a convolution, for which cuDNN would build a plan
    per new shape (~2 ms of host time each, measured on an H200); the same sums to float rounding."""
    if filter_name not in _FILTERS:
        raise ValueError(f"unknown filter {filter_name!r}")
    if factor == 1:
        return x
    dense = varied_shapes and x.device.type != "cpu"
    with _exact_float32():
        x = _round_clip(_resample_last_dim(x, factor, up, filter_name, dense))
        x = _round_clip(_resample_last_dim(x.transpose(-1, -2), factor, up, filter_name, dense)).transpose(-1, -2)
    return x.contiguous()


def _reflect_index(index: torch.Tensor, n: int) -> torch.Tensor:
    """numpy 'reflect' (edge not repeated), periodic for pads longer than the image."""
    if n == 1:
        return torch.zeros_like(index)
    period = 2 * (n - 1)
    m = torch.remainder(index, period)
    return torch.where(m < n, m, period - m)


def _symmetric_index(index: torch.Tensor, n: int) -> torch.Tensor:
    """scipy.ndimage 'reflect' (edge repeated), periodic for windows longer than the image."""
    period = 2 * n
    m = torch.remainder(index, period)
    return torch.where(m < n, m, period - 1 - m)


def _correlate_rows(rows: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """'valid' correlation of every row of [M, L] with a 1-D kernel [K] → float32 [M, L - K + 1] (no TF32), as
    batched matrix products over blocks of the rows (`_banded_rows`): float32 sums as a convolution's, without
    cuDNN's planning for every new shape (~0.5 ms of host time; cuFFT's ~25 ms: measured on an H200, where the
    blur's row lengths vary with every photo)."""
    length = rows.shape[-1]
    return _banded_rows(rows.to(torch.float32), kernel.to(torch.float32)[None], 0, 1, length - kernel.shape[-1] + 1)


def gaussian_blur_torch(img: torch.Tensor, sigma: float, use_opencv: bool = True) -> torch.Tensor:
    """scipy.ndimage.gaussian_filter(img, [σ, σ, 0]) (mode 'reflect', truncate 4) of a CHW float tensor.

    On the CPU this hands the work to OpenCV's separable filter (same kernel, same mirror mode, several times faster
    than torch for kernels of ~100 taps; `use_opencv=False` turns it off); elsewhere two 1-D correlations
    (`_correlate_rows`: float32 sums and storage, as scipy stores between its passes)."""
    if sigma <= 0:
        return img.clone()
    radius = int(4.0 * sigma + 0.5)
    taps = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 / sigma**2 * taps.astype(np.float64) ** 2)
    kernel = kernel / kernel.sum()
    channels, height, width = img.shape
    if use_opencv and img.device.type == "cpu" and img.dtype == torch.float32 and channels <= 4:
        return _gaussian_blur_opencv(img, kernel)
    kernel = host_to_device(kernel, img.device)
    rows = _symmetric_index(torch.arange(-radius, height + radius, device=img.device), height)
    cols = _symmetric_index(torch.arange(-radius, width + radius, device=img.device), width)
    # scipy filters axis 0 (H) first, storing float32 in between
    out = img[:, rows].transpose(1, 2).reshape(channels * width, -1)
    out = _correlate_rows(out, kernel).reshape(channels, width, height).transpose(1, 2)
    out = out[:, :, cols].reshape(channels * height, -1)
    return _correlate_rows(out, kernel).reshape(channels, height, width)


def _gaussian_blur_opencv(img: torch.Tensor, kernel: np.ndarray) -> torch.Tensor:
    """gaussian_blur_torch of a float32 CHW CPU tensor (≤ 4 channels) by cv2.sepFilter2D (BORDER_REFLECT)."""
    channels, height, width = img.shape
    hwc = np.ascontiguousarray(img.permute(1, 2, 0).numpy())
    k32 = kernel.astype(np.float32)
    out = cv2.sepFilter2D(hwc, cv2.CV_32F, k32, k32, borderType=cv2.BORDER_REFLECT)
    return torch.from_numpy(out.reshape(height, width, channels)).permute(2, 0, 1).contiguous()


def _median(values: torch.Tensor) -> torch.Tensor:
    """np.median over the last dimension of [C, n] (mean of the two middle values for even n)."""
    n = values.shape[-1]
    if values.device.type != "cpu":  # a full sort is ~40× faster than torch.median / kthvalue on CUDA
        ordered = torch.sort(values, dim=-1).values
        return (ordered[:, (n - 1) // 2] + ordered[:, n // 2]) * 0.5
    lower = torch.median(values, dim=-1).values  # the (n + 1) // 2-th smallest
    if n % 2:
        return lower
    # the (n/2 + 1)-th smallest: `lower` again if it occurs often enough, else the next larger value
    repeated = (values <= lower[:, None]).sum(dim=-1) >= n // 2 + 1
    above = torch.where(values > lower[:, None], values, torch.full_like(values, float("inf"))).amin(dim=-1)
    return (lower + torch.where(repeated, lower, above)) * 0.5


def pad_with_blur_torch(img: torch.Tensor, pad: Sequence[int], blur_sigma: float) -> torch.Tensor:
    """`pad_with_blur` for a float32 CHW tensor on any device (same arithmetic, float32)."""
    left, top, right, bottom = (int(p) for p in pad)
    if min(left, top, right, bottom) < 0:
        raise ValueError(f"pads must be non-negative; got {tuple(pad)}")
    if max(left, top, right, bottom) == 0:
        return img.clone()
    _, height, width = img.shape
    rows = _reflect_index(torch.arange(-top, height + bottom, device=img.device), height)
    cols = _reflect_index(torch.arange(-left, width + right, device=img.device), width)
    img = img[:, rows[:, None], cols[None, :]]  # one gather
    _, height, width = img.shape
    # 1 − the smallest of the four distance ratios: the two of each axis along that axis, then one [H, W] minimum
    nearest = []
    for length, before, after in ((height, top, bottom), (width, left, right)):
        position = torch.arange(length, device=img.device, dtype=torch.float32)
        ratio = torch.full((length,), float("inf"), device=img.device)
        for term, p in ((position, before), (length - 1 - position, after)):
            if p > 0:
                ratio = torch.minimum(ratio, term / p)
        nearest.append(ratio)
    mask = torch.minimum(nearest[0][:, None], nearest[1][None, :]).neg_().add_(1.0)
    # img + (blur − img)·clamp(3·mask + 1), then img + (median − img)·clamp(mask): in place, the same sums
    img = gaussian_blur_torch(img, blur_sigma).sub_(img).mul_(mask.mul(3.0).add_(1.0).clamp_(0.0, 1.0)).add_(img)
    median = _median(img.reshape(img.shape[0], -1))
    return (median[:, None, None] - img).mul_(mask.clamp_(0.0, 1.0)).add_(img)


def _sampling_grid(plan: CropPlan, canvas_hw: tuple[int, int], device: torch.device) -> tuple[torch.Tensor, ...]:
    """grid_sample grid [4R, 4R, 2] reproducing PIL's QUAD + BILINEAR on a (H, W) canvas, and the in-image mask."""
    size = plan.render_size
    a = quad_coefficients(plan.quad + 0.5, size)
    centres = torch.arange(size, device=device, dtype=torch.float64) + 0.5
    width, height = plan.padded_size
    canvas_h, canvas_w = canvas_hw
    coords = []
    for (c0, cx, cy, cxy), extent in ((a[:4], canvas_w), (a[4:], canvas_h)):
        # continuous source coordinate c0 + cx X + cy Y + cxy X Y, then normalised for align_corners=False
        # (-1 .. 1 spans the canvas edges, so pixel k's centre is at k + 0.5 as in PIL). The bilinear term is 0 for
        # the recipe's squares; separable sums keep the [4R, 4R] work to one add.
        along_x = ((c0 + cx * centres) * (2.0 / extent) - 1.0).to(torch.float32)
        along_y = (cy * centres * (2.0 / extent)).to(torch.float32)
        coord = along_x[None, :] + along_y[:, None]
        if abs(cxy) * size * size > 1e-9:
            coord = coord + (cxy * (2.0 / extent) * centres[:, None] * centres[None, :]).to(torch.float32)
        coords.append(coord)
    grid = torch.stack(coords, dim=-1)
    # PIL returns black outside [0, W) × [0, H) of the image (not the canvas)
    sx = (grid[..., 0] + 1.0) * (canvas_w / 2.0)
    sy = (grid[..., 1] + 1.0) * (canvas_h / 2.0)
    inside = (sx >= 0) & (sx < width) & (sy >= 0) & (sy < height)
    return grid, inside


def _cropped_on_device(image: np.ndarray | torch.Tensor, plan: CropPlan, upscale: Upscale | DeviceUpscale | None,
                       device: torch.device) -> torch.Tensor:
    """Steps 4–5 (and a host upscale, which needs host pixels) for one image: float32 CHW on `device`."""
    on_host = upscale is not None and not isinstance(upscale, DeviceUpscale) and plan.superres > 1
    if isinstance(image, torch.Tensor):
        x, _ = shrink_and_crop_tensor(image.to(device=device, dtype=torch.float32), plan)
        if not on_host:
            return x
        image, plan = x.permute(1, 2, 0).to(torch.uint8).cpu().numpy(), plan.after_crop()
    img = shrunk_crop(image, plan)
    if on_host:
        img = apply_upscale(upscale, img, plan.superres)
    pixels = np.require(img, requirements=("C", "W"))  # PIL's arrays are read-only; torch wants writable ones
    return host_to_device(pixels, device).permute(2, 0, 1).to(torch.float32)


def _prepare_torch(image: np.ndarray | torch.Tensor, plan: CropPlan, upscale: Upscale | DeviceUpscale | None,
                   device: torch.device) -> torch.Tensor:
    """Steps 4–7 for one image: float32 CHW tensor with uint8 values on `device`, the image that is rendered."""
    x = _cropped_on_device(image, plan, upscale, device)
    if plan.superres > 1 and isinstance(upscale, DeviceUpscale):
        x = _apply_device_upscale(upscale, x, plan.superres)
    elif plan.superres > 1 and upscale is None:
        x = resize_torch(x, plan.superres, up=True, filter_name="lanczos", varied_shapes=True)
    if plan.padded:
        x = torch.round(pad_with_blur_torch(x, plan.pad, plan.blur_sigma)).clamp_(0.0, 255.0)
    if tuple(x.shape[1:]) != plan.padded_size[::-1]:
        raise AssertionError(f"prepared image {tuple(x.shape)} does not match the plan's {plan.padded_size}")
    return x


def render_torch(
    images: Sequence[np.ndarray],
    plans_or_landmarks: Sequence,
    resolution: int = 1024,
    upscale: Upscale | DeviceUpscale | None = None,
    downscale: str = "lanczos",
    device: torch.device | str | None = None,
) -> list[np.ndarray]:
    """Fast render of a batch: uint8 RGB images [H, W, 3] + (CropPlan or CelebA 5 landmarks) each → uint8 [R, R, 3].

    The host-array form of `render_torch_tensor` (same arguments)."""
    out = render_torch_tensor(images, plans_or_landmarks, resolution, upscale, downscale, device)
    return list(out.permute(0, 2, 3, 1).cpu().numpy())


def render_torch_tensor(
    images: Sequence[np.ndarray | torch.Tensor],
    plans_or_landmarks: Sequence,
    resolution: int = 1024,
    upscale: Upscale | DeviceUpscale | None = None,
    downscale: str = "lanczos",
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Fast render of a batch: uint8 RGB images [H, W, 3] + (CropPlan or CelebA 5 landmarks) each → uint8 tensor
    [N, 3, R, R] on `device` (stays there: a quality score or an encoder can use it without a copy).

    Same arguments and result as `render_pil` (to rounding). An image may also be a [3, H, W] tensor (uint8, or
    float with uint8 values) on any device: its shrink (`resize_pillow_torch`) and crop then run on `device` too, so
    a photo cleaned up on the GPU never visits the host. upscale=None is PIL's Lanczos emulated in torch on
    `device`; a plain callable runs on the host (uint8 HWC arrays); a `DeviceUpscale` runs on `device` (float CHW
    tensors: no host round trip). Everything runs on `device` (default: CUDA when available), one image at a
    time, so each photo's pixels are independent of its batch and memory holds one 4R × 4R canvas: 8 photos at
    R = 1024 on the CPU peak at 1.6–1.7 GiB RSS (10.4–10.5 GiB when a batch's canvases were held together; the
    same bytes out; `benchmarks/render_memory.py`).
    Speed: docs/celebahq.md, "On one GPU" (the build's draw stage).
    """
    check_downscale(downscale)
    if len(images) != len(plans_or_landmarks):
        raise ValueError(f"{len(images)} images but {len(plans_or_landmarks)} plans/landmarks")
    device = torch.device(device) if device is not None else _default_device()
    if not images:
        return torch.empty((0, 3, resolution, resolution), dtype=torch.uint8, device=device)
    images = [check_image(image) for image in images]
    plans = [plan_for(image, p, resolution) for image, p in zip(images, plans_or_landmarks)]
    if len({plan.resolution for plan in plans}) != 1:
        raise ValueError("all plans of one call must share the output resolution")
    # One image at a time from its photo to its output (a 4R × 4R canvas is plenty of work for a GPU and 200 MB at
    # R = 1024): memory holds one canvas, not the batch's, and a photo's pixels cannot depend on its batch.
    side = plans[0].resolution  # a CropPlan given instead of landmarks carries its own
    out = torch.empty((len(images), 3, side, side), dtype=torch.uint8, device=device)
    for index, (image, plan) in enumerate(zip(images, plans)):
        out[index] = _draw(_prepare_torch(image, plan, upscale, device), plan, downscale)[0]
    return out


def _draw(x: torch.Tensor, plan: CropPlan, downscale: str) -> torch.Tensor:
    """Steps 8–9 on one prepared image x (float32 [3, H, W], uint8 values): the 4R × 4R bilinear sample of the
    quad (PIL's QUAD transform) truncated to uint8 values, then the 4× downscale -> float [1, 3, R, R]."""
    grid, mask = _sampling_grid(plan, (x.shape[1], x.shape[2]), x.device)
    canvas = F.grid_sample(x[None], grid[None], mode="bilinear", padding_mode="border", align_corners=False)
    del grid
    canvas.add_(_TRUNCATE_EPS).floor_().mul_(mask)  # PIL truncates to uint8 (in place: one 4R × 4R buffer)
    return resize_torch(canvas, 4, up=False, filter_name=downscale)
