"""FID: the distance against independent references, streaming statistics, statistics files, the cache, errors.

References written here: pytorch-fid's formula with scipy.linalg.sqrtm (well-conditioned covariances), and for
singular covariances (N ≤ D) the exact identity tr √(Σ₁Σ₂) = ‖A₁A₂ᵀ‖_* / √((n₁−1)(n₂−1)) with Aₖ the centred
features (the nonzero eigenvalues of A₁ᵀA₁A₂ᵀA₂ are the squared singular values of A₁A₂ᵀ), in float64 via
NumPy's SVD and in 40-digit arithmetic via mpmath. Image tests use a tiny deterministic extractor (no Inception
weights here); one smoke test runs a randomly initialised FIDInceptionV3 saved to a file on a few images.
"""

from __future__ import annotations

import os
import sys
import zipfile

import numpy as np
import pytest
import scipy.linalg
import torch

from gancore.errors import SourceError, UserError
from gancore.sources import open_source
from ganeval.features import extract
from ganeval.fid import compute_fid as fid
from ganeval.fid import compute_statistics
from ganeval.fid_files import (
    CACHE_ENV_VAR,
    cache_key,
    is_statistics_file,
    load_statistics,
    read_statistics,
    save_statistics,
    source_fingerprint,
)
from ganeval.frechet import FeatureStatistics, frechet_distance, trace_sqrt_product
from ganeval.inception import WEIGHTS_ENV_VAR, FIDInceptionV3
from toolkit_testing.extractors import TinyExtractor, random_images, random_weights_file
from toolkit_testing.images import write_images


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No downloads, no user cache: the cache env var points into tmp_path."""
    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to download the Inception weights")
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.delenv(WEIGHTS_ENV_VAR, raising=False)
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path / "env-cache"))


# --------------------------------------------------------------------------------------------------------------
# References


def reference_fid_sqrtm(mu1, sigma1, mu2, sigma2) -> float:
    """pytorch-fid / TTUR formula: scipy sqrtm of the product, real part of the trace."""
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean).real)


def reference_fid_from_features(x1: np.ndarray, x2: np.ndarray) -> float:
    """Exact FID of two feature sets via the nuclear norm of A₁A₂ᵀ (no matrix square root at all)."""
    a1, a2 = x1 - x1.mean(0), x2 - x2.mean(0)
    n1, n2 = len(x1), len(x2)
    trace_sqrt = np.linalg.svd(a1 @ a2.T, compute_uv=False).sum() / np.sqrt((n1 - 1) * (n2 - 1))
    diff = x1.mean(0) - x2.mean(0)
    return float(diff @ diff + (a1 * a1).sum() / (n1 - 1) + (a2 * a2).sum() / (n2 - 1) - 2 * trace_sqrt)


def stats_of(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return x.mean(0), np.cov(x, rowvar=False)


def relu_features(n: int, d: int, seed: int, shift: float = 0.0) -> np.ndarray:
    """Non-negative, correlated, pool3-like features [n, d] (a low-rank part plus noise, through a ReLU)."""
    rng = np.random.default_rng(seed)
    mixing = np.random.default_rng(123).standard_normal((16, d))
    x = rng.standard_normal((n, 16)) @ mixing / 4 + 0.3 * rng.standard_normal((n, d)) + shift
    return np.maximum(x, 0)


# --------------------------------------------------------------------------------------------------------------
# The distance


@pytest.mark.parametrize("method", ["symmetric", "eigvals"])
def test_matches_scipy_sqrtm_on_well_conditioned_gaussians(method):
    rng = np.random.default_rng(0)
    d = 64
    cases = []
    for _ in range(3):
        a, b = rng.standard_normal((d, d)), rng.standard_normal((d, d))
        cases.append((rng.standard_normal(d), a @ a.T / d + 0.5 * np.eye(d),
                      rng.standard_normal(d), b @ b.T / d + 0.5 * np.eye(d)))
    x1, x2 = relu_features(2000, d, 1), relu_features(1500, d, 2, shift=0.1)
    cases.append(stats_of(x1) + stats_of(x2))
    for mu1, s1, mu2, s2 in cases:
        expected = reference_fid_sqrtm(mu1, s1, mu2, s2)
        assert frechet_distance(mu1, s1, mu2, s2, method=method) == pytest.approx(expected, rel=1e-10)


def test_cholesky_and_eigh_factors_agree(monkeypatch):
    """Full-rank Σ₁ takes the Cholesky factor; forcing the eigh factor gives the same trace to rounding."""
    fid_module = sys.modules["ganeval.frechet"]
    x1, x2 = relu_features(3000, 128, 3), relu_features(2500, 128, 4, shift=0.2)
    (_, s1), (_, s2) = stats_of(x1), stats_of(x2)
    assert fid_module._cholesky_factor(torch.from_numpy(s1)) is not None
    fast = fid_module.trace_sqrt_product(s1, s2)
    monkeypatch.setattr(fid_module, "_cholesky_factor", lambda sigma: None)
    assert fid_module.trace_sqrt_product(s1, s2) == pytest.approx(fast, rel=1e-12)
    singular = stats_of(relu_features(50, 128, 5))[1]  # N < D: rank 49, the eigh path
    assert fid_module._cholesky_factor(torch.from_numpy(singular)) is None


def test_singular_covariances_match_the_exact_nuclear_norm_formula():
    d = 96
    for n1, n2 in ((20, 30), (50, 40), (8, 200)):
        x1, x2 = relu_features(n1, d, n1), relu_features(n2, d, n2 + 1, shift=0.05)
        (mu1, s1), (mu2, s2) = stats_of(x1), stats_of(x2)
        exact = reference_fid_from_features(x1, x2)
        ours = frechet_distance(mu1, s1, mu2, s2)
        assert np.isfinite(ours) and ours >= -1e-6
        assert ours == pytest.approx(exact, rel=1e-11, abs=1e-11)  # measured ~1e-14 relative
        # the torch-fidelity/torchmetrics form agrees to rounding noise of a general eigensolver
        assert frechet_distance(mu1, s1, mu2, s2, method="eigvals") == pytest.approx(exact, rel=1e-6)


def test_singular_case_against_high_precision_mpmath():
    mpmath = pytest.importorskip("mpmath")
    d, n1, n2 = 12, 5, 7
    x1, x2 = relu_features(n1, d, 3), relu_features(n2, d, 4, shift=0.2)
    (mu1, s1), (mu2, s2) = stats_of(x1), stats_of(x2)
    with mpmath.workdps(40):
        a1 = mpmath.matrix((x1 - x1.mean(0)).tolist())
        a2 = mpmath.matrix((x2 - x2.mean(0)).tolist())
        singular = mpmath.svd_r(a1 * a2.T, compute_uv=False)
        trace_sqrt = sum(singular) / mpmath.sqrt((n1 - 1) * (n2 - 1))
        diff = mpmath.matrix((x1.mean(0) - x2.mean(0)).tolist())
        traces = sum(a1[i, j] ** 2 for i in range(n1) for j in range(d)) / (n1 - 1) + \
            sum(a2[i, j] ** 2 for i in range(n2) for j in range(d)) / (n2 - 1)
        exact = float(sum(v ** 2 for v in diff) + traces - 2 * trace_sqrt)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(exact, rel=1e-12)
    assert trace_sqrt_product(s1, s2) == pytest.approx(float(trace_sqrt), rel=1e-12)


@pytest.mark.parametrize("method", ["symmetric", "eigvals"])
def test_identical_statistics_give_zero(method):
    for n in (30, 500):  # singular and full-rank
        mu, sigma = stats_of(relu_features(n, 64, 7))
        value = frechet_distance(mu, sigma, mu, sigma, method=method)
        assert 0.0 <= value < 1e-6


def test_symmetric_in_the_two_sets_and_tensor_inputs():
    (mu1, s1), (mu2, s2) = stats_of(relu_features(40, 64, 1)), stats_of(relu_features(300, 64, 2, 0.1))
    forward = frechet_distance(mu1, s1, mu2, s2)
    assert frechet_distance(mu2, s2, mu1, s1) == pytest.approx(forward, rel=1e-12)
    assert frechet_distance(*(torch.from_numpy(v) for v in (mu1, s1, mu2, s2))) == pytest.approx(forward,
                                                                                                 rel=1e-12)
    # float32 inputs (math still float64): fine for full-rank statistics
    (mu1, s1) = stats_of(relu_features(400, 64, 1))
    expected = frechet_distance(mu1, s1, mu2, s2)
    as_float32 = frechet_distance(*(torch.from_numpy(v).float() for v in (mu1, s1, mu2, s2)))
    assert as_float32 == pytest.approx(expected, rel=1e-5)


def test_diagonal_closed_form():
    rng = np.random.default_rng(5)
    d = 50
    a, b = rng.uniform(0, 3, d), rng.uniform(0, 3, d)
    a[:10] = 0.0  # some zero variances (singular)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    expected = float(((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum())
    for method in ("symmetric", "eigvals"):
        assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b), method=method) == pytest.approx(expected,
                                                                                                   rel=1e-12)


def test_bad_statistics_are_rejected():
    mu, sigma = np.zeros(4), np.eye(4)
    with pytest.raises(UserError, match="do not match"):
        frechet_distance(mu, sigma, np.zeros(5), np.eye(5))
    with pytest.raises(UserError, match="non-finite"):
        frechet_distance(mu, sigma * np.nan, mu, sigma)
    with pytest.raises(UserError, match="unknown FID method"):
        frechet_distance(mu, sigma, mu, sigma, method="sqrtm")


# --------------------------------------------------------------------------------------------------------------
# Streaming statistics


def test_streaming_statistics_equal_numpy():
    x = relu_features(1000, 48, 9) * 50 + 1000.0  # far from zero: the shifted sums keep it exact
    stats = FeatureStatistics()
    for start, stop in ((0, 1), (1, 64), (64, 500), (500, 999), (999, 1000)):
        stats.add(torch.from_numpy(x[start:stop]))
    assert stats.count == 1000 and stats.dim == 48
    np.testing.assert_allclose(stats.mean().numpy(), x.mean(0), rtol=0, atol=1e-10)
    # entries reach ~1e3: float64 summation order alone moves them by ~1e-13 relative (BLAS-dependent)
    np.testing.assert_allclose(stats.covariance().numpy(), np.cov(x, rowvar=False), rtol=1e-12, atol=1e-10)
    assert stats.covariance().dtype == torch.float64


def test_merging_accumulators_equals_one_pass():
    x = relu_features(300, 16, 4) * 10 + 500.0
    parts = [FeatureStatistics() for _ in range(3)]
    for part, (start, stop) in zip(parts, ((0, 5), (5, 200), (200, 300))):
        part.add(x[start:stop])
    merged = FeatureStatistics()
    for part in parts + [FeatureStatistics()]:  # an empty one merges as nothing
        merged.merge(part)
    assert merged.count == 300
    np.testing.assert_allclose(merged.mean().numpy(), x.mean(0), rtol=0, atol=1e-10)
    np.testing.assert_allclose(merged.covariance().numpy(), np.cov(x, rowvar=False), rtol=0, atol=1e-9)


def test_streaming_statistics_errors():
    stats = FeatureStatistics()
    with pytest.raises(UserError, match="at least 2"):
        stats.covariance()
    stats.add(np.ones((1, 8), np.float32))
    with pytest.raises(UserError, match="at least 2"):
        stats.mean()
    with pytest.raises(UserError, match="dimension"):
        stats.add(np.ones((3, 9), np.float32))
    stats.add(np.zeros((2, 8), np.float32))
    assert stats.count == 3


# --------------------------------------------------------------------------------------------------------------
# Statistics files


def test_statistics_file_round_trip_and_pytorch_fid_layout(tmp_path):
    mu, sigma = stats_of(relu_features(100, 32, 1))
    written = save_statistics(tmp_path / "sub" / "stats", mu, sigma, num_images=100)
    assert written == tmp_path / "sub" / "stats.npz"
    assert sorted(p.name for p in written.parent.iterdir()) == ["stats.npz"]  # no temporary left
    with np.load(written) as plain:  # what pytorch-fid reads: f['mu'][:], f['sigma'][:]
        assert plain["mu"].dtype == np.float64 and plain["sigma"].shape == (32, 32)
        np.testing.assert_array_equal(plain["mu"], mu)
    loaded_mu, loaded_sigma = load_statistics(written)
    np.testing.assert_array_equal(loaded_mu, mu)
    np.testing.assert_array_equal(loaded_sigma, sigma)
    assert read_statistics(written).num_images == 100
    # a file as pytorch-fid writes it (savez_compressed, no metadata) reads too
    np.savez_compressed(tmp_path / "pf.npz", mu=mu, sigma=sigma)
    assert is_statistics_file(tmp_path / "pf.npz") and read_statistics(tmp_path / "pf.npz").num_images is None


def test_bad_statistics_files(tmp_path):
    with pytest.raises(UserError, match="no such"):
        load_statistics(tmp_path / "missing.npz")
    np.savez(tmp_path / "nosigma.npz", mu=np.zeros(3))
    with pytest.raises(UserError, match="'sigma'"):
        load_statistics(tmp_path / "nosigma.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="not a readable"):
        load_statistics(tmp_path / "junk.npz")
    np.savez(tmp_path / "shape.npz", mu=np.zeros(3), sigma=np.zeros((3, 4)))
    with pytest.raises(UserError, match="not"):
        load_statistics(tmp_path / "shape.npz")
    assert not is_statistics_file(tmp_path / "junk.npz")


# --------------------------------------------------------------------------------------------------------------
# Sources through a tiny extractor


@pytest.fixture
def folders(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    write_images(a, random_images(12, 1))
    write_images(b, random_images(10, 2))
    return a, b


def direct_features(images_nhwc: np.ndarray) -> np.ndarray:
    tensor = torch.from_numpy(images_nhwc).permute(0, 3, 1, 2)
    return TinyExtractor().features(tensor, logits=False)[0].double().numpy()


def test_fid_of_folders_equals_the_direct_computation(folders, tmp_path):
    a, b = folders
    result = fid(a, b, num_images=None, seed=None, extractor=TinyExtractor(), num_workers=0, progress=False,
                 cache_dir=tmp_path / "cache", allow_singular=True)
    # all a side holds, the smaller's count (10) for both, in the sources' order (seed None);
    # 10 images of 24-d features: singular covariances, so the exact formula is the reference
    expected = reference_fid_from_features(direct_features(random_images(12, 1)[:10]),
                                           direct_features(random_images(10, 2)))
    assert result.value == pytest.approx(expected, rel=1e-11)
    out = result.to_dict()
    assert out["metric"] == "fid" and out["num_images"] == {"a": 10, "b": 10}
    assert out["skipped"] == {"a": 0, "b": 0} and out["resize"] == "tf" and out["device"] == "cpu"
    assert "notes" in out  # 12 images for 24-d features: singular covariance, said so
    assert set(out) >= {"value", "seconds"}


def test_fid_with_statistics_files_and_image_npz(folders, tmp_path):
    a, b = folders
    extractor = TinyExtractor()
    stats_b = compute_statistics(b, extractor=extractor, num_workers=0, progress=False, cache=False)
    stats_file = stats_b.save(tmp_path / "b_stats.npz")
    assert fid(stats_file, stats_file, progress=False, allow_singular=True).value < 1e-9
    from_dir = fid(a, b, num_images=None, extractor=extractor, num_workers=0, progress=False, cache=False,
                   allow_singular=True)
    from_file = fid(a, stats_file, num_images=None, extractor=extractor, num_workers=0, progress=False,
                    cache=False, allow_singular=True)
    assert from_file.value == pytest.approx(from_dir.value, rel=1e-12)
    assert from_file.num_images == {"a": 10, "b": 10}  # the file's count bounds the image side's default
    # an .npz of images is an image source, not statistics
    np.savez(tmp_path / "images.npz", images=random_images(10, 2))
    assert not is_statistics_file(tmp_path / "images.npz")
    from_npz = fid(a, tmp_path / "images.npz", num_images=10, extractor=extractor, num_workers=0,
                   progress=False, cache=False, allow_singular=True)
    assert from_npz.value == pytest.approx(
        fid(a, b, num_images=10, extractor=extractor, num_workers=0, progress=False, cache=False,
            allow_singular=True).value,
        rel=1e-12)


def test_mismatched_feature_dimensions(tmp_path):
    save_statistics(tmp_path / "s24.npz", np.zeros(24), np.eye(24))
    save_statistics(tmp_path / "s8.npz", np.zeros(8), np.eye(8))
    with pytest.raises(UserError, match="dimension"):
        fid(tmp_path / "s24.npz", tmp_path / "s8.npz", progress=False)


def test_too_few_images(folders, tmp_path):
    a, _ = folders
    with pytest.raises(UserError, match="has 12 images, FID needs 50"):
        fid(a, a, num_images=50, extractor=TinyExtractor(), num_workers=0, progress=False, cache=False)
    with pytest.raises(UserError, match="at least 2"):
        fid(a, a, num_images=1, extractor=TinyExtractor(), num_workers=0, progress=False, cache=False)
    single = tmp_path / "single"
    write_images(single, random_images(1, 3))
    with pytest.raises(UserError, match="at least 2"):
        compute_statistics(single, extractor=TinyExtractor(), num_workers=0, progress=False, cache=False)


def test_extract_returns_logits_and_statistics(folders):
    a, _ = folders
    extraction = extract(a, num_images=7, seed=3, extractor=TinyExtractor(), batch_size=3, num_workers=0,
                         progress=False, want_logits=True)
    assert extraction.num_images == 7 and extraction.logits.shape == (7, 10)
    assert extraction.logits.dtype == torch.float64 and extraction.statistics.count == 7


# --------------------------------------------------------------------------------------------------------------
# The cache


def cached_stats(source, extractor, cache_dir, **kwargs):
    return compute_statistics(source, extractor=extractor, num_workers=0, progress=False, cache_dir=cache_dir,
                              **kwargs)


def test_cache_hit_and_invalidation(folders, tmp_path):
    a, _ = folders
    cache_dir = tmp_path / "cache"
    extractor = TinyExtractor()
    first = cached_stats(a, extractor, cache_dir)
    calls = extractor.calls
    assert calls > 0 and not first.cached and first.cache_path.is_file()
    second = cached_stats(a, extractor, cache_dir)
    assert extractor.calls == calls and second.cached and second.num_images == 12
    np.testing.assert_array_equal(second.sigma, first.sigma)
    # touching one image (new mtime) invalidates
    image = sorted(a.glob("*.png"))[3]
    stat = image.stat()
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    cached_stats(a, extractor, cache_dir)
    assert extractor.calls > calls
    calls = extractor.calls
    cached_stats(a, extractor, cache_dir)
    assert extractor.calls == calls
    # adding an image invalidates even when the count asked for stays the same
    write_images(tmp_path / "extra", random_images(1, 9))
    (tmp_path / "extra" / "0000.png").rename(a / "zzz.png")
    cached_stats(a, extractor, cache_dir, num_images=12)
    assert extractor.calls > calls
    assert not [p for p in cache_dir.iterdir() if not p.name.endswith(".npz")]  # atomic: no temporaries


def test_cache_key_depends_on_settings(folders, tmp_path):
    a, _ = folders
    source = open_source(a)
    weights = ["pt_inception-2015-12-05-6726825d.pth", 95628359]
    base = cache_key(source, 12, None, "tf", weights)
    assert base == cache_key(open_source(a), 12, None, "tf", weights)
    assert len({base, cache_key(source, 12, None, "pytorch", weights), cache_key(source, 11, None, "tf", weights),
                cache_key(source, 12, 0, "tf", weights),
                cache_key(source, 12, None, "tf", ["inception-2015-12-05.pt", 1])}) == 5
    # through compute_statistics: another resize mode is another entry
    cache_dir = tmp_path / "cache"
    cached_stats(a, TinyExtractor("tf"), cache_dir)
    other = TinyExtractor("pytorch")
    cached_stats(a, other, cache_dir)
    assert other.calls > 0 and len(list(cache_dir.glob("*.npz"))) == 2


def test_cache_disabled_corrupt_and_env_dir(folders, tmp_path):
    a, _ = folders
    extractor = TinyExtractor()
    result = compute_statistics(a, extractor=extractor, num_workers=0, progress=False)  # default dir: env
    assert result.cache_path.parent == tmp_path / "env-cache" / "fid"
    calls = extractor.calls
    bypass = compute_statistics(a, extractor=extractor, num_workers=0, progress=False, cache=False)
    assert extractor.calls > calls and bypass.cache_path is None and not bypass.cached
    # a corrupt cache file is recomputed and rewritten, not a crash
    result.cache_path.write_bytes(b"\x00garbage")
    calls = extractor.calls
    again = compute_statistics(a, extractor=extractor, num_workers=0, progress=False)
    assert extractor.calls > calls and not again.cached
    np.testing.assert_allclose(again.sigma, result.sigma, rtol=0, atol=1e-12)
    assert compute_statistics(a, extractor=extractor, num_workers=0, progress=False).cached


def test_cache_fingerprints_of_zip_npy_and_memory(tmp_path):
    images = random_images(6, 4)
    write_images(tmp_path / "imgs", images)
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as archive:
        for path in sorted((tmp_path / "imgs").iterdir()):
            archive.write(path, path.name)
    zipped = source_fingerprint(open_source(tmp_path / "a.zip"))
    assert zipped[0] == "zip" and len(zipped[1]) == 6
    np.save(tmp_path / "a.npy", images)
    assert source_fingerprint(open_source(tmp_path / "a.npy"))[0] == "array"
    assert source_fingerprint(open_source(images)) is None
    in_memory = compute_statistics(images, extractor=TinyExtractor(), progress=False, cache_dir=tmp_path / "c")
    assert in_memory.cache_path is None and not (tmp_path / "c").exists()
    extractor = TinyExtractor()
    cached_stats(tmp_path / "a.zip", extractor, tmp_path / "c")
    calls = extractor.calls
    assert cached_stats(tmp_path / "a.zip", extractor, tmp_path / "c").cached and extractor.calls == calls


def test_cache_made_with_skipped_images_is_not_used_without_skip_bad(folders, tmp_path):
    a, _ = folders
    (a / "0005_broken.png").write_bytes(b"not a png")  # sorted among the first 12
    extractor = TinyExtractor()
    skipping = cached_stats(a, extractor, tmp_path / "cache", num_images=12, skip_bad=True)
    assert len(skipping.skipped) == 1
    assert cached_stats(a, extractor, tmp_path / "cache", num_images=12, skip_bad=True).cached
    with pytest.raises(SourceError, match="0005_broken.png"):
        cached_stats(a, extractor, tmp_path / "cache", num_images=12)


# --------------------------------------------------------------------------------------------------------------
# The real network (random weights), a handful of images


def test_fid_with_a_real_inception_weights_file(tmp_path, monkeypatch):
    weights = random_weights_file(tmp_path / "random_inception.pth")
    a, b = tmp_path / "a", tmp_path / "b"
    write_images(a, random_images(3, 1))
    write_images(b, random_images(3, 2))
    result = fid(a, b, num_images=3, inception=weights, device="cpu", num_workers=0, progress=False,
                 cache_dir=tmp_path / "cache", allow_singular=True)
    assert np.isfinite(result.value) and result.value > 0 and result.device == "cpu"
    entries = sorted((tmp_path / "cache").glob("*.npz"))
    assert len(entries) == 2
    # both sides now come from the cache: the weights file is only looked at, never loaded
    def no_loading(*args, **kwargs):
        raise AssertionError("the Inception was loaded although both statistics are cached")
    monkeypatch.setattr(sys.modules["ganeval.features"], "load_inception", no_loading)
    again = fid(a, b, num_images=3, inception=weights, device="cpu", num_workers=0, progress=False,
                cache_dir=tmp_path / "cache", allow_singular=True)
    assert again.value == result.value and again.cached == {"a": True, "b": True}


# --------------------------------------------------------------------------------------------------------------
# Several processes (torchrun-like, gloo on the CPU): the ranks' shares combine to the single-process numbers


def _distributed_worker(rank: int, world: int, init_file: str, folder: str, cache_dir: str, out: str):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        extraction = extract(folder, num_images=10, extractor=TinyExtractor(), batch_size=3, num_workers=0,
                             progress=False, want_logits=True)
        first = compute_statistics(folder, num_images=10, seed=None, extractor=TinyExtractor(), batch_size=3,
                                   num_workers=0, progress=False, cache_dir=cache_dir)  # seed None: like extract
        second = compute_statistics(folder, num_images=10, seed=None, extractor=TinyExtractor(), batch_size=3,
                                    num_workers=0, progress=False, cache_dir=cache_dir)
        np.savez(f"{out}/rank{rank}.npz", mu=extraction.statistics.mean().numpy(),
                 sigma=extraction.statistics.covariance().numpy(), logits=extraction.logits.numpy(),
                 count=extraction.num_images, cached=[first.cached, second.cached], cache_sigma=second.sigma)
    finally:
        dist.destroy_process_group()


def test_ranks_combine_to_the_single_process_statistics(folders, tmp_path):
    from gancore.sources import ImageStream

    if not hasattr(ImageStream, "batches"):
        pytest.skip("this ImageStream does not split streams between ranks")
    a, _ = folders
    torch.multiprocessing.spawn(_distributed_worker, nprocs=2, join=True,
                                args=(2, str(tmp_path / "init"), str(a), str(tmp_path / "cache"), str(tmp_path)))
    single = extract(a, num_images=10, extractor=TinyExtractor(), batch_size=3, num_workers=0, progress=False,
                     want_logits=True)
    for rank in range(2):
        with np.load(tmp_path / f"rank{rank}.npz") as result:
            assert int(result["count"]) == 10
            np.testing.assert_allclose(result["mu"], single.statistics.mean().numpy(), rtol=0, atol=1e-12)
            np.testing.assert_allclose(result["sigma"], single.statistics.covariance().numpy(), rtol=0,
                                       atol=1e-12)
            np.testing.assert_array_equal(result["logits"], single.logits.numpy())  # stream order kept
            assert list(result["cached"]) == [False, True]
            np.testing.assert_allclose(result["cache_sigma"], result["sigma"], rtol=0, atol=1e-12)
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1  # written once, by rank 0


def test_statistics_do_not_depend_on_batch_size():
    images = random_images(20, seed=4)
    results = [compute_statistics(images, extractor=TinyExtractor(), batch_size=size, progress=False, cache=False)
               for size in (3, 8, 20)]
    for other in results[1:]:
        np.testing.assert_allclose(other.mu, results[0].mu, rtol=1e-5, atol=1e-12)
        np.testing.assert_allclose(other.sigma, results[0].sigma, rtol=1e-5, atol=1e-12)


def test_too_few_images_for_the_feature_dimension_is_an_error(tmp_path):
    images_a, images_b = random_images(10, 1), random_images(10, 2)
    with pytest.raises(UserError, match="only 10 images for 24-d features.*--allow-singular"):
        fid(images_a, images_b, num_images=None, extractor=TinyExtractor(), progress=False, cache=False)
    result = fid(images_a, images_b, num_images=None, extractor=TinyExtractor(), progress=False, cache=False,
                 allow_singular=True)
    assert np.isfinite(result.value) and result.notes


def test_cached_statistics_serve_an_offline_machine_without_weights(tmp_path, monkeypatch):
    """Statistics made with the standard weights file are found again after the file is gone (offline)."""
    hub = tmp_path / "hub"
    (hub / "checkpoints").mkdir(parents=True)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    weights = hub / "checkpoints" / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(FIDInceptionV3().state_dict(), weights)
    folder = tmp_path / "a"
    write_images(folder, random_images(3, 1))
    first = compute_statistics(folder, device="cpu", num_workers=0, progress=False, cache_dir=tmp_path / "cache")
    assert not first.cached
    weights.unlink()  # offline, no weights: the conftest guard makes any download attempt fail the test
    again = compute_statistics(folder, device="cpu", num_workers=0, progress=False, cache_dir=tmp_path / "cache")
    assert again.cached and np.array_equal(again.mu, first.mu)


def test_a_pass_fingerprints_each_source_once(folders, tmp_path, monkeypatch):
    """The cache key (a folder's fingerprint stats every file) is computed once per set and pass, not for the
    lookup, the entry check and the write apart."""
    import ganeval.fid_files

    a, b = folders
    fingerprints = []
    original = ganeval.fid_files.source_fingerprint
    monkeypatch.setattr(ganeval.fid_files, "source_fingerprint",
                        lambda source: fingerprints.append(source.path) or original(source))
    fid(a, b, num_images=6, extractor=TinyExtractor(), progress=False, num_workers=0, cache_dir=tmp_path / "cache",
        allow_singular=True)
    assert sorted(fingerprints) == sorted([str(a), str(b)])
