"""`progan evaluate RUN --real DATA`: every snapshot scored at its resolution, a table (Markdown + JSON) and curves,
resumable; the trainer's snapshot metrics come from the same path (equal values for the final snapshot)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import ganeval.inception
from gancore.errors import UserError
from ganeval.registry import MetricSettings
from progan.cli import main as progan_main
from progan.configs import resolve_config
from progan.evaluation import curve_values, evaluate_run
from progan.training_loop import snapshot_metrics
from toolkit_testing.extractors import TinyExtractor

# 16×16 (4 → 8 → 16 by 1.25 kimg) in 3 kimg, a network snapshot every 1-kimg tick: 000001, 000002, 000003
RUN = {"lod_training_kimg": 0.25, "lod_transition_kimg": 0.25, "tick_kimg_base": 1.0, "total_kimg": 3.0,
       "metric_swd_images": 64, "network_snapshot_ticks": 1, "image_snapshot_ticks": 3, "data_workers": 1,
       "tensorboard": False}


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def reals(tmp_path_factory) -> Path:
    """128 smooth random 16×16 images (the run's resolution), as an array file."""
    path = tmp_path_factory.mktemp("reals") / "reals.npy"
    coarse = np.random.default_rng(0).integers(0, 256, (128, 4, 4, 3), dtype=np.uint8)
    np.save(path, np.repeat(np.repeat(coarse, 4, axis=1), 4, axis=2))
    return path


@pytest.fixture(scope="module")
def run(reals, tmp_path_factory, train_quietly) -> Path:
    run = tmp_path_factory.mktemp("run") / "run"
    return train_quietly(RUN, reals, run)


def test_evaluate_writes_the_table_and_curves_and_resumes(run, reals, tmp_path):
    out = tmp_path / "eval"
    args = ["evaluate", str(run), "--real", str(reals), "--metrics", "swd,msssim", "--swd-images", "64",
            "--msssim-pairs", "32", "--out", str(out), "--device", "cpu"]
    result = CliRunner().invoke(progan_main, args)
    assert result.exit_code == 0, result.output
    assert "3 snapshots: 6 values computed, 0 reused" in result.output
    table = json.loads((out / "evaluation.json").read_text())
    assert table["format"] == "progan-evaluation" and table["metrics"] == ["swd", "msssim"]
    rows = table["rows"]
    assert [row["snapshot"] for row in rows] == [f"network-snapshot-00000{k}.pt" for k in (1, 2, 3)]
    assert [row["kimg"] for row in rows] == sorted(row["kimg"] for row in rows)
    assert all(row["resolution"] == 16 and set(row["metrics"]["swd"]["levels"]) == {"16"} for row in rows)
    markdown = (out / "evaluation.md").read_text().splitlines()
    assert markdown[2].startswith("| snapshot | kimg | resolution | swd 16 | swd avg | msssim |")
    assert len(markdown) == 4 + 3
    swd = rows[-1]["metrics"]["swd"]["avg"]
    assert f"{swd:.4g}" in markdown[-1]
    for name in ("swd", "msssim"):
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    before = {path.name: path.stat().st_mtime_ns for path in out.iterdir()}
    again = CliRunner().invoke(progan_main, args + ["--metrics", "swd"])   # the last --metrics wins
    assert again.exit_code == 0 and "3 snapshots: 0 values computed, 3 reused" in again.output, again.output
    assert json.loads((out / "evaluation.json").read_text())["rows"][2]["metrics"]["swd"]["avg"] == swd
    assert (out / "msssim.png").stat().st_mtime_ns == before["msssim.png"]   # not this run's metric
    earlier = json.loads((out / "evaluation.json").read_text())  # as written before each metric had its settings
    for row in earlier["rows"]:
        row["settings"]["extra"] = {}
    (out / "evaluation.json").write_text(json.dumps(earlier))
    reread = CliRunner().invoke(progan_main, args + ["--metrics", "swd"])
    assert reread.exit_code == 0 and "3 snapshots: 0 values computed, 3 reused" in reread.output, reread.output
    other_seed = CliRunner().invoke(progan_main, args + ["--seed", "7"])
    assert other_seed.exit_code == 0 and "6 values computed, 0 reused" in other_seed.output
    assert not list(out.glob(".*partial"))


def test_default_counts_are_the_papers_or_all_the_reals_hold(run, reals, tmp_path):
    """No count given: SWD reads the paper's 16384 per set, lowered (with a note) to the 128 the reals hold."""
    result = CliRunner().invoke(progan_main, ["evaluate", str(run), "--real", str(reals), "--out",
                                              str(tmp_path / "eval"), "--device", "cpu", "--no-plots", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "eval" / "evaluation.json").read_text())["rows"]
    assert len(rows) == 3 and all(row["metrics"]["swd"]["levels"] for row in rows)
    assert "128" in result.stderr and "note:" in result.stderr, result.stderr


def test_a_second_evaluation_into_the_same_folder_is_refused(run, reals, tmp_path):
    from gancore.locking import FolderLock

    with FolderLock(tmp_path / "eval", "progan evaluate"):
        result = CliRunner().invoke(progan_main, ["evaluate", str(run), "--real", str(reals), "--out",
                                                  str(tmp_path / "eval"), "--device", "cpu", "--no-plots"])
    assert result.exit_code == 2 and result.stderr.startswith("error: "), result.output
    assert "progan evaluate" in result.stderr and not (tmp_path / "eval" / "evaluation.json").exists()


def test_inception_metrics_through_an_extractor_and_partial_reuse(run, reals, tmp_path):
    settings = MetricSettings.from_values(1, False, swd_images=64, fid_images=64)
    first = evaluate_run(run, reals, ["swd"], settings, tmp_path, device="cpu", extractor=TinyExtractor(),
                         plots=False)
    second = evaluate_run(run, reals, ["swd", "fid", "pr"], settings, tmp_path, device="cpu",
                          extractor=TinyExtractor(), plots=False)
    assert (first.computed, second.computed, second.reused) == (3, 6, 3)
    assert [row.metrics["swd"] for row in first.rows] == [row.metrics["swd"] for row in second.rows]
    labels = curve_values("pr", second.rows[0].metrics["pr"])
    assert set(labels) == {"pr precision", "pr recall"} and all(0 <= v <= 1 for v in labels.values())
    assert second.rows[0].metrics["fid"]["value"] > 0


def test_the_reals_features_are_computed_once_per_resolution(run, reals, tmp_path, monkeypatch):
    """Three snapshots (all at 16²): the reals go through the feature network once per resolution, not once per
    snapshot, and a second evaluation (another folder) reads them from the cache; the network is loaded once per
    run."""
    settings = MetricSettings.from_values(1, False, fid_images=64, allow_singular=True)
    extractor = TinyExtractor()
    first = evaluate_run(run, reals, ["fid"], settings, tmp_path / "a", device="cpu", extractor=extractor,
                         plots=False, cache=True, cache_dir=tmp_path / "cache")
    resolutions = {row.resolution for row in first.rows}
    assert len(first.rows) == 3 and len(resolutions) < 3
    assert extractor.images == 64 * (3 + len(resolutions))  # generated images every time, reals once each
    again = TinyExtractor()
    second = evaluate_run(run, reals, ["fid"], settings, tmp_path / "b", device="cpu", extractor=again,
                          plots=False, cache=True, cache_dir=tmp_path / "cache")
    assert again.images == 64 * 3 and [row.metrics for row in second.rows] == [row.metrics for row in first.rows]
    loads = []
    monkeypatch.setattr("ganeval.features.load_inception", lambda *args, **kwargs: loads.append(1) or
                        TinyExtractor())
    monkeypatch.setattr("ganeval.features.LazyExtractor.weights_file", lambda self: None)
    monkeypatch.setattr("ganeval.features.find_inception_weights",  # the download evaluate_run asks for first
                        lambda *args, **kwargs: tmp_path / "pt_inception-2015-12-05-6726825d.pth")
    evaluate_run(run, reals, ["fid"], settings, tmp_path / "c", device="cpu", plots=False)
    assert len(loads) == 1


def test_the_trainer_scores_through_the_same_path(run, reals, tmp_path):
    """The final snapshot (lod 0, 16×16) evaluated with the trainer's settings gives the trainer's SWD."""
    last = json.loads((run / "stats.jsonl").read_text().splitlines()[-1])
    config = resolve_config("tiny", RUN)
    settings = snapshot_metrics(config, 128).settings
    result = evaluate_run(run, reals, ["swd"], settings, tmp_path, device="cpu", plots=False)
    assert result.rows[-1].snapshot == last["snapshot"]
    assert result.rows[-1].metrics["swd"]["levels"] == last["metrics"]["swd"]["levels"]


def test_snapshot_metrics_say_what_they_leave_out(monkeypatch):
    def no_weights(download):
        raise UserError("no weights")

    monkeypatch.setattr(ganeval.inception, "find_inception_weights", no_weights)
    config = resolve_config("tiny", {"metrics": ["swd", "fid", "kid"], "metric_fid_images": 100,
                                     "metric_swd_images": 1024})
    plan = snapshot_metrics(config, 256)
    assert plan.names == ["swd"]
    text = "\n".join(plan.notes)
    assert "swd reads 256 images per set" in text and "fid, kid skipped: no Inception weights" in text
    off = snapshot_metrics(resolve_config("tiny", {"metrics": ["swd", "fid"]}), 256)   # tiny: metric_fid_images 0
    assert any("snapshot metric fid is off (metric_fid_images = 0" in line for line in off.notes)


def test_evaluate_refuses_before_work(run, reals, tmp_path, monkeypatch):
    __import__("numpy").save(tmp_path / "empty.npy", __import__("numpy").zeros((0, 8, 8, 3), "uint8"))
    result = CliRunner().invoke(progan_main, ["evaluate", str(tmp_path), "--real", str(reals)])
    assert result.exit_code == 2 and "no network-snapshot-*.pt to evaluate" in result.output
    result = CliRunner().invoke(progan_main, ["evaluate", str(run), "--real", str(reals), "--metrics", "swd,nope"])
    assert result.exit_code == 2 and "unknown metric" in result.output
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)
    result = CliRunner().invoke(progan_main, ["evaluate", str(run), "--real", str(reals), "--out",
                                              str(tmp_path / "e")])
    assert result.exit_code == 2 and "pip install 'progan-toolkit[plot]'" in result.output
    assert not (tmp_path / "e").exists()
    result = CliRunner().invoke(progan_main, ["evaluate", str(run), "--real", str(tmp_path / "empty.npy"),
                                              "--no-plots", "--out", str(tmp_path / "e" / "f")])
    assert result.exit_code == 2 and "error: " in result.output
    assert not (tmp_path / "e").exists()  # an evaluation refused once under way leaves no empty folder


def test_missing_inception_weights_are_said_before_any_snapshot(run, reals, tmp_path, monkeypatch):
    """Offline without the Inception weights, `--metrics swd,kid` stops before the first snapshot's SWD."""
    import torch

    import progan.evaluation

    def offline(*args, **kwargs):
        raise OSError("no network")

    loads = []
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    monkeypatch.setattr(progan.evaluation, "generator_from_checkpoint", lambda *args: loads.append(args))
    result = CliRunner().invoke(progan_main, ["evaluate", str(run), "--real", str(reals), "--metrics", "swd,kid",
                                              "--no-plots", "--out", str(tmp_path / "e"), "--device", "cpu"])
    assert result.exit_code == 2 and "the FID Inception weights are not available (download failed: no network)" \
        in result.output, result.output
    assert loads == [] and not (tmp_path / "e").exists()
