"""Run folders that cannot be clobbered: a new run refuses a folder holding one (nothing on disk changes), a resume
says which checkpoint it loaded and takes the newest valid one, and stats.jsonl keeps exactly one row per tick
through any sequence of kills (SIGKILL, or a death on either side of a snapshot's write) and resumes."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import progan.training_loop
from gancore.errors import UserError
from progan.cli import main as progan_main
from progan.configs import resolve_config
from progan.runs import find_checkpoint, resume_setup, truncate_stats
from progan.training_loop import run_training

REPO = Path(__file__).resolve().parents[2]
# 8×8 in 2 kimg: 4 ticks of 512 images, network snapshots at ticks 2 and 4 (network-snapshot-000001.pt at 1.024
# kimg, -000002.pt at 2.048 kimg)
RUN = {"resolution": 8, "lod_training_kimg": 0.25, "lod_transition_kimg": 0.25, "tick_kimg_base": 0.5,
       "total_kimg": 2.0, "metric_swd_images": 0, "network_snapshot_ticks": 2, "image_snapshot_ticks": 2,
       "data_workers": 1, "tensorboard": False}


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "images.npy"
    np.save(path, np.random.default_rng(0).integers(0, 256, (256, 8, 8, 3), dtype=np.uint8))
    return path


@pytest.fixture(scope="module")
def finished(data, tmp_path_factory, train_quietly) -> Path:
    run = tmp_path_factory.mktemp("finished") / "run"
    return train_quietly(RUN, data, run)


def _ticks(run: Path) -> list[int]:
    return [json.loads(line)["tick"] for line in (run / "stats.jsonl").read_text().splitlines()]


def _hashes(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under `folder`, hidden ones included, by relative path."""
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def _copy(run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy


def _overrides(values: dict) -> list[str]:
    return [part for key, value in values.items() for part in ("--set", f"{key}={json.dumps(value)}")]


def test_a_second_train_into_a_run_is_refused_and_changes_nothing(data, finished, tmp_path):
    run = _copy(finished, tmp_path)
    before = _hashes(run)
    result = CliRunner().invoke(progan_main, ["train", "--config", "tiny", "--data", str(data), "--out", str(run),
                                              "--device", "cpu", *_overrides(RUN)])
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and result.output.startswith(f"error: {run} already holds a run")
    assert f"--resume {run}" in result.output
    with pytest.raises(UserError, match="already holds a run"):  # the Python API refuses too
        run_training(resolve_config("tiny", RUN), data, run, device="cpu")
    assert _hashes(run) == before


def test_a_new_run_into_an_empty_or_unrelated_folder_is_allowed(data, tmp_path):
    (tmp_path / "notes.txt").write_text("my notes")
    run_training(resolve_config("tiny", {**RUN, "total_kimg": 0.25}), data, tmp_path, device="cpu",
                  log=lambda line: None)
    assert _ticks(tmp_path) == [1] and (tmp_path / "notes.txt").read_text() == "my notes"


def test_resume_says_what_it_loaded_and_skips_a_corrupt_newest(data, finished, tmp_path):
    run = _copy(finished, tmp_path)
    newest = run / "network-snapshot-000002.pt"                          # tick 4, the final one
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # torn, as by a full disk
    result = CliRunner().invoke(progan_main, ["train", "--resume", str(run), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("note: skipped network-snapshot-000002.pt: ") and "truncated" in lines[0]
    assert lines[1] == f"resuming from {run / 'network-snapshot-000001.pt'} (1.024 kimg, tick 2)"
    assert _ticks(run) == [1, 2, 3, 4]
    assert find_checkpoint(run) == newest                               # written again by the resumed run


def test_resume_from_an_older_file_in_its_own_folder_is_refused(finished, tmp_path):
    run = _copy(finished, tmp_path)
    before = _hashes(run)
    result = CliRunner().invoke(progan_main, ["train", "--resume", str(run / "network-snapshot-000001.pt"),
                                              "--device", "cpu"])
    assert result.exit_code == 2 and "holds checkpoints newer than network-snapshot-000001.pt" in result.output
    assert _hashes(run) == before
    elsewhere = resume_setup(run / "network-snapshot-000001.pt", [], run_dir=tmp_path / "branch")
    assert (elsewhere.kimg, elsewhere.tick) == (1.024, 2)               # into a new folder: allowed



def test_resume_into_another_runs_folder_is_refused(finished, tmp_path):
    run, other = _copy(finished, tmp_path / "a"), _copy(finished, tmp_path / "b")
    before = _hashes(other)
    result = CliRunner().invoke(progan_main, ["train", "--resume", str(run / "network-snapshot-000001.pt"),
                                              "--out", str(other), "--device", "cpu"])
    assert result.exit_code == 2 and "already holds a run" in result.output, result.output
    assert _hashes(other) == before
class Died(Exception):
    """Stands for a SIGKILL at one point of the tick maintenance."""


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_death_on_either_side_of_a_snapshot_write_keeps_one_row_per_tick(data, tmp_path, monkeypatch, when):
    run, config = tmp_path / "run", resolve_config("tiny", {**RUN, "total_kimg": 3.0})  # snapshots at ticks 2, 4, 6
    save = progan.training_loop.save_checkpoint
    calls = []

    def dies_at_the_second(path, state):
        calls.append(path)
        if len(calls) == 2 and when == "before":
            raise Died
        written = save(path, state)
        if len(calls) == 2:
            raise Died
        return written

    monkeypatch.setattr(progan.training_loop, "save_checkpoint", dies_at_the_second)
    with pytest.raises(Died):                                           # at tick 4
        run_training(config, data, run, device="cpu", log=lambda line: None)
    monkeypatch.setattr(progan.training_loop, "save_checkpoint", save)
    setup = resume_setup(run, [])
    assert setup.tick == (2 if when == "before" else 4)
    run_training(setup.config, setup.data_path, run, resume=run, device="cpu", log=lambda line: None)
    rows = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    expected = [(tick, 0.512 * tick) for tick in range(1, 6)] + [(6, 3.008)]  # the last tick stops at 3 kimg
    assert [(row["tick"], row["kimg"]) for row in rows] == expected


def _train_process(run: Path, args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen([sys.executable, "-m", "progan.cli", "train", "--device", "cpu", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)


def test_sigkill_and_resume_sequences_keep_one_row_per_tick(data, tmp_path):
    run = tmp_path / "run"
    values = {**RUN, "tick_kimg_base": 0.25}  # 8 ticks, a snapshot every second one
    first = ["--config", "tiny", "--data", str(data), "--out", str(run), *_overrides(values)]
    for kill_after_rows in (3, 6):
        process = _train_process(run, first if kill_after_rows == 3 else ["--resume", str(run)])
        try:
            deadline = time.monotonic() + 120
            while not (run / "stats.jsonl").is_file() or len(_ticks(run)) < kill_after_rows:
                assert process.poll() is None and time.monotonic() < deadline, process.communicate()
                time.sleep(0.01)
            process.send_signal(signal.SIGKILL)
            process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
        ticks = _ticks(run)
        assert ticks == list(range(1, len(ticks) + 1))
    process = _train_process(run, ["--resume", str(run)])
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    assert err.count("resuming from ") == 1 and "done: 2.0 kimg in 8 ticks" in out
    assert _ticks(run) == list(range(1, 9))


def test_truncate_stats_keeps_the_last_row_of_each_tick_and_drops_torn_lines(tmp_path):
    stats = tmp_path / "stats.jsonl"
    stats.write_text('{"tick": 1, "v": 0}\n{"tick": 2, "v": 0}\n{"tick": 1, "v": 1}\n["x"]\n{"tick": 3}\n'
                     '{"tick": 2, "v": 1}\n{"tick": 4, "v"')
    truncate_stats(stats, 2)
    assert [json.loads(line) for line in stats.read_text().splitlines()] == [{"tick": 1, "v": 1},
                                                                            {"tick": 2, "v": 1}]
