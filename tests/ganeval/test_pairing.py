"""Two sources of different sizes are compared at the smaller one, as the original evaluated a snapshot at its
resolution: a checkpoint against larger reals (box filter chain) and against an HDF5 file (its matching level)."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from gancore.sources import box_reduce
from ganeval.cli import main
from toolkit_testing.checkpoints import write_tiny_checkpoint
from toolkit_testing.extractors import TinyExtractor
from toolkit_testing.images import EXAMPLES, load_folder


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """An untrained tiny-preset checkpoint (16x16 images)."""
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "network-snapshot-000001.pt")


@pytest.fixture(scope="module")
def multi_resolution_h5(tmp_path_factory):
    """64 of the bundled reals as an HDF5 file with levels 128x128 … 4x4 (the box filter chain)."""
    images = torch.from_numpy(load_folder(EXAMPLES / "real", 64)).permute(0, 3, 1, 2).contiguous()
    path = tmp_path_factory.mktemp("h5") / "data.h5"
    with h5py.File(path, "w") as file:
        for steps in range(6):
            side = 128 >> steps
            file.create_dataset(f"data{side}x{side}", data=box_reduce(images, steps).numpy())
    return path


def test_swd_of_a_checkpoint_against_larger_reals(checkpoint):
    args = ["swd", str(checkpoint), str(EXAMPLES / "real"), "--num-images", "16", "--quiet", "--device", "cpu"]
    result = CliRunner().invoke(main, args + ["--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert list(payload["metrics"]["swd"]["levels"]) == ["16"]
    assert any("reduced 8x to 16x16" in note for note in payload["notes"])
    table = CliRunner().invoke(main, args)
    assert table.exit_code == 0 and "note: " in table.stderr and "box filter chain" in table.stderr


def test_all_of_a_checkpoint_against_an_hdf5_file(checkpoint, multi_resolution_h5, tiny_inception):
    args = ["all", str(checkpoint), str(multi_resolution_h5), "--swd-images", "16", "--msssim-pairs", "4",
            "--fid-images", "32", "--kid-subset-size", "16", "--kid-subsets", "4", "--is-splits", "2",
            "--allow-singular", "--json", "--quiet", "--device", "cpu"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert list(payload["metrics"]["swd"]["levels"]) == ["16"]
    assert any("data16x16" in note for note in payload["notes"])
    assert set(payload["metrics"]) == {"swd", "msssim", "fid", "is", "kid", "pr"}


def test_the_api_pairs_the_same_way(multi_resolution_h5):
    from ganeval import MetricSettings, compute_fid, compute_metrics, compute_swd

    gen = load_folder(EXAMPLES / "gen", 32)[:, ::4, ::4].copy()  # 32x32
    swd = compute_swd(gen, multi_resolution_h5, num_images=8, progress=False, device="cpu")
    assert list(swd.levels) == ["32", "16"] and "data32x32" in swd.notes[0]
    fid = compute_fid(gen, multi_resolution_h5, num_images=30, extractor=TinyExtractor(), progress=False,
                      cache=False)
    assert "data32x32" in fid.notes[0] and np.isfinite(fid.value)
    metrics = compute_metrics(gen, EXAMPLES / "real", "swd", MetricSettings.from_values(progress=False, swd_images=8),
                              device="cpu")
    assert "reduced 4x to 32x32" in metrics.notes[0]


def test_an_image_of_another_size_among_larger_reals_is_skipped_not_a_crash(checkpoint, tmp_path):
    """Reals reduced to the checkpoint's 16x16: one 31x33 file among 32x32 ones is skipped with --skip-bad and
    named in one error line without it."""
    from PIL import Image

    reals = tmp_path / "reals"
    reals.mkdir()
    images = load_folder(EXAMPLES / "real", 12)[:, ::4, ::4]  # 32x32
    for index, image in enumerate(images):
        Image.fromarray(np.ascontiguousarray(image)).save(reals / f"{index:02d}.png")
    Image.fromarray(np.ascontiguousarray(images[0][:33, :31])).resize((31, 33)).save(reals / "99-odd.png")
    args = ["swd", str(checkpoint), str(reals), "--num-images", "13", "--quiet", "--device", "cpu", "--json"]
    skipped = CliRunner().invoke(main, args[:3] + ["--num-images", "12"] + args[5:] + ["--skip-bad"])
    assert skipped.exit_code == 0, skipped.output
    assert "99-odd.png" in skipped.stderr and "Traceback" not in skipped.output
    refused = CliRunner().invoke(main, args)
    assert refused.exit_code == 2 and "99-odd.png" in refused.stderr and "Traceback" not in refused.output
