"""Improved precision and recall (Kynkäänniemi et al. 2019) with k-nearest-neighbour manifolds.

Each set's manifold is the union of balls around its feature vectors, each ball's radius the Euclidean distance
to the point's k-th nearest neighbour within the same set (k = 3, the paper's and stylegan2-ada's default; the
point itself is not a neighbour). Precision = the fraction of generated features inside the real manifold (some
real point r with ‖g − r‖ ≤ radius(r)); recall = the fraction of real features inside the generated manifold.
Both in [0, 1], higher is better.

Features: the Inception pool3 vectors (2048-d) that FID and KID already use, computed once in the same pass.
The paper uses VGG-16 fc2 features (4096-d); the Inception is used here because the pass already computes it, no
second network (with its own weights to find) is needed, and the definition does not depend on the embedding.
Numbers are therefore not comparable with VGG-16 precision/recall (stylegan2-ada's pr50k3). A second feature
network can join later: a metric declaring what it needs in the registry (see docs/metrics.md).

Distances are computed in float64 in row blocks (‖x‖² + ‖y‖² − 2xᵀy, the cost of a matrix product; memory is one
block of rows × the manifold size), on the features' device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gancore.errors import UserError

from .metric_utils import TwoSetFeatures, feature_pair

DEFAULT_K = 3
BLOCK_ELEMENTS = 1 << 24  # distances per block (128 MB in float64)


def _distances(rows: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Euclidean distances [R, N] between rows [R, d] and points [N, d] (float64)."""
    squared = (rows * rows).sum(1)[:, None] + (points * points).sum(1)[None, :] - 2 * rows @ points.T
    return squared.clamp_(min=0).sqrt_()


def _blocks(count: int, width: int):
    step = max(1, BLOCK_ELEMENTS // max(1, width))
    return [(start, min(start + step, count)) for start in range(0, count, step)]


def neighbour_radii(points: torch.Tensor, k: int = DEFAULT_K) -> torch.Tensor:
    """Distance from each point [N, d] to its k-th nearest other point -> [N] (N > k)."""
    radii = [_distances(points[a:b], points).kthvalue(k + 1, dim=1).values for a, b in _blocks(len(points),
                                                                                                len(points))]
    return torch.cat(radii)


def manifold_coverage(probes: torch.Tensor, points: torch.Tensor, radii: torch.Tensor) -> float:
    """Fraction of probes [M, d] within radius[j] of some point j of [N, d]."""
    inside = [(_distances(probes[a:b], points) <= radii[None, :]).any(dim=1) for a, b in _blocks(len(probes),
                                                                                                 len(points))]
    return float(torch.cat(inside).double().mean())


@dataclass
class PRResult:
    """Precision and recall in [0, 1] with k-NN manifolds of `num_images` features per set."""

    precision: float
    recall: float
    k: int
    num_images: int
    features: str = "inception-pool3"

    def to_dict(self) -> dict:
        return {"metric": "pr", "precision": self.precision, "recall": self.recall, "k": self.k,
                "num_images": self.num_images, "features": self.features}


def knn_precision_recall(gen_features, real_features, k: int = DEFAULT_K, device=None) -> PRResult:
    """Precision and recall between feature sets gen [N₁, d] and real [N₂, d] (tensors or arrays; float64 on
    `device`, default: the features' device). Raises UserError when a set has k or fewer features."""
    gen, real = feature_pair(gen_features, real_features, device, "precision/recall")
    if k < 1 or min(len(gen), len(real)) <= k:
        raise UserError(f"precision/recall with k = {k} needs more than {k} images per set (and k ≥ 1), got "
                        f"{len(gen)} and {len(real)}")
    precision = manifold_coverage(gen, real, neighbour_radii(real, k))
    recall = manifold_coverage(real, gen, neighbour_radii(gen, k))
    return PRResult(precision=precision, recall=recall, k=k, num_images=min(len(gen), len(real)))


class PRMetric(TwoSetFeatures):
    """The registry's precision/recall: pool features of the first `num_images` of "gen" and "real", then
    `knn_precision_recall` on `device`."""

    name = "pr"

    def __init__(self, num_images: int, k: int = DEFAULT_K, device=None):
        if num_images <= k:
            raise UserError(f"precision/recall with k = {k} needs more than {k} images per set, {num_images} "
                            "asked")
        super().__init__(num_images)
        self.k, self.device = k, device

    def result(self) -> PRResult:
        return knn_precision_recall(self.rows["gen"].rows, self.rows["real"].rows, self.k, self.device)


__all__ = ["DEFAULT_K", "PRMetric", "PRResult", "knn_precision_recall", "manifold_coverage", "neighbour_radii"]
