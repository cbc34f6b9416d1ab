"""Inception Score against a direct NumPy/SciPy reference (the improved-gan recipe), known values, the source path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import softmax
from scipy.stats import entropy

from gancore.errors import UserError
from ganeval.isc import inception_score, inception_score_source
from toolkit_testing.extractors import TinyExtractor, random_images, random_weights_file
from toolkit_testing.images import write_images


def reference_inception_score(logits: np.ndarray, splits: int) -> tuple[float, float]:
    """improved-gan: softmax, consecutive parts [k·N//s, (k+1)·N//s), exp(mean KL(p(y|x) ‖ p(y))), mean/std."""
    preds = softmax(logits.astype(np.float64), axis=1)
    n = preds.shape[0]
    scores = []
    for k in range(splits):
        part = preds[k * n // splits:(k + 1) * n // splits]
        marginal = part.mean(axis=0)
        scores.append(np.exp(np.mean([entropy(row, marginal) for row in part])))
    return float(np.mean(scores)), float(np.std(scores))


@pytest.mark.parametrize("n, classes, splits", [(103, 1008, 10), (50, 1008, 3), (40, 7, 1)])
def test_matches_the_numpy_reference(n, classes, splits):
    logits = np.random.default_rng(n).standard_normal((n, classes)) * 3
    expected = reference_inception_score(logits, splits)
    mean, std = inception_score(logits, splits)
    assert mean == pytest.approx(expected[0], rel=0, abs=1e-10)
    assert std == pytest.approx(expected[1], rel=0, abs=1e-10)
    # tensors (float32 or float64) give the same numbers; the math is float64
    assert inception_score(torch.from_numpy(logits), splits) == pytest.approx((mean, std), abs=1e-12)


def test_uniform_predictions_score_one():
    mean, std = inception_score(np.zeros((40, 1008)), 10)
    assert mean == pytest.approx(1.0, abs=1e-12) and std == pytest.approx(0.0, abs=1e-12)
    same_class = np.zeros((40, 1008))
    same_class[:, 5] = 60.0  # confident but always the same class: no diversity
    assert inception_score(same_class, 4)[0] == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("k", [2, 5, 37])
def test_confident_distinct_classes_score_k(k):
    logits = np.zeros((k * 20, 1008))
    logits[np.arange(k * 20), np.arange(k * 20) % k] = 60.0  # every split holds every class equally often
    mean, std = inception_score(logits, 10 if k != 37 else 20)
    assert mean == pytest.approx(k, rel=1e-9) and std < 1e-9


def test_extreme_logits_stay_finite():
    logits = np.random.default_rng(1).standard_normal((30, 1008)) * 1e4  # probabilities underflow to 0
    mean, std = inception_score(logits, 3)
    assert np.isfinite(mean) and np.isfinite(std) and 1.0 <= mean <= 1008


def test_errors():
    with pytest.raises(UserError, match="at least 10"):
        inception_score(np.zeros((9, 1008)), 10)
    with pytest.raises(UserError, match="N×C"):
        inception_score(np.zeros(1008), 1)
    with pytest.raises(UserError, match="splits"):
        inception_score(np.zeros((4, 1008)), 0)


def test_inception_score_of_a_source(tmp_path):
    images = random_images(20, 5)
    write_images(tmp_path / "imgs", images)
    result = inception_score_source(tmp_path / "imgs", num_images=20, splits=4, extractor=TinyExtractor(),
                                    batch_size=6, num_workers=0, progress=False, seed=None)  # source order
    logits = TinyExtractor().features(torch.from_numpy(images).permute(0, 3, 1, 2))[1].double().numpy()
    expected = reference_inception_score(logits, 4)
    assert (result.mean, result.std) == pytest.approx(expected, abs=1e-10)
    out = result.to_dict()
    assert out["metric"] == "is" and out["num_images"] == 20 and out["splits"] == 4
    assert out["mean"] == result.mean and out["std"] == result.std and out["skipped"] == 0
    with pytest.raises(UserError, match="has 20 images, IS needs 21"):
        inception_score_source(tmp_path / "imgs", num_images=21, extractor=TinyExtractor(), num_workers=0,
                               progress=False)
    with pytest.raises(UserError, match="at least 10"):
        inception_score_source(tmp_path / "imgs", num_images=5, extractor=TinyExtractor(), num_workers=0,
                               progress=False)


def test_inception_score_with_a_real_inception_weights_file(tmp_path):
    weights = random_weights_file(tmp_path / "random_inception.pth")
    write_images(tmp_path / "imgs", random_images(4, 6))
    result = inception_score_source(tmp_path / "imgs", num_images=4, splits=2, inception=weights, device="cpu",
                                    num_workers=0, progress=False)
    assert np.isfinite(result.mean) and 1.0 <= result.mean <= 1008 and result.device == "cpu"
    assert result.resize == "tf"
