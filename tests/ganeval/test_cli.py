"""`ganeval` CLI: output formats, JSON contract and clear errors (no tracebacks)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from gancore.sources import select_indices
from ganeval.cli import main
from toolkit_testing.images import EXAMPLES, write_images


@pytest.fixture()
def runner() -> CliRunner:
    return CliRunner()


def test_swd_json_contract(runner):
    result = runner.invoke(main, ["swd", str(EXAMPLES / "gen"), str(EXAMPLES / "real"), "--num-images", "16",
                                  "--seed", "3", "--json", "--quiet", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["command"] == "swd" and payload["num_images"] == {"swd": 16} and payload["seed"] == 3
    assert set(payload) == {"command", "metrics", "num_images", "seed", "sources", "notes", "skipped", "device",
                            "seconds"}  # the shape of every ganeval command
    swd = payload["metrics"]["swd"]
    assert list(swd["levels"]) == ["128", "64", "32", "16"] and "seconds" not in swd
    assert swd["avg"] == pytest.approx(np.mean(list(swd["levels"].values())))
    assert "std" not in swd and "baseline" not in swd


def test_swd_table_with_repeats_and_baseline(runner):
    result = runner.invoke(main, ["swd", str(EXAMPLES / "gen"), str(EXAMPLES / "real"), "--num-images", "8",
                                  "--repeats", "2", "--baseline", "--quiet"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[0].split() == ["128", "64", "32", "16", "avg"]
    assert lines[1].startswith("SWD x1e3") and lines[2].startswith("std (2 seeds)")
    assert lines[3].startswith("reals vs reals (8)")
    json_result = runner.invoke(main, ["swd", str(EXAMPLES / "gen"), str(EXAMPLES / "real"), "--num-images", "8",
                                       "--repeats", "2", "--baseline", "--quiet", "--json"])
    swd = json.loads(json_result.stdout)["metrics"]["swd"]
    assert set(swd["std"]) == {"levels", "avg"} and swd["baseline"]["num_images"] == 8


def test_bad_inputs_give_one_line_errors(runner, tmp_path):
    (tmp_path / "empty").mkdir()
    cases = [
        ([str(tmp_path / "empty"), str(EXAMPLES / "real")], "empty source"),
        ([str(tmp_path / "missing"), str(EXAMPLES / "real")], "no such file or directory"),
        ([str(EXAMPLES / "gen"), str(EXAMPLES / "real"), "--num-images", "100"], "has 64 images, SWD needs 100 (lower --num-images)"),
        ([str(EXAMPLES / "gen"), str(EXAMPLES / "real"), "--num-images", "4", "--device", "cuda:7"], "device"),
    ]
    for args, message in cases:
        result = runner.invoke(main, ["swd", *args, "--quiet"])
        assert result.exit_code == 2, (args, result.output)
        assert message in result.stderr and "Traceback" not in result.stderr


def test_skip_bad_reports_count(runner, tmp_path):
    rng = np.random.default_rng(1)
    paths = write_images(tmp_path / "gen", rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8))
    write_images(tmp_path / "real", rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8))
    paths[1].write_bytes(b"broken")
    # a seed whose random subset of the generated set reaches the broken file among its first 5 candidates
    seed = next(s for s in range(100) if 1 in select_indices(6, 5, s)[:5])
    args = ["swd", str(tmp_path / "gen"), str(tmp_path / "real"), "--num-images", "5", "--quiet", "--json",
            "--seed", str(seed)]
    failed = runner.invoke(main, args)
    assert failed.exit_code == 2 and "0001.png" in failed.stderr and "--skip-bad" in failed.stderr
    result = runner.invoke(main, args + ["--skip-bad"])
    assert result.exit_code == 0, result.output
    skipped = json.loads(result.stdout)["skipped"]
    assert len(skipped["gen"]) == 1 and "0001.png" in skipped["gen"][0] and skipped["real"] == []
    assert "0001.png" in result.stderr


def test_installed_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "ganeval.cli", "swd", str(EXAMPLES / "gen"),
                             str(EXAMPLES / "real"), "--num-images", "4", "--json", "--quiet"],
                            check=False, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["command"] == "swd"


def test_msssim_json_and_errors(runner, tmp_path):
    result = runner.invoke(main, ["msssim", str(EXAMPLES / "real"), "--num-pairs", "8", "--json", "--quiet"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    msssim = payload["metrics"]["msssim"]
    assert payload["command"] == "msssim" and msssim["num_pairs"] == 8 and 0.0 <= msssim["value"] <= 1.0
    too_many = runner.invoke(main, ["msssim", str(EXAMPLES / "gen"), "--num-pairs", "40", "--quiet"])
    assert too_many.exit_code == 2 and "needs 80" in too_many.stderr and "Traceback" not in too_many.stderr
    rng = np.random.default_rng(2)
    write_images(tmp_path / "tiny", rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8))
    tiny = runner.invoke(main, ["msssim", str(tmp_path / "tiny"), "--num-pairs", "2", "--quiet"])
    assert tiny.exit_code == 2 and "too small" in tiny.stderr
