"""The quality score written the slow, obvious way from its definition (celebahq/quality.py's docstring):
NumPy, float64, the full fft2 plane (no half-plane bookkeeping), one annulus at a time. An independent check of
the torch version and the NumPy speed baseline of benchmarks/quality_benchmark.py."""

from __future__ import annotations

import itertools

import numpy as np

EULER_GAMMA = 0.5772156649015329


def reference_quality(image: np.ndarray, bands: int = 32, lowest: float = 1 / 64, floor: float = 1 / 12) -> float:
    """uint8 HW3 RGB in [0, 255] -> quality = breadth · symmetry."""
    luma = image.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    height, width = luma.shape
    window = np.outer(np.hanning(height), np.hanning(width))  # the symmetric Hann window
    centred = luma - (luma * window).sum() / window.sum()
    power = np.abs(np.fft.fft2(centred * window)) ** 2 / (window ** 2).sum()
    radius = np.hypot(*np.meshgrid(np.fft.fftfreq(height), np.fft.fftfreq(width), indexing="ij"))
    edges = np.linspace(lowest, 0.5, bands + 1)
    energy, weighted_radius2, shares, excesses = [], [], [], []
    for low, high in itertools.pairwise(edges):
        values = power[(radius >= low) & (radius < high)]
        isotropic = np.exp(np.mean(np.log(np.maximum(values, 1e-30))) + EULER_GAMMA)
        signal = max(isotropic - floor, 0.0)
        energy.append(values.size * signal)
        weighted_radius2.append(values.size * signal * np.mean(radius[(radius >= low) & (radius < high)]) ** 2)
        shares.append(signal / isotropic)
        excesses.append(np.log(np.mean(values) / isotropic))
    if sum(energy) == 0:
        return 0.0
    breadth = 2 * np.sqrt(sum(weighted_radius2) / sum(energy))
    symmetry = np.exp(-np.dot(shares, excesses) / sum(shares))
    return float(breadth * symmetry)
