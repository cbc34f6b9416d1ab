"""progan train on 2 processes (torchrun, gloo, CPU) gives the losses and weights of 1 process with the same global
minibatch, through a fade-in and a resume under 2 processes.

The comparison ends with the fade-in: the two differ only in summation order (one 16-image batch vs two halves
averaged), about 1e-7 relative through the fade; trained on, GAN dynamics amplify that (measured here: 1e-4 one
tick later, 1e-3 after three), so a longer comparison would test chaos, not the distributed code."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from progan.checkpoint import load_checkpoint
from progan.configs import resolve_config
from progan.training_loop import find_checkpoint, run_training
from toolkit_testing.process_tree import descendants, process_state

REPO = Path(__file__).resolve().parents[2]
# 8x8: 4x4 to 0.25 kimg, the 8x8 fade-in to 0.5; ticks every 0.256 kimg (16 rounds of 16 images).
# Minibatch stddev off: it takes its groups per GPU (as the original), so with it 2 GPUs are another function.
CONFIG = {"resolution": 8, "lod_training_kimg": 0.25, "lod_transition_kimg": 0.25, "tick_kimg_base": 0.25,
          "total_kimg": 0.512, "metric_swd_images": 0, "network_snapshot_ticks": 1, "image_snapshot_ticks": 2,
          "data_workers": 1, "tensorboard": False, "mbstd_group_size": 0}


def _stats(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]


def _failure(completed: subprocess.CompletedProcess) -> str:
    """A failed run's stderr for the assertion message: its start too (a rank's own last words come before
    torchrun's long summary, which alone fills a plain tail)."""
    text = completed.stderr
    return text if len(text) <= 6000 else f"{text[:3000]}\n[…]\n{text[-3000:]}"


def _progan(*arguments: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "progan.cli", *arguments], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=300, check=False)


def test_two_processes_equal_one_through_a_fade_in_and_a_resume(tmp_path):
    data = tmp_path / "images.npy"
    np.save(data, np.random.default_rng(0).integers(0, 256, (256, 8, 8, 3), dtype=np.uint8))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_training(resolve_config("tiny", CONFIG), data, tmp_path / "one", device="cpu", log=lambda line: None)
    finally:
        torch.set_num_threads(threads)
    settings = [part for key, value in CONFIG.items() for part in ("--set", f"{key}={json.dumps(value)}")]
    run = tmp_path / "two"
    first = _progan("train", "--config", "tiny", "--data", str(data), "--out", str(run), "--gpus", "2",
                    "--device", "cpu", *settings, "--kimg", "0.256")                 # tick 1: 4x4
    assert first.returncode == 0, _failure(first)
    second = _progan("train", "--resume", str(run), "--gpus", "2", "--device", "cpu", "--kimg", "0.512")  # fade
    assert second.returncode == 0, _failure(second)
    one, two = _stats(tmp_path / "one"), _stats(run)
    assert [row["tick"] for row in two] == [row["tick"] for row in one] == [1, 2]
    assert one[0]["lod"] == 1 and 0 < one[1]["lod"] < 0.1              # tick 2 ends at the end of the fade-in
    for a, b in zip(one, two):
        assert (a["kimg"], a["lod"], a["minibatch"]) == (b["kimg"], b["lod"], b["minibatch"])
        for key in ("loss_D", "loss_G", "D_real", "D_fake", "gradient_penalty"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), (a["tick"], key)
    final_one, final_two = load_checkpoint(find_checkpoint(tmp_path / "one")), load_checkpoint(find_checkpoint(run))
    assert final_two["progress"]["cur_nimg"] == final_one["progress"]["cur_nimg"] == 512
    for key in ("G", "D", "G_ema"):
        for name, value in final_one[key].items():
            torch.testing.assert_close(final_two[key][name], value, rtol=1e-5, atol=1e-5, msg=f"{key}.{name}")


# ---------------------------------------------------------------------------------------------------------------
# `progan train --gpus N`: the launcher's exit, never torchrun's traceback


