"""progan train as a user drives it: the released code's presets and the per-GPU guard, typed --set values, a
SIGTERM in the middle of a tick (checkpoint, exit 0, exact continuation, one stats row per tick), --resume from a
file or a folder with a torn or missing config.json."""

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
from click.testing import CliRunner

from gancore.errors import UserError
from progan.checkpoint import load_checkpoint
from progan.cli import main as progan_main
from progan.configs import resolve_config
from progan.schedule import check_gpu_split, gpu_splits, training_phase
from progan.training_loop import find_checkpoint, resume_setup, run_training
from toolkit_testing.fixtures import one_thread  # noqa: F401  (autouse: one intra-op thread on the shared machine)

REPO = Path(__file__).resolve().parents[2]



# ---------------------------------------------------------------------------------------------------------------
# Presets: the released config.py, transcribed here line by line

RELEASED_V2 = {  # num_gpus: (minibatch_base, minibatch_dict, G_lrate_dict = D_lrate_dict)
    1: (4, {4: 128, 8: 128, 16: 128, 32: 64, 64: 32, 128: 16, 256: 8, 512: 4}, {1024: 0.0015}),
    2: (8, {4: 256, 8: 256, 16: 128, 32: 64, 64: 32, 128: 16, 256: 8}, {512: 0.0015, 1024: 0.002}),
    4: (16, {4: 512, 8: 256, 16: 128, 32: 64, 64: 32, 128: 16}, {256: 0.0015, 512: 0.002, 1024: 0.003}),
    8: (32, {4: 512, 8: 256, 16: 128, 32: 64, 64: 32}, {128: 0.0015, 256: 0.002, 512: 0.003, 1024: 0.003}),
}


def _released_minibatch(gpus: int, resolution: int) -> int:
    """train.py's TrainingSchedule with config.py's v2 preset and '-fp32' (max_minibatch_per_gpu)."""
    base, table, _ = RELEASED_V2[gpus]
    minibatch = table.get(resolution, base)
    minibatch -= minibatch % gpus
    cap = {256: 16, 512: 8, 1024: 4}
    return min(minibatch, cap[resolution] * gpus) if resolution in cap else minibatch


@pytest.mark.parametrize("gpus", [1, 2, 4, 8])
def test_celebahq_presets_equal_the_released_config(gpus):
    config = resolve_config("celebahq-1024", gpus=gpus)
    base, table, lrates = RELEASED_V2[gpus]
    assert (config.minibatch_base, config.minibatch_dict, config.G_lr_dict, config.D_lr_dict) == (
        base, table, lrates, lrates)
    assert (config.lod_training_kimg, config.lod_transition_kimg, config.total_kimg) == (600, 600, 12000)
    assert config.max_minibatch_per_gpu == {256: 16, 512: 8, 1024: 4} and config.mbstd_group_size == 4
    for split in gpu_splits(config, gpus):
        assert split.minibatch == _released_minibatch(gpus, split.resolution)
        assert split.per_gpu * gpus == split.minibatch and split.group == min(4, split.per_gpu)
    check_gpu_split(config, gpus)
    start_1024 = 600 + 7 * 1200 + 1                                   # into the fade-in of 1024²
    phase = training_phase(config, start_1024, gpus)
    assert phase.G_lr == phase.D_lr == lrates.get(1024, 0.001)


