"""`progan interpolate --video`: the original's latent smoothing (checked against a slow transcription of
generate_interpolation_video) and a playable mp4 read back with imageio (when the [video] extra is installed)."""

from __future__ import annotations

import math
import shutil
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from progan.cli import main as progan_main
from progan.interpolation import frame_count, smooth_latents, tile


def original_latents(frames: int, cells: int, latent_size: int, sigma: float, seed: int) -> np.ndarray:
    """util_scripts.generate_interpolation_video's latents, slowly: the same RandomState draw, then for every
    frame the wrapped sum of Gaussian weights (scipy's kernel: radius int(4σ + 0.5), normalised) over the frames,
    then division by the overall RMS. float64."""
    draw = np.random.RandomState(seed).randn(frames, cells, latent_size).astype(np.float32).astype(np.float64)
    if sigma == 0:
        blurred = draw
    else:
        radius = int(4 * sigma + 0.5)
        weights = {k: math.exp(-0.5 * k * k / sigma ** 2) for k in range(-radius, radius + 1)}
        total = sum(weights.values())
        blurred = np.zeros_like(draw)
        for t in range(frames):
            for k, weight in weights.items():
                blurred[t] += weight / total * draw[(t + k) % frames]
    return blurred / math.sqrt(np.mean(blurred ** 2))


@pytest.mark.parametrize("frames, cells, sigma", [(40, 2, 3.0), (7, 1, 2.5), (5, 3, 0.0), (30, 1, 30.0)])
def test_smoothing_equals_the_original(frames, cells, sigma):
    latents = smooth_latents(frames, cells, 16, sigma, seed=1000)
    assert latents.dtype == torch.float32 and latents.shape == (frames, cells, 16)
    np.testing.assert_allclose(latents.numpy(), original_latents(frames, cells, 16, sigma, 1000), rtol=1e-4,
                               atol=1e-5)


def test_frame_count_and_tiling():
    assert frame_count(60.0, 30.0) == 1800 and frame_count(0.01, 30) == 1 and frame_count(1.05, 10) == 10
    images = torch.arange(3 * 3 * 2 * 2, dtype=torch.uint8).reshape(3, 3, 2, 2)
    grid = tile(images, 2, zoom=2)
    assert grid.shape == (8, 8, 3)
    assert (grid[:4, :4] == images[0].permute(1, 2, 0).repeat_interleave(2, 0).repeat_interleave(2, 1).numpy()).all()
    assert (grid[4:, 4:] == 0).all()                                  # the empty fourth cell


def test_video_is_a_playable_mp4(checkpoint, tmp_path):
    pytest.importorskip("imageio_ffmpeg")
    imageio = pytest.importorskip("imageio.v2")
    video = tmp_path / "lerp.mp4"
    result = CliRunner().invoke(progan_main, ["interpolate", str(checkpoint), "--video", str(video), "--duration",
                                              "1.2", "--fps", "10", "--grid", "2x1", "--zoom", "2", "--device",
                                              "cpu", "--out", str(tmp_path / "frames")])
    assert result.exit_code == 0, result.output
    assert f"wrote 12 frames at 10 fps -> {video}" in result.output
    reader = imageio.get_reader(str(video), format="FFMPEG")
    frames = [frame for frame in reader]
    assert reader.get_meta_data()["fps"] == 10
    reader.close()
    assert len(frames) == 12 and frames[0].shape == (32, 64, 3)
    from PIL import Image
    png = np.asarray(Image.open(tmp_path / "frames" / "frame00005.png"), dtype=np.float64)
    assert png.shape == (32, 64, 3)
    assert np.abs(frames[5].astype(np.float64) - png).mean() < 12   # the same frame, through a lossy codec
    assert sorted(path.name for path in tmp_path.iterdir()) == ["frames", "lerp.mp4"]   # no temporary left


def test_video_without_the_extra_is_one_error_line(checkpoint, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)
    result = CliRunner().invoke(progan_main, ["interpolate", str(checkpoint), "--video", str(tmp_path / "v.mp4")])
    assert result.exit_code == 2, result.output
    assert result.output == "error: --video needs imageio and imageio-ffmpeg: pip install 'progan-toolkit[video]'\n"
    assert not list(tmp_path.iterdir())
    result = CliRunner().invoke(progan_main, ["interpolate", str(checkpoint)])
    assert result.exit_code == 2 and "give --video FILE.mp4 and/or --out" in result.output
    result = CliRunner().invoke(progan_main, ["interpolate", str(checkpoint), "--out", str(tmp_path / "f"),
                                              "--grid", "3"])
    assert result.exit_code == 2 and "--grid 3: give columns x rows" in result.output


def test_frame_counts_are_checked_before_any_work(checkpoint, tmp_path, monkeypatch):
    """Too many frames, a sheet too large for memory, a folder on a full disk: one line each, no frame written."""
    def run(*args):
        return CliRunner().invoke(progan_main, ["interpolate", str(checkpoint), *map(str, args)])

    many = run("--out", tmp_path / "frames", "--frames", 10 ** 12)
    assert many.exit_code == 2 and "1,000,000,000,000 frames asked, more than 100,000" in many.output
    sheet = run("--out", tmp_path / "sheet.png", "--frames", 50_000, "--zoom", 64)
    assert sheet.exit_code == 2 and "would hold more than 2 GiB of pixels" in sheet.output
    monkeypatch.setattr("shutil.disk_usage", lambda path: shutil._ntuple_diskusage(10 ** 9, 10 ** 9, 1000))
    full = run("--out", tmp_path / "frames", "--frames", 100)
    assert full.exit_code == 2 and "PNG frames of" in full.output and "free there" in full.output
    assert not [path for path in tmp_path.rglob("*") if path.is_file() and path.name != ".gancore-output"]


def test_the_python_api_writes_what_the_command_writes(checkpoint, tmp_path):
    """`write_interpolation` (the API under `progan interpolate`): the same frames as the command, a sheet of them."""
    from PIL import Image

    from progan.checkpoint import generator_from_checkpoint, load_checkpoint
    from progan.interpolation import InterpolationOptions, write_interpolation

    G = generator_from_checkpoint(load_checkpoint(checkpoint), torch.device("cpu"))
    options = InterpolationOptions(frames=3, grid=(2, 1), columns=2, smoothing=0.05)
    assert write_interpolation(G, out=tmp_path / "api", options=options) == 3
    assert write_interpolation(G, out=tmp_path / "sheet.png", options=options) == 3
    result = CliRunner().invoke(progan_main, ["interpolate", str(checkpoint), "--out", str(tmp_path / "cli"),
                                              "--frames", "3", "--grid", "2x1", "--smoothing", "0.05",
                                              "--device", "cpu"])
    assert result.exit_code == 0, result.output
    for index in range(3):
        name = f"frame{index:05d}.png"
        assert np.array_equal(np.asarray(Image.open(tmp_path / "api" / name)),
                              np.asarray(Image.open(tmp_path / "cli" / name)))
    width, height = Image.open(tmp_path / "api" / "frame00000.png").size
    assert Image.open(tmp_path / "sheet.png").size == (2 * width, 2 * height)  # 2 frames a row, 2 rows
