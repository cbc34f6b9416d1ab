"""The registry and its one pass: every metric from one decode per image and one feature pass, each equal to its
single-metric form, independent of the batch size and of the number of torchrun processes; the FID cache keyed
by the weights' content; statistics that are not a Gaussian's refused; `stats -o` checked before any work."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

import gancore.sources
from gancore.errors import UserError
from gancore.sources import ImageStream
from ganeval.cli import main
from ganeval.fid import compute_fid, compute_statistics
from ganeval.fid_files import save_statistics, weights_identity, weights_sha256
from ganeval.isc import inception_score_source
from ganeval.metric_main import compute_metrics
from ganeval.metric_utils import stream_seed
from ganeval.msssim import msssim_diversity
from ganeval.registry import MetricSettings, list_metrics
from ganeval.swd import compute_swd
from toolkit_testing.extractors import TinyExtractor, random_images
from toolkit_testing.images import write_images
from toolkit_testing.subprocesses import single, torchrun

ALL = ["swd", "msssim", "fid", "is", "kid", "pr"]
SETTINGS = {"seed": 7, "swd_images": 16, "msssim_pairs": 8, "fid_images": 30, "allow_singular": True,
            "is_splits": 3, "kid_subsets": 5, "kid_subset_size": 10, "progress": False}


@pytest.fixture(scope="module")
def image_sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("sets")
    write_images(root / "gen", random_images(40, 11))
    write_images(root / "real", random_images(36, 12))
    return root / "gen", root / "real"


def run_all(gen, real, batch_size=6, **overrides):
    settings = MetricSettings.from_values(**dict(SETTINGS, **overrides))
    return compute_metrics(gen, real, None, settings, device="cpu", batch_size=batch_size, num_workers=0,
                           extractor=TinyExtractor())


def flat_numbers(payload: dict) -> dict[str, float]:
    """Every metric's numbers from `MetricsResult.to_dict()`, flattened to 'metric.key' -> float."""
    out = {}
    for name in ALL:
        entry = payload["metrics"][name]
        for key in ("value", "mean", "std", "avg", "precision", "recall"):
            if key in entry:
                out[f"{name}.{key}"] = entry[key]
        for level, value in entry.get("levels", {}).items():
            out[f"{name}.{level}"] = value
    return out


def test_the_registry_lists_all_six():
    assert list_metrics()[:6] == ALL


def test_all_metrics_from_one_decode_and_one_feature_pass(image_sets, monkeypatch):
    gen, real = image_sets
    decoded = []
    original = gancore.sources.decode_image
    monkeypatch.setattr(gancore.sources, "decode_image", lambda data: decoded.append(data) or original(data))
    extractor = TinyExtractor()
    result = compute_metrics(gen, real, None, MetricSettings.from_values(**SETTINGS), device="cpu", batch_size=6,
                             num_workers=0, extractor=extractor)
    assert list(result.results) == ALL
    # gen: max(16 SWD, 16 MS-SSIM, 30 features) = 30 images, real: 30; each decoded once
    assert len(decoded) == 60 and len(set(map(str, decoded))) == 60
    assert extractor.images == 60  # the features of each image computed once for FID, IS, KID and PR
    assert extractor.calls == 2 * 5  # 30 images in batches of 6, per set
    payload = json.loads(json.dumps(result.to_dict()))
    metrics = payload["metrics"]
    assert set(metrics) >= set(ALL) and payload["command"] == "all"
    assert metrics["kid"]["subset_size"] == 10 and metrics["pr"]["k"] == 3 and metrics["is"]["splits"] == 3