def _launch(arguments: list[str], run: Path, data: Path, *command: str) -> subprocess.Popen:
    """`progan train --gpus 2` on the data; `command`: how Python runs the CLI (`-m progan.cli`)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen([sys.executable, *(command or ("-m", "progan.cli")), "train", "--config", "tiny", "--data", str(data),
                             "--out", str(run), "--gpus", "2", "--device", "cpu", "--set", "metric_swd_images=0",
                             "--set", "tensorboard=false", *arguments], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)


def _wait_for(condition, seconds: float = 120.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def images_8x8(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("data") / "images.npy"
    np.save(data, np.random.default_rng(0).integers(0, 256, (256, 8, 8, 3), dtype=np.uint8))
    return data


def test_a_failing_rank_leaves_its_error_line_and_status(tmp_path, images_8x8):
    """Both ranks refuse the data (8×8 images for a 16×16 config): their `error:` lines, exit 2, no traceback."""
    launcher = _launch(["--set", "resolution=16", "--kimg", "1"], tmp_path / "run", images_8x8)
    out, err = launcher.communicate(timeout=300)
    assert launcher.returncode == 2, err
    assert err.strip() and all(line.startswith("error: ") for line in err.strip().splitlines()), err
    assert "Traceback" not in err + out


def test_sigterm_to_the_launcher_checkpoints_and_exits_0(tmp_path, images_8x8):
    """SIGTERM to `progan train --gpus 2` (what a scheduler sends): torchrun forwards it, rank 0 writes the
    interrupted checkpoint, the launcher exits 0 with no traceback and no process left."""
    run = tmp_path / "run"
    launcher = _launch(["--set", "resolution=8", "--kimg", "50"], run, images_8x8)
    _wait_for(lambda: (run / "stats.jsonl").is_file() or launcher.poll() is not None)
    ranks = descendants(launcher.pid)
    launcher.send_signal(signal.SIGTERM)
    out, err = launcher.communicate(timeout=120)
    assert launcher.returncode == 0, err
    assert "Traceback" not in err + out and "resume with: progan train --resume" in out
    assert len(list(run.glob("interrupted-*.pt"))) == 1
    _wait_for(lambda: not (descendants(launcher.pid) | {pid for pid in ranks if Path(f"/proc/{pid}").exists()}),
              seconds=10)


def test_a_killed_rank_is_one_error_line(tmp_path, images_8x8):
    """A rank killed by SIGKILL (the out-of-memory killer's way): the launcher's `error: rank … was killed by
    SIGKILL`, exit 2; the other rank, whose collective fails, its own one line, not a traceback."""
    run = tmp_path / "run"
    launcher = _launch(["--set", "resolution=8", "--kimg", "50"], run, images_8x8)
    _wait_for(lambda: (run / "stats.jsonl").is_file() or launcher.poll() is not None)
    ranks = [pid for pid in descendants(launcher.pid) if b"progan.cli" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert ranks
    environment = dict(entry.split(b"=", 1) for entry in Path(f"/proc/{ranks[0]}/environ").read_bytes().split(b"\0")
                       if b"=" in entry)
    os.kill(ranks[0], signal.SIGKILL)
    out, err = launcher.communicate(timeout=120)
    assert launcher.returncode == 2, err
    assert "Traceback" not in err + out
    lines = [line for line in err.splitlines() if not line.startswith(("tick ", "note: "))]
    killed = int(environment[b"RANK"])
    assert lines[-1] == f"error: rank {killed} was killed by SIGKILL", err
    assert all(line.startswith(f"error: rank {1 - killed} lost the other ranks (") for line in lines[:-1]), err


# `progan.cli` run as the launcher, but torchrun held (a test's stand-in for a slow machine) once it has started
# rank 1 and before it records the ranks: a signal then stops torchrun before it knows of any rank to stop.
HOLD_TORCHRUN_WHILE_IT_STARTS_THE_RANKS = """
import runpy, subprocess, sys, time
from pathlib import Path
start = subprocess.Popen.__init__
def hold_after_rank_1(self, *args, **kwargs):
    start(self, *args, **kwargs)
    env = kwargs.get("env")
    if env and env.get("RANK") == "1":
        Path({held!r}).touch()
        time.sleep(600)
subprocess.Popen.__init__ = hold_after_rank_1
runpy.run_module("progan.cli", run_name="__main__")
"""


@pytest.mark.parametrize("hold_torchrun", [False, True], ids=["as the ranks start", "while torchrun starts them"])
def test_sigterm_before_training_is_one_line(tmp_path, images_8x8, hold_torchrun):
    """SIGTERM while the ranks still start (also before torchrun has recorded them): nothing to checkpoint, one
    line, exit 1 (as an interrupt), no rank left behind."""
    run, held = tmp_path / "run", tmp_path / "held"
    command = ("-c", HOLD_TORCHRUN_WHILE_IT_STARTS_THE_RANKS.format(held=str(held))) if hold_torchrun else ()
    launcher = _launch(["--set", "resolution=8", "--kimg", "50"], run, images_8x8, *command)
    if hold_torchrun:
        _wait_for(lambda: held.exists() or launcher.poll() is not None)
    else:
        _wait_for(lambda: len(descendants(launcher.pid)) >= 2 or launcher.poll() is not None)
    ranks = descendants(launcher.pid)
    launcher.send_signal(signal.SIGTERM)
    _, err = launcher.communicate(timeout=120)
    assert launcher.returncode == 1, err
    assert err.strip().splitlines() == ["interrupted by SIGTERM before the ranks wrote a checkpoint"], err
    assert not list(run.glob("interrupted-*.pt"))
    assert len(ranks) >= 2 and not [pid for pid in ranks if process_state(pid) not in (None, "Z")]
