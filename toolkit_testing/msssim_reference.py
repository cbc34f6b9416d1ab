"""The MS-SSIM reference (the slow one the tests and benchmarks/metrics_speed.py compare ganeval.msssim with):
NHWC float64, 2-D window, FFT convolution in 'valid' mode, 2×2 box averaging, clip, product."""

from __future__ import annotations

import numpy as np
from scipy.signal import fftconvolve


def ref_fspecial(size: int, sigma: float) -> np.ndarray:
    """MATLAB fspecial('gaussian'): integer coordinates for odd sizes, half-integers for even sizes."""
    radius = size // 2
    coords = np.arange(-radius, radius + 1, dtype=np.float64) if size % 2 else np.arange(-radius, radius) + 0.5
    xx, yy = np.meshgrid(coords, coords, indexing="ij")
    window = np.exp(-(xx ** 2 + yy ** 2) / (2.0 * sigma ** 2))
    return window / window.sum()


def ref_ssim_cs(img1: np.ndarray, img2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-image (ssim, cs) of NHWC float64 images in [0, 255]."""
    _, height, width, _ = img1.shape
    size = min(11, height, width)
    window = ref_fspecial(size, size * 1.5 / 11)[None, :, :, None]

    def local_mean(image):
        return fftconvolve(image, window, mode="valid")

    mu1, mu2 = local_mean(img1), local_mean(img2)
    sigma11 = local_mean(img1 * img1) - mu1 * mu1
    sigma22 = local_mean(img2 * img2) - mu2 * mu2
    sigma12 = local_mean(img1 * img2) - mu1 * mu2
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    cs_map = (2 * sigma12 + c2) / (sigma11 + sigma22 + c2)
    ssim_map = (2 * mu1 * mu2 + c1) / (mu1 * mu1 + mu2 * mu2 + c1) * cs_map
    return ssim_map.mean(axis=(1, 2, 3)), cs_map.mean(axis=(1, 2, 3))


def ref_downsample(image: np.ndarray) -> np.ndarray:
    """_HoxDownsample-style mean of the four pixels of each 2×2 block (odd sizes cropped first)."""
    height, width = image.shape[1] // 2 * 2, image.shape[2] // 2 * 2
    image = image[:, :height, :width]
    return (image[:, 0::2, 0::2] + image[:, 1::2, 0::2] + image[:, 0::2, 1::2] + image[:, 1::2, 1::2]) * 0.25


def ref_scales(img1: np.ndarray, img2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unclipped (ssim [N, 5], cs [N, 5]) of NHWC images."""
    img1, img2 = img1.astype(np.float64), img2.astype(np.float64)
    ssims, css = [], []
    for _ in range(5):
        ssim, cs = ref_ssim_cs(img1, img2)
        ssims.append(ssim)
        css.append(cs)
        img1, img2 = ref_downsample(img1), ref_downsample(img2)
    return np.stack(ssims, axis=1), np.stack(css, axis=1)


def ref_msssim(img1: np.ndarray, img2: np.ndarray) -> np.ndarray:
    weights = np.array([0.0448, 0.2856, 0.3001, 0.2363, 0.1333])
    ssim, cs = ref_scales(img1, img2)
    ssim, cs = np.clip(ssim, 0, np.inf), np.clip(cs, 0, np.inf)
    return np.prod(cs[:, :4] ** weights[:4], axis=1) * ssim[:, 4] ** weights[4]