def test_paper_preset_refused_on_8_gpus_and_info_prints_the_split():
    result = CliRunner().invoke(progan_main, ["info", "--config", "celebahq-1024", "--gpus", "8", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["preset_gpus"] == 8
    last = info["schedule"][-1]
    assert (last["resolution"], last["minibatch"], last["per_gpu"], last["group"]) == (1024, 32, 4, 4)
    result = CliRunner().invoke(progan_main, ["info", "--config", "celebahq-1024", "--gpus", "8"])
    assert "per GPU" in result.output and "released preset for 8 GPUs" in result.output
    result = CliRunner().invoke(progan_main, ["info", "--config", "celebahq-1024-v1", "--gpus", "8"])
    assert result.exit_code == 2
    assert "error: celebahq-1024-v1 on 8 GPUs: at 256x256 the minibatch of 14" in result.output
    assert "1 image per GPU" in result.output and result.output.count("\n") == 1
    with pytest.raises(UserError, match="not a multiple of the minibatch-stddev group"):
        check_gpu_split(resolve_config("tiny", {"minibatch_base": 12}), 2)   # 6 per GPU, groups of 4


# ---------------------------------------------------------------------------------------------------------------
# --set values typed by the config's fields


@pytest.mark.parametrize("override, message", [
    ("resolution=abc", "config resolution = 'abc': expected int or null"),
    ("bf16=maybe", "config bf16 = 'maybe': expected bool"),
    ("G_lr=NaN", "config G_lr = nan: not a finite number"),
    ("minibatch_dict=[1,2]", "minibatch_dict = [1, 2]: expected an object keyed by resolution"),
    ('minibatch_dict={"4": 0}', "minibatch_dict[4] = 0: expected a positive integer"),
    ("resolution=24", "resolution 24 is not a power of two"),
    ("nonsense=1", "unknown config key(s) ['nonsense']"),
    ("G_ema_beta=2", "G_ema_beta = 2.0 must lie in [0, 1]"),
])
def test_bad_set_values_give_one_error_line(tmp_path, override, message):
    result = CliRunner().invoke(progan_main, ["train", "--data", str(tmp_path), "--out", str(tmp_path / "run"),
                                              "--set", override, "--device", "cpu"])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and message in result.output, result.output
    assert not (tmp_path / "run").exists()


def test_set_values_are_converted():
    config = resolve_config("tiny", ["G_lr=1", 'G_lr_dict={"8": 2}', "grid_size=[2, 3]", "D_fmap_base=null"])
    assert config.G_lr == 1.0 and isinstance(config.G_lr, float) and config.G_lr_dict == {8: 2.0}
    assert config.grid_size == [2, 3] and config.D_fmap_base is None
    legacy = resolve_config("tiny", {"lr_dict": {"8": 0.5}})          # config.json of older runs
    assert legacy.G_lr_dict == legacy.D_lr_dict == {8: 0.5}


# ---------------------------------------------------------------------------------------------------------------
# Preemption and resume

SMALL = {"resolution": 8, "lod_training_kimg": 0.25, "lod_transition_kimg": 0.25, "tick_kimg_base": 0.25,
         "total_kimg": 1.5, "metric_swd_images": 0, "network_snapshot_ticks": 3, "image_snapshot_ticks": 3,
         "data_workers": 1, "tensorboard": False}


def _stats(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "images.npy"
    rng = np.random.default_rng(0)
    np.save(path, rng.integers(0, 256, (256, 8, 8, 3), dtype=np.uint8))
    return path


@pytest.fixture(scope="module")
def uninterrupted(small_data, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("full") / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the other runs: the thread count changes float sums
    run_training(resolve_config("tiny", SMALL), small_data, run, device="cpu", log=lambda line: None)
    torch.set_num_threads(threads)
    return run


def _start_training(data: Path, run: Path, total_kimg: float) -> subprocess.Popen:
    overrides = [f"{key}={json.dumps(value)}" for key, value in {**SMALL, "total_kimg": total_kimg}.items()]
    command = [sys.executable, "-m", "progan.cli", "train", "--config", "tiny", "--data", str(data), "--out",
               str(run), "--device", "cpu", *[part for item in overrides for part in ("--set", item)]]
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)


def test_sigterm_writes_a_checkpoint_and_the_run_continues_exactly(small_data, uninterrupted, tmp_path):
    run = tmp_path / "run"
    process = _start_training(small_data, run, total_kimg=1000.0)   # far too long: stopped by the signal
    try:
        deadline = time.monotonic() + 120
        while not (run / "stats.jsonl").is_file() or len(_stats(run)) < 2:   # 8x8 reached
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.02)
        time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert "interrupted at" in out and (out + err).count("progan train --resume") == 1   # the hint, once
    checkpoint = find_checkpoint(run)
    assert checkpoint.name.startswith("interrupted-")
    nimg = int(checkpoint.stem.split("-")[1])
    assert nimg == load_checkpoint(checkpoint)["progress"]["cur_nimg"] and 500 <= nimg < 1500, nimg
    ticks_before = len(_stats(run))
    # resume from the folder with the configured length: the same trajectory as the uninterrupted run
    setup = resume_setup(run, ["total_kimg=1.5"])
    assert setup.checkpoint == checkpoint and setup.data_path == str(small_data.resolve())
    state = run_training(setup.config, setup.data_path, run, resume=run, device="cpu", log=lambda line: None)
    assert not state.interrupted and state.cur_nimg == 1504
    full, resumed = _stats(uninterrupted), _stats(run)
    assert [row["tick"] for row in resumed] == list(range(1, len(full) + 1)) and len(resumed) > ticks_before
    for a, b in zip(full, resumed):
        assert (a["kimg"], a["lod"]) == (b["kimg"], b["lod"])
        for key in ("loss_D", "loss_G", "D_real", "gradient_penalty"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), (a["tick"], key)
    assert not list(run.glob("interrupted-*.pt"))                     # superseded by the final snapshot
    final_full = load_checkpoint(find_checkpoint(uninterrupted))
    final_resumed = load_checkpoint(find_checkpoint(run))
    for key, value in final_full["G_ema"].items():
        torch.testing.assert_close(final_resumed["G_ema"][key], value, rtol=1e-4, atol=1e-5)


def test_resume_truncates_stats_to_the_checkpoint_tick(small_data, uninterrupted, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    snapshot = uninterrupted / "network-snapshot-000000.pt"          # tick 3 (0.768 kimg)
    assert load_checkpoint(snapshot)["progress"]["tick"] == 3
    (run / "stats.jsonl").write_text((uninterrupted / "stats.jsonl").read_text() + '{"tick": 9, "kimg"')  # torn
    setup = resume_setup(snapshot, ["total_kimg=1.024"], run_dir=run)  # a snapshot file, another run folder
    run_training(setup.config, setup.data_path, run, resume=snapshot, device="cpu", log=lambda line: None)
    rows = _stats(run)
    assert [row["tick"] for row in rows] == [1, 2, 3, 4]
    assert rows[3]["loss_D"] == pytest.approx(_stats(uninterrupted)[3]["loss_D"], rel=1e-4, abs=1e-5)


def test_resume_with_a_torn_or_missing_config_json(small_data, uninterrupted, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    snapshot = run / "network-snapshot-000000.pt"
    snapshot.write_bytes((uninterrupted / "network-snapshot-000000.pt").read_bytes())
    (run / "config.json").write_text('{"resolution": 8, "laten')
    notes = []
    setup = resume_setup(run, [], note=notes.append)
    assert "unreadable" in notes[0] and setup.config.resolution == 8 and setup.data_path == str(small_data.resolve())
    (run / "config.json").unlink()
    result = CliRunner().invoke(progan_main, ["train", "--resume", str(run), "--kimg", "0.8", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "config.json is missing; using the config stored in network-snapshot-000000.pt" in result.output
    assert json.loads((run / "config.json").read_text())["total_kimg"] == 0.8   # written again, atomically
    assert not list(run.glob(".*partial"))
    (run / "config.json").write_text(json.dumps({**json.loads((run / "config.json").read_text()), "fmap_max": 64}))
    result = CliRunner().invoke(progan_main, ["train", "--resume", str(run), "--device", "cpu"])
    assert result.exit_code == 2 and "fmap_max 32 vs 64" in result.output, result.output


def test_tensorboard_scalars_when_installed(small_data, tmp_path):
    pytest.importorskip("tensorboard")
    config = resolve_config("tiny", {**SMALL, "total_kimg": 0.5, "tensorboard": True})
    run_training(config, small_data, tmp_path / "run", device="cpu", log=lambda line: None)
    assert list((tmp_path / "run").glob("events.out.tfevents.*"))
