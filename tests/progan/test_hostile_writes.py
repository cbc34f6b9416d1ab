"""`progan` against a full disk and unbounded output counts: `train` whose snapshot meets a full disk (torch.save),
`generate --num` beyond the file limit or the free space. One `error: PATH: reason` line, nothing written."""

from __future__ import annotations

import json
import shutil

import numpy as np
from click.testing import CliRunner

from progan.cli import main as progan_main


def one_error_line(result) -> str:
    """The one `error:` line of a failed command (its `note:` lines aside), with no traceback."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("note: ")]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output, result.output
    return lines[0]


def test_generate_refuses_a_count_beyond_the_limit_before_any_work(checkpoint, tmp_path):
    result = CliRunner().invoke(progan_main, ["generate", str(checkpoint), "--num", str(10**12), "--out",
                                              str(tmp_path / "o"), "--device", "cpu"])
    line = one_error_line(result)
    assert "1,000,000,000,000 PNGs of 16x16 asked, more than 100,000; pass --allow-many" in line
    assert not (tmp_path / "o").exists()  # refused before the folder is made


def test_generate_refuses_what_the_disk_cannot_hold(checkpoint, small_disk):
    result = CliRunner().invoke(progan_main, ["generate", str(checkpoint), "--num", "200000", "--allow-many",
                                              "--out", str(small_disk / "o"), "--device", "cpu"])
    line = one_error_line(result)
    assert f"error: {small_disk / 'o'}: 200,000 PNGs of 16x16 need up to " in line and "free there" in line
    assert not (small_disk / "o").exists()


def test_a_full_disk_while_training_is_one_line_naming_the_file(small_disk, tmp_path):
    data = tmp_path / "images.npy"
    np.save(data, np.random.default_rng(0).integers(0, 256, (64, 8, 8, 3), dtype=np.uint8))
    settings = {"resolution": 8, "lod_training_kimg": 0.02, "lod_transition_kimg": 0.02, "tick_kimg_base": 0.02,
                "total_kimg": 0.02, "metric_swd_images": 0, "data_workers": 0, "tensorboard": False,
                "fmap_base": 4096, "fmap_max": 256}
    overrides = [part for key, value in settings.items() for part in ("--set", f"{key}={json.dumps(value)}")]
    result = CliRunner().invoke(progan_main, ["train", "--config", "tiny", "--data", str(data), "--out",
                                              str(small_disk / "run"), "--device", "cpu", *overrides])
    line = one_error_line(result)
    assert line.startswith(f"error: {small_disk / 'run'}/") and line.endswith(".pt: No space left on device"), line
    assert not list(small_disk.rglob("*.partial"))
    shutil.rmtree(small_disk / "run")
