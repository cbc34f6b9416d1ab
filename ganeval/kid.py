"""Kernel Inception Distance (Bińkowski et al. 2018, "Demystifying MMD GANs").

KID is the squared maximum mean discrepancy between the Inception pool3 features (2048-d) of the two sets with
the cubic polynomial kernel k(x, y) = (xᵀy / d + 1)³, estimated without bias: for subsets X, Y of m features
each,

    MMD²ᵤ = Σ_{i≠j} k(xᵢ, xⱼ) / (m(m−1)) + Σ_{i≠j} k(yᵢ, yⱼ) / (m(m−1)) − 2 Σ_{i,j} k(xᵢ, yⱼ) / m².

As torch-fidelity, clean-fid, torchmetrics and stylegan2-ada: 100 subsets of m = 1000 features drawn without
replacement from each set (independently per subset), reported as the mean and the population std over the
subsets. With fewer than m images in a set, m shrinks to the smaller set's size (at least 2) and the result
says so in a note. The subsets are drawn with NumPy's default_rng(seed): the same seed gives the same number.
Computed in float64 (on the GPU when the features are there). Unbiased means a set against itself scores
about 0 and may be slightly negative.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from gancore.errors import UserError

from .metric_utils import TwoSetFeatures, feature_pair

DEFAULT_SUBSETS = 100
DEFAULT_SUBSET_SIZE = 1000


def polynomial_kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """k(x, y) = (xᵀy/d + 1)³ for rows x [m, d], y [n, d] -> [m, n] (float64)."""
    return (x @ y.T / x.shape[1] + 1) ** 3


def mmd2_unbiased(x: torch.Tensor, y: torch.Tensor) -> float:
    """The unbiased MMD² estimate between rows x [m, d] and y [m, d] (m ≥ 2) with the cubic kernel."""
    m = x.shape[0]
    k_xx, k_yy, k_xy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    within = (k_xx.sum() - k_xx.diagonal().sum() + k_yy.sum() - k_yy.diagonal().sum()) / (m * (m - 1))
    return float(within - 2 * k_xy.sum() / (m * m))


@dataclass
class KIDResult:
    """KID mean and population std over `subsets` subsets of `subset_size` features per set (unitless; papers
    often quote ×1e3)."""

    mean: float
    std: float
    num_images: int
    subsets: int
    subset_size: int
    seed: int | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        out = {"metric": "kid", "mean": self.mean, "std": self.std, "num_images": self.num_images,
               "subsets": self.subsets, "subset_size": self.subset_size, "seed": self.seed}
        if self.notes:
            out["notes"] = list(self.notes)
        return out


def kernel_inception_distance(gen_features, real_features, subsets: int = DEFAULT_SUBSETS,
                              subset_size: int = DEFAULT_SUBSET_SIZE, seed: int | None = None,
                              device=None) -> KIDResult:
    """KID between feature sets gen [N₁, d] and real [N₂, d] (tensors or arrays; float64 on `device`, default:
    the features' device). Raises UserError for fewer than 2 features per set or mismatched dimensions."""
    gen, real = feature_pair(gen_features, real_features, device, "KID")
    if subsets < 1 or subset_size < 2:
        raise UserError(f"KID needs at least 1 subset of at least 2 features, got {subsets} of {subset_size}")
    size = min(subset_size, gen.shape[0], real.shape[0])
    if size < 2:
        raise UserError(f"KID needs at least 2 images per set, got {gen.shape[0]} and {real.shape[0]}")
    notes = []
    if size < subset_size:
        notes.append(f"subsets of {size} features (fewer images than the subset size {subset_size}); KID "
                     "estimates with other subset sizes are not comparable in their spread")
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(subsets):
        x = gen[torch.from_numpy(rng.choice(gen.shape[0], size, replace=False)).to(device)]
        y = real[torch.from_numpy(rng.choice(real.shape[0], size, replace=False)).to(device)]
        values.append(mmd2_unbiased(x, y))
    return KIDResult(mean=float(np.mean(values)), std=float(np.std(values)), num_images=min(gen.shape[0],
                     real.shape[0]), subsets=subsets, subset_size=size, seed=seed, notes=notes)


class KIDMetric(TwoSetFeatures):
    """The registry's KID: the pool features of the first `num_images` of "gen" and "real", then
    `kernel_inception_distance` on `device`."""

    name = "kid"

    def __init__(self, num_images: int, subsets: int = DEFAULT_SUBSETS, subset_size: int = DEFAULT_SUBSET_SIZE,
                 seed: int | None = None, device=None):
        if num_images < 2:
            raise UserError(f"KID needs at least 2 images per set, {num_images} asked")
        super().__init__(num_images)
        self.subsets, self.subset_size, self.seed, self.device = subsets, subset_size, seed, device

    def result(self) -> KIDResult:
        return kernel_inception_distance(self.rows["gen"].rows, self.rows["real"].rows, self.subsets,
                                         self.subset_size, self.seed, self.device)


__all__ = ["DEFAULT_SUBSETS", "DEFAULT_SUBSET_SIZE", "KIDMetric", "KIDResult", "kernel_inception_distance",
           "mmd2_unbiased", "polynomial_kernel"]
