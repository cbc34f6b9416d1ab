"""Damaged, foreign and hostile checkpoints, and bad `generate` / `interpolate` arguments: one clear error (exit 2
from the CLI), nothing run from the file, no partial output. The corpus is generated here from one small
checkpoint."""

from __future__ import annotations

import math
import os
import zipfile

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from gancore.errors import SourceError, UserError
from gancore.sources import open_source
from progan.checkpoint import FORMAT, load_checkpoint, save_checkpoint
from progan.cli import main as progan_main
from progan.configs import resolve_config
from progan.networks import build_networks


def good_state(lod: float = 0.0) -> dict:
    """A complete small checkpoint (the tiny preset: 16x16) without optimizer states."""
    torch.manual_seed(0)
    config = resolve_config("tiny")
    G, D = build_networks(config)
    return {"config": config.to_dict(), "lod": lod, "kimg": 1.0, "G": G.state_dict(), "D": D.state_dict(),
            "G_ema": G.state_dict()}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "good.pt"
    save_checkpoint(path, good_state())
    return path


def run(*args, env=None):
    return CliRunner().invoke(progan_main, [str(a) for a in args], env=env)


def assert_one_error_line(result, *fragments):
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in result.output, result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_good_checkpoint_loads(checkpoint):
    assert load_checkpoint(checkpoint)["config"]["resolution"] == 16


def test_flipped_bytes_inside_a_tensor_fail_the_crc(checkpoint, tmp_path):
    data = bytearray(checkpoint.read_bytes())
    weight = good_state()["G_ema"]["blocks.16.conv1.weight"].numpy().tobytes()
    start = data.find(weight[:256])
    assert start > 0
    for offset in range(start + 1000, start + 1064):
        data[offset] ^= 0xFF
    (tmp_path / "flipped.pt").write_bytes(bytes(data))
    with pytest.raises(SourceError, match="fails its CRC check"):
        load_checkpoint(tmp_path / "flipped.pt")
    assert_one_error_line(run("generate", tmp_path / "flipped.pt", "--out", tmp_path / "o", "--device", "cpu"),
                          "damaged", "CRC")
    assert not any((tmp_path / "o").glob("*.png"))


def test_truncated_and_foreign_files(checkpoint, tmp_path):
    (tmp_path / "torn.pt").write_bytes(checkpoint.read_bytes()[:20000])
    (tmp_path / "text.pt").write_text("hello")
    for name in ("torn.pt", "text.pt"):
        with pytest.raises(SourceError, match="not a complete zip archive"):
            load_checkpoint(tmp_path / name)
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(SourceError, match=f"no '{FORMAT}' tag"):
        load_checkpoint(tmp_path / "other.pt")


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_hostile_checkpoint_is_refused_without_the_unsafe_hint(tmp_path):
    torch.save({"format": FORMAT, "config": Payload(tmp_path / "pwned")}, tmp_path / "evil.pt")
    with pytest.raises(SourceError) as caught:
        load_checkpoint(tmp_path / "evil.pt")
    message = str(caught.value)
    assert "refused" in message and "system" in message and "nothing in it was run" in message
    assert "weights_only" not in message and "trusted" not in message
    assert not (tmp_path / "pwned").exists()


def mutated(tmp_path, name, **changes) -> str:
    state = good_state()
    for key, change in changes.items():
        state[key] = change(state[key]) if callable(change) else change
    save_checkpoint(tmp_path / name, state)
    return tmp_path / name


def with_nan(weights):
    """The same weights with one NaN in the first of them."""
    weights = dict(weights)
    name = next(iter(weights))
    weights[name] = weights[name].clone()
    weights[name].view(-1)[0] = math.nan
    return weights


@pytest.mark.parametrize("changes, message", [
    ({"config": None}, "without its 'config'"),
    ({"G_ema": None}, "without the generator weights"),
    ({"config": lambda c: {**c, "fmap_max": 64}}, "where the config gives"),
    ({"config": lambda c: {**c, "resolution": 32}}, "do not match the checkpoint's config"),
    ({"config": lambda c: {**c, "G_norm": "sparkle"}}, "config is not usable"),
    ({"config": lambda c: {**c, "bogus": 1}}, "unknown config key"),
    ({"G_ema": with_nan}, "NaN or infinite"),
    ({"D": with_nan}, "NaN or infinite"),
    ({"lod": math.nan}, "lod is nan"),
    ({"lod": 7.0}, "not a number in [0, 2]"),
    ({"lod": "zero"}, "lod is nan"),
], ids=["no-config", "no-weights", "config-shape", "config-layers", "config-value", "config-key", "nan-G", "nan-D",
        "nan-lod", "lod-range", "lod-type"])