def test_each_value_equals_the_single_metric_form(image_sets):
    gen, real = image_sets
    together = run_all(gen, real)
    swd = compute_swd(gen, real, num_images=16, seed=7, device="cpu", progress=False, num_workers=0)
    assert together.results["swd"].levels == pytest.approx(swd.levels, rel=1e-6)
    msssim = msssim_diversity(gen, num_pairs=8, seed=7, device="cpu", progress=False, num_workers=0)
    assert together.results["msssim"].value == pytest.approx(msssim.value, rel=1e-6)
    inception_score = inception_score_source(gen, num_images=30, splits=3, seed=7, extractor=TinyExtractor(),
                                             progress=False, num_workers=0)
    assert (together.results["is"].mean, together.results["is"].std) == pytest.approx(
        (inception_score.mean, inception_score.std), rel=1e-6)
    subsets = [np.stack([image.permute(1, 2, 0).numpy() for batch in ImageStream(source, num_images=30, seed=seed)
                         for image in batch]) for source, seed in ((gen, 7), (real, 8))]
    fid = compute_fid(*subsets, num_images=None, extractor=TinyExtractor(), progress=False, cache=False,
                      allow_singular=True)
    assert together.results["fid"].value == pytest.approx(fid.value, rel=1e-6)
    for name in ("kid", "pr"):  # their single commands are this registry with one name
        alone = compute_metrics(gen, real, name, MetricSettings.from_values(**SETTINGS), device="cpu", num_workers=0,
                                extractor=TinyExtractor())
        alone_dict, together_dict = alone.results[name].to_dict(), together.results[name].to_dict()
        assert alone_dict.keys() == together_dict.keys()
        for key, value in together_dict.items():  # numbers to 1e-6, everything else exactly
            if isinstance(value, float):
                assert alone_dict[key] == pytest.approx(value, rel=1e-6), key
            else:
                assert alone_dict[key] == value, key


def test_independent_of_the_batch_size(image_sets):
    gen, real = image_sets
    first = flat_numbers(run_all(gen, real, batch_size=4).to_dict())
    second = flat_numbers(run_all(gen, real, batch_size=11).to_dict())
    assert second == pytest.approx(first, rel=1e-6, abs=1e-9)


def test_two_torchrun_processes_give_the_same_numbers(image_sets, tmp_path):
    gen, real = image_sets
    script = tmp_path / "run_registry.py"
    script.write_text(
        "import json\n"
        "import torch\n"
        "from gancore import distributed\n"
        "from ganeval.metric_main import compute_metrics\n"
        "from ganeval.registry import MetricSettings\n"
        "from toolkit_testing.extractors import TinyExtractor\n"
        "distributed.start_from_environment(torch.device('cpu'))\n"
        f"settings = MetricSettings.from_values(**{SETTINGS!r})\n"
        f"result = compute_metrics({str(gen)!r}, {str(real)!r}, None, settings, device='cpu', batch_size=4,\n"
        "                         num_workers=0, extractor=TinyExtractor())\n"
        "if distributed.is_main_process():\n"
        "    print(json.dumps(result.to_dict()))\n")
    several = flat_numbers(json.loads(torchrun([str(script)])))
    one = flat_numbers(json.loads(single([str(script)])))
    assert several == pytest.approx(one, rel=1e-6, abs=1e-9)


# --------------------------------------------------------------------------------------------------------------
# Issue 16: the cache keyed by the weights' content, bad statistics refused, the output checked first


def test_same_name_and_size_weights_do_not_share_cached_statistics(image_sets, tmp_path):
    gen, _ = image_sets
    first, second = tmp_path / "one" / "weights.pth", tmp_path / "two" / "weights.pth"
    for path, fill in ((first, 1), (second, 2)):
        path.parent.mkdir()
        path.write_bytes(bytes([fill]) * 4096)  # same name, same size, other content
    results = []
    for path in (first, second, first):
        extractor = TinyExtractor()
        extractor.source = path
        results.append(compute_statistics(gen, num_images=10, extractor=extractor, num_workers=0,
                                          progress=False, cache_dir=tmp_path / "cache"))
    assert [r.cached for r in results] == [False, False, True]
    assert results[0].cache_path != results[1].cache_path
    assert weights_identity(first) != weights_identity(second)


