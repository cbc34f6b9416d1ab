"""KID and precision/recall against slow, obvious NumPy references on the same features.

KID's reference is the formula as torch-fidelity's and torchmetrics' documentation state it (KID = MMD² with
k(x, y) = (γ·xᵀy + coef)^degree, γ = 1/d, coef = 1, degree = 3; the unbiased estimate averaged over subsets of
`subset_size` drawn without replacement), written with explicit loops over pairs. Precision/recall's reference
is the paper's definition with explicit loops over points (distances by np.linalg.norm of differences).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gancore.errors import UserError
from ganeval.kid import kernel_inception_distance, mmd2_unbiased
from ganeval.precision_recall import knn_precision_recall


def reference_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² with the documented kernel, one pair at a time."""
    d, m = x.shape[1], x.shape[0]

    def k(a, b):
        return (float(a @ b) / d + 1.0) ** 3

    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def reference_kid(gen: np.ndarray, real: np.ndarray, subsets: int, size: int, seed: int) -> tuple[float, float]:
    """Mean and population std over subsets, drawn as documented (NumPy default_rng(seed), gen then real)."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(subsets):
        x = gen[rng.choice(len(gen), size, replace=False)]
        y = real[rng.choice(len(real), size, replace=False)]
        values.append(reference_mmd2(x, y))
    return float(np.mean(values)), float(np.std(values))


def reference_precision_recall(gen: np.ndarray, real: np.ndarray, k: int) -> tuple[float, float]:
    def radii(points):
        out = []
        for p in points:
            distances = sorted(np.linalg.norm(p - q) for q in points)
            out.append(distances[k])  # distances[0] is the point itself
        return out

    def coverage(probes, points):
        r = radii(points)
        return np.mean([any(np.linalg.norm(p - q) <= r[j] for j, q in enumerate(points)) for p in probes])

    return float(coverage(gen, real)), float(coverage(real, gen))


def pool_like(n: int, d: int, seed: int, shift: float = 0.0) -> np.ndarray:
    """Non-negative correlated features like Inception pool3 (float32, as the network gives them)."""
    rng = np.random.default_rng(seed)
    low = rng.normal(size=(n, 4)) @ rng.normal(size=(4, d))
    return np.maximum(low + rng.normal(scale=0.5, size=(n, d)) + shift, 0).astype(np.float32)


def test_mmd2_equals_the_documented_formula():
    x, y = pool_like(12, 16, 1).astype(np.float64), pool_like(12, 16, 2, shift=0.3).astype(np.float64)
    assert mmd2_unbiased(torch.from_numpy(x), torch.from_numpy(y)) == pytest.approx(reference_mmd2(x, y),
                                                                                     rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("subset_size", [5, 30])
def test_kid_equals_the_reference(subset_size):
    gen, real = pool_like(25, 16, 3, shift=0.2), pool_like(20, 16, 4)
    result = kernel_inception_distance(gen, real, subsets=6, subset_size=subset_size, seed=11)
    mean, std = reference_kid(gen.astype(np.float64), real.astype(np.float64), 6, min(subset_size, 20), 11)
    assert result.mean == pytest.approx(mean, rel=1e-6, abs=1e-12)
    assert result.std == pytest.approx(std, rel=1e-6, abs=1e-12)
    assert result.subset_size == min(subset_size, 20)
    assert bool(result.notes) == (subset_size > 20)  # shrunk: said so
    assert result.to_dict()["metric"] == "kid"


def pool3_sample(n: int, seed: int, shift: float = 0.0) -> np.ndarray:
    """Draws from one fixed distribution with pool3's scale (entries ~0.3, xᵀy/d ~0.1-0.3); `seed` picks the draw."""
    basis = np.random.default_rng(0).normal(size=(4, 64))
    rng = np.random.default_rng(seed)
    low = 0.15 * rng.normal(size=(n, 4)) @ basis
    return np.maximum(low + rng.normal(scale=0.3, size=(n, 64)) + 0.3 + shift, 0).astype(np.float32)


def test_kid_is_about_zero_for_one_distribution_and_grows_with_a_shift():
    a, b = pool3_sample(400, 1), pool3_sample(400, 2)
    settings = {"subsets": 20, "subset_size": 200, "seed": 0}
    shifted = kernel_inception_distance(a, pool3_sample(400, 3, shift=0.1), **settings)
    further = kernel_inception_distance(a, pool3_sample(400, 3, shift=0.2), **settings)
    for same in (kernel_inception_distance(a, a, **settings), kernel_inception_distance(a, b, **settings)):
        assert abs(same.mean) < 0.1 * shifted.mean  # unbiased: about 0, may be slightly negative
    assert 0 < shifted.mean < further.mean
    assert kernel_inception_distance(a, pool3_sample(400, 3, shift=0.1), **settings).mean == shifted.mean


def test_kid_errors():
    with pytest.raises(UserError, match="N×d"):
        kernel_inception_distance(np.zeros((5, 3)), np.zeros((5, 4)))
    with pytest.raises(UserError, match="at least 2"):
        kernel_inception_distance(np.zeros((1, 3)), np.zeros((5, 3)))


@pytest.mark.parametrize("k", [1, 3])
def test_precision_recall_equal_the_reference(k):
    gen, real = pool_like(30, 8, 6, shift=0.4), pool_like(25, 8, 7)
    result = knn_precision_recall(gen, real, k=k)
    expected = reference_precision_recall(gen.astype(np.float64), real.astype(np.float64), k)
    assert (result.precision, result.recall) == pytest.approx(expected, abs=1e-6)
    assert result.k == k and result.to_dict()["features"] == "inception-pool3"


def test_precision_recall_behave_as_documented():
    """Identical sets: both 1. Generated set collapsed on a part of the reals: precision high, recall low.
    Generated set far away: both 0."""
    real = pool_like(120, 8, 8)
    assert knn_precision_recall(real, real).precision == 1.0 and knn_precision_recall(real, real).recall == 1.0
    collapsed = real[:10].repeat(12, axis=0) + np.random.default_rng(0).normal(scale=1e-3, size=(120, 8))
    partial = knn_precision_recall(collapsed.astype(np.float32), real)
    assert partial.precision > 0.9 and partial.recall < 0.3
    far = knn_precision_recall(real + 100.0, real)
    assert far.precision == 0.0 and far.recall == 0.0


def test_precision_recall_errors():
    with pytest.raises(UserError, match="more than 3"):
        knn_precision_recall(np.zeros((3, 4)), np.zeros((10, 4)))
