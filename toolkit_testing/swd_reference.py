"""A slow, obvious NumPy/SciPy SWD written from the spec (original-implementation.md, section 1).

Used only by the tests and the benchmark as the independent reference; loops where the math is clearer.
"""

from __future__ import annotations

import numpy as np
import scipy.ndimage

KERNEL = np.outer([1, 4, 6, 4, 1], [1, 4, 6, 4, 1]).astype(np.float32) / 256.0


def pyr_down(images: np.ndarray) -> np.ndarray:
    """float32 NCHW: 5×5 binomial convolution with 'mirror' borders (= reflect-101), then even rows/cols."""
    blurred = scipy.ndimage.convolve(images, KERNEL[None, None], mode="mirror")
    return blurred[:, :, ::2, ::2]


def pyr_up(images: np.ndarray) -> np.ndarray:
    """float32 NCHW: zero-stuffing to twice the size, then convolution with 4× the kernel, 'mirror' borders."""
    n, c, h, w = images.shape
    stuffed = np.zeros((n, c, 2 * h, 2 * w), dtype=np.float32)
    stuffed[:, :, ::2, ::2] = images
    return scipy.ndimage.convolve(stuffed, 4 * KERNEL[None, None], mode="mirror")


def laplacian_pyramid(images: np.ndarray, num_levels: int) -> list[np.ndarray]:
    levels = [images.astype(np.float32)]
    for _ in range(num_levels - 1):
        levels.append(pyr_down(levels[-1]))
        levels[-2] = levels[-2] - pyr_up(levels[-1])
    return levels


def descriptors(level: np.ndarray, rows: np.ndarray, cols: np.ndarray, size: int = 7) -> np.ndarray:
    """[B·P, C·7·7] patches in (channel, row, column) order, top-left corners rows/cols [B, P]."""
    out = []
    for b in range(level.shape[0]):
        for p in range(rows.shape[1]):
            r, c = rows[b, p], cols[b, p]
            out.append(level[b, :, r:r + size, c:c + size].reshape(-1))
    return np.array(out, dtype=np.float32)


def normalize(desc: np.ndarray, channels: int = 3) -> np.ndarray:
    view = desc.reshape(desc.shape[0], channels, -1).astype(np.float64)
    mean = view.mean(axis=(0, 2), keepdims=True)
    std = view.std(axis=(0, 2), keepdims=True)
    return ((view - mean) / std).reshape(desc.shape).astype(np.float32)


def sliced_wasserstein(a: np.ndarray, b: np.ndarray, directions: np.ndarray) -> float:
    projected_a = np.sort(a @ directions, axis=0)
    projected_b = np.sort(b @ directions, axis=0)
    return float(np.mean(np.abs(projected_a.astype(np.float64) - projected_b)))


def swd_levels(images_a: np.ndarray, images_b: np.ndarray, positions_a, positions_b, directions) -> list[float]:
    """SWD ×1e3 per level for uint8 NCHW sets, given per-level (rows, cols) for each set and directions."""
    num_levels = len(directions)
    pyramid_a = laplacian_pyramid(images_a.astype(np.float32), num_levels)
    pyramid_b = laplacian_pyramid(images_b.astype(np.float32), num_levels)
    values = []
    for level in range(num_levels):
        desc_a = normalize(descriptors(pyramid_a[level], *positions_a[level]))
        desc_b = normalize(descriptors(pyramid_b[level], *positions_b[level]))
        values.append(1e3 * sliced_wasserstein(desc_a, desc_b, directions[level]))
    return values