def test_the_weights_hash_is_computed_once_per_file_version(tmp_path, monkeypatch):
    from ganeval import fid_files

    path = tmp_path / "w.pth"
    path.write_bytes(b"a" * 1000)
    calls = []
    original = fid_files._sha256_of_file
    monkeypatch.setattr(fid_files, "_sha256_of_file", lambda p: calls.append(p) or original(p))
    monkeypatch.setattr(fid_files, "_known_hashes", {})
    digest = weights_sha256(path, tmp_path / "cache")
    assert weights_sha256(path, tmp_path / "cache") == digest and len(calls) == 1
    monkeypatch.setattr(fid_files, "_known_hashes", {})  # a new process: the record file answers
    assert weights_sha256(path, tmp_path / "cache") == digest and len(calls) == 1
    path.write_bytes(b"b" * 1000)
    os.utime(path, ns=(1, 10 ** 18))  # a new version: hashed again
    assert weights_sha256(path, tmp_path / "cache") != digest and len(calls) == 2


@pytest.mark.parametrize("sigma, problem", [
    (-np.eye(4), "negative variances"),
    (np.array([[1.0, 2.0, 0, 0], [2.0, 1.0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]]), "positive semi-definite"),
    (np.triu(np.ones((4, 4))), "not symmetric"),
    (np.full((4, 4), np.nan), "non-finite"),
])
def test_statistics_that_are_not_a_gaussian_are_refused(tmp_path, sigma, problem):
    bad, good = tmp_path / "bad.npz", tmp_path / "good.npz"
    save_statistics(bad, np.zeros(4), sigma)
    save_statistics(good, np.zeros(4), np.eye(4))
    with pytest.raises(UserError, match=problem):
        compute_fid(bad, good, progress=False)
    result = CliRunner().invoke(main, ["fid", str(good), str(bad)])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and problem in result.stderr


def test_stats_output_is_checked_before_any_work(image_sets, tmp_path):
    gen, _ = image_sets
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    missing_weights = tmp_path / "no-such-weights.pth"  # would fail the computation: the output fails first
    for output in (blocker / "stats.npz", tmp_path):
        result = CliRunner().invoke(main, ["stats", str(gen), "-o", str(output), "--inception",
                                           str(missing_weights), "--quiet", "--no-cache"])
        assert result.exit_code == 2 and "no-such-weights" not in result.stderr, result.stderr
        assert str(output) in result.stderr or str(blocker) in result.stderr


def test_a_cache_entry_keeps_only_the_skips_of_its_own_images(tmp_path):
    """SWD reads 16 generated images, FID the first 10 of the same stream; a broken file met at position 12 is
    skipped for SWD only: the FID entry holds no skip, and a later FID pass served from it reports none."""
    gen, real = tmp_path / "gen", tmp_path / "real"
    write_images(gen, random_images(20, 5))
    write_images(real, random_images(20, 6))
    order = ImageStream(gen, num_images=20, seed=stream_seed(7, "gen")).order
    broken = gancore.sources.open_source(gen).files[order[12]]
    broken.write_bytes(b"not a png")
    settings = MetricSettings.from_values(7, False, swd_images=16, fid_images=10, allow_singular=True)
    options = {"device": "cpu", "num_workers": 0, "cache": True, "cache_dir": tmp_path / "cache"}
    first = compute_metrics(gen, real, "swd,fid", settings, skip_bad=True, extractor=TinyExtractor(), **options)
    assert len(first.skipped["gen"]) == 1 and first.skipped["gen"][0].startswith(f"{broken}: cannot decode")
    extractor = TinyExtractor()
    second = compute_metrics(gen, real, "fid", settings, skip_bad=True, extractor=extractor, **options)
    assert extractor.calls == 0 and second.skipped == {"gen": [], "real": []}
    assert second.results["fid"].value == pytest.approx(first.results["fid"].value, rel=1e-12)