def test_inconsistent_checkpoints_give_one_clear_error(tmp_path, changes, message):
    path = mutated(tmp_path, "bad.pt", **changes)
    with pytest.raises(SourceError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_checkpoint(path)


def test_tag_only_file_through_the_cli(tmp_path):
    save_checkpoint(tmp_path / "tag.pt", {})
    assert_one_error_line(run("generate", tmp_path / "tag.pt", "--out", tmp_path / "o", "--device", "cpu"),
                          "tag.pt", "'config'")
    assert_one_error_line(run("interpolate", tmp_path / "tag.pt", "--out", tmp_path / "o.png", "--device", "cpu"),
                          "'config'")
    assert sorted(os.listdir(tmp_path)) == ["tag.pt"]  # no output folder made for a refused command


def test_source_image_count_variable(checkpoint, monkeypatch):
    for text in ("abc", "-5", "0", "1.5"):
        monkeypatch.setenv("PROGAN_SOURCE_IMAGES", text)
        with pytest.raises(UserError, match=f"PROGAN_SOURCE_IMAGES='{text}': give a positive whole number"):
            open_source(str(checkpoint))
    monkeypatch.setenv("PROGAN_SOURCE_IMAGES", " 12 ")
    assert len(open_source(str(checkpoint))) == 12


@pytest.mark.parametrize("resolution", [24, 0, -16, 3, 2, 32])
def test_generate_resolution_must_be_a_power_of_two_in_range(checkpoint, tmp_path, resolution):
    result = run("generate", checkpoint, "--num", "2", "--out", tmp_path / "o", "--resolution", resolution,
                 "--device", "cpu")
    assert_one_error_line(result, f"--resolution {resolution}", "from 4 to the network's 16")
    assert not (tmp_path / "o").exists()


def test_generate_writes_complete_pngs_only(checkpoint, tmp_path):
    result = run("generate", checkpoint, "--num", "3", "--out", tmp_path / "o", "--resolution", 8, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert sorted(os.listdir(tmp_path / "o")) == [".gancore-output", "000000.png", "000001.png", "000002.png"]
    # the output marker, no temporaries, no lock
    assert Image.open(tmp_path / "o" / "000002.png").size == (8, 8)


def test_the_python_api_writes_the_images_the_command_writes(checkpoint, tmp_path):
    from progan.checkpoint import generator_from_checkpoint, write_generated_images

    G = generator_from_checkpoint(load_checkpoint(checkpoint), torch.device("cpu"))
    assert write_generated_images(G, tmp_path / "api", 3, seed=5, resolution=8) == tmp_path / "api"
    result = run("generate", checkpoint, "--num", "3", "--seed", "5", "--out", tmp_path / "cli", "--resolution", 8,
                 "--device", "cpu")
    assert result.exit_code == 0, result.output
    for name in ("000000.png", "000001.png", "000002.png"):
        assert np.array_equal(np.asarray(Image.open(tmp_path / "api" / name)),
                              np.asarray(Image.open(tmp_path / "cli" / name)))
    with pytest.raises(UserError, match="from 4 to the network's 16"):
        write_generated_images(G, tmp_path / "never", 3, resolution=32)
    assert not (tmp_path / "never").exists()


def test_unwritable_outputs_fail_before_any_work(checkpoint, tmp_path):
    (tmp_path / "file").write_text("x")
    assert_one_error_line(run("generate", checkpoint, "--out", tmp_path / "file" / "o", "--device", "cpu"),
                          "file")
    assert_one_error_line(run("interpolate", checkpoint, "--out", tmp_path / "file" / "grid.png", "--frames", 2,
                              "--device", "cpu"), "file")
    (tmp_path / "grid.png").mkdir()
    assert_one_error_line(run("interpolate", checkpoint, "--out", tmp_path / "grid.png", "--frames", 2,
                              "--device", "cpu"), "grid.png")


def test_refused_interpolations_make_no_folder(checkpoint, tmp_path):
    """Too many frames for a folder, a sheet or the disk: refused before any path is made (the frames' folder, its
    marker, the video's and the sheet's parent folders)."""
    assert_one_error_line(run("interpolate", checkpoint, "--out", tmp_path / "a" / "frames", "--video",
                              tmp_path / "b" / "v.mp4", "--frames", 200_000, "--device", "cpu"),
                          "200,000 frames asked, more than 100,000")
    assert_one_error_line(run("interpolate", checkpoint, "--out", tmp_path / "c" / "sheet.png", "--frames", 50_000,
                              "--zoom", 8, "--device", "cpu"), "more than 2 GiB of pixels")
    assert os.listdir(tmp_path) == []


def test_interpolate_grid_and_frames(checkpoint, tmp_path):
    result = run("interpolate", checkpoint, "--out", tmp_path / "grid.png", "--frames", 5, "--columns", 3,
                 "--smoothing", 0.03, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "grid.png").size == (48, 32) and os.listdir(tmp_path) == ["grid.png"]
    result = run("interpolate", checkpoint, "--out", tmp_path / "frames", "--frames", 2, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert sorted(os.listdir(tmp_path / "frames")) == [".gancore-output", "frame00000.png", "frame00001.png"]
    frame = np.asarray(Image.open(tmp_path / "frames" / "frame00001.png"))
    assert frame.shape == (16, 16, 3)


def test_crc_check_reads_every_member(checkpoint):
    with zipfile.ZipFile(checkpoint) as archive:
        assert archive.testzip() is None and len(archive.namelist()) > 10


def test_a_fresh_process_opens_a_checkpoint_through_the_entry_point(checkpoint):
    """gancore finds progan's ".pt" opener through the installed entry point, with progan never imported first,
    as `ganeval swd run/network-snapshot.pt real/` does after `pip install`."""
    import subprocess
    import sys

    code = ("import sys\n"
            "from gancore.sources import open_source\n"
            "assert 'progan' not in sys.modules\n"
            f"source = open_source({str(checkpoint)!r})\n"
            "print(type(source).__module__, type(source).__name__, source.shape)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                          env=dict(os.environ, PROGAN_SOURCE_IMAGES="8"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["progan.checkpoint", "GeneratorSource", "(16,", "16)"]
