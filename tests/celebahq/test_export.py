"""Manifest robustness and the HDF5 / zip exports of a build."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from celebahq.cli import main
from celebahq.export import box_pyramid, export_hdf5, export_zip
from celebahq.manifest import MANIFEST_NAME, ManifestWriter, load_manifest
from gancore.errors import UserError
from gancore.sources import ImageStream
from toolkit_testing.builds import read_manifest, selected_images
from toolkit_testing.images import write_images


def fake_build(tmp_path, images: np.ndarray):
    out = tmp_path / "build"
    paths = write_images(out / "images", images)
    with ManifestWriter(out) as manifest:
        for index, path in enumerate(paths):
            manifest.append({"source": f"src{index}.jpg", "status": "ok", "output": f"images/{path.name}"})
        manifest.append({"source": "bad.jpg", "status": "skipped", "reason": "no face found"})
    return out


def test_torn_last_line_is_ignored_and_repaired(tmp_path):
    out = tmp_path / "build"
    with ManifestWriter(out) as manifest:
        manifest.append({"source": "a.jpg", "status": "ok"})
    with open(out / MANIFEST_NAME, "a") as file:
        file.write('{"source": "b.jpg", "sta')  # a kill in the middle of a line
    assert [r["source"] for r in read_manifest(out)] == ["a.jpg"]
    with ManifestWriter(out) as manifest:
        manifest.append({"source": "c.jpg", "status": "ok"})
    assert [r["source"] for r in read_manifest(out)] == ["a.jpg", "c.jpg"]


def test_box_pyramid_rounds_once_from_a_float_chain():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 3, 16, 16), dtype=np.uint8)
    levels = box_pyramid(images)
    assert sorted(levels) == [4, 8, 16]
    chain = images.astype(np.float64)
    for size in (8, 4):
        chain = chain.reshape(2, 3, size, 2, size, 2).mean(axis=(3, 5))
        np.testing.assert_array_equal(levels[size], np.clip(np.rint(chain), 0, 255).astype(np.uint8))


def test_hdf5_export_reads_back_through_ganeval(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    out = fake_build(tmp_path, images)
    result = export_hdf5(out, tmp_path / "data.h5", progress=False, batch_size=2)
    path = result.path
    assert result.images == 5 and result.manifest == "read 6 manifest records, skipped 0 damaged lines"
    with h5py.File(path) as file:
        assert sorted(file) == ["data16x16", "data32x32", "data4x4", "data8x8"]
        assert file["data32x32"].shape == (5, 3, 32, 32) and file["data32x32"].chunks == (1, 3, 32, 32)
        np.testing.assert_array_equal(file["data32x32"][:], images.transpose(0, 3, 1, 2))
        np.testing.assert_array_equal(file["data8x8"][:], box_pyramid(images.transpose(0, 3, 1, 2))[8])
    back = np.concatenate([b.numpy() for b in ImageStream(path, resolution=16)])
    assert back.shape == (5, 3, 16, 16)
    assert len(selected_images(out, num_images=3)) == 3
    with pytest.raises(UserError, match="5 finished images, 9 asked"):
        selected_images(out, num_images=9)


def test_zip_export_is_an_image_folder_dataset(tmp_path):
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    out = fake_build(tmp_path, images)
    path = export_zip(out, tmp_path / "data.zip", progress=False).path
    with zipfile.ZipFile(path) as archive:
        assert json.loads(archive.read("dataset.json")) == {"labels": None}
        assert archive.namelist()[:3] == ["00000/img00000000.png", "00000/img00000001.png",
                                          "00000/img00000002.png"]
    back = np.concatenate([b.numpy() for b in ImageStream(path)])
    np.testing.assert_array_equal(back, images.transpose(0, 3, 1, 2))


def test_failed_export_leaves_no_file(tmp_path):
    rng = np.random.default_rng(3)
    out = fake_build(tmp_path, rng.integers(0, 256, (2, 12, 12, 3), dtype=np.uint8))
    with pytest.raises(UserError, match="power-of-two"):
        export_hdf5(out, tmp_path / "data.h5", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["build"]


def test_a_damaged_middle_line_is_reported_and_later_records_kept(tmp_path):
    rng = np.random.default_rng(4)
    out = fake_build(tmp_path, rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8))
    lines = (out / MANIFEST_NAME).read_text().splitlines(keepends=True)
    lines[1] = '{"source": "src1.jpg", "stat\x00\x00garbage\n'  # a damaged line in the middle
    (out / MANIFEST_NAME).write_text("".join(lines) + '{"source": "torn')
    loaded = load_manifest(out)
    assert [r["source"] for r in loaded.records] == ["src0.jpg", "src2.jpg", "src3.jpg", "bad.jpg"]
    assert [number for number, _ in loaded.damaged] == [2] and loaded.torn
    assert "damaged line 2 skipped" in loaded.describe_damage()
    result = export_zip(out, tmp_path / "data.zip", progress=False)
    assert result.images == 3 and result.manifest.startswith("read 4 manifest records, skipped 1 damaged lines")
    with ManifestWriter(out) as manifest:  # the torn tail is cut, the damaged line stays (and stays reported)
        manifest.append({"source": "new.jpg", "status": "skipped", "reason": "x"})
    again = load_manifest(out)
    assert [r["source"] for r in again.records][-2:] == ["bad.jpg", "new.jpg"] and not again.torn
    assert [number for number, _ in again.damaged] == [2]


def test_a_stale_partial_of_a_killed_export_is_removed(tmp_path):
    rng = np.random.default_rng(5)
    out = fake_build(tmp_path, rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True, capture_output=True,
                          text=True)
    stale = tmp_path / f".data.zip.{int(dead.stdout)}.abcd1234.partial"
    stale.write_bytes(b"half a zip")
    live = tmp_path / f".data.zip.{os.getpid()}.abcd1234.partial"  # an export still running: kept
    live.write_bytes(b"")
    export_zip(out, tmp_path / "data.zip", progress=False)
    assert not stale.exists() and live.exists()


def test_hdf5_export_onto_a_full_disk_is_one_error_line(tmp_path, tiny_disk):
    rng = np.random.default_rng(6)
    out = fake_build(tmp_path, rng.integers(0, 256, (40, 64, 64, 3), dtype=np.uint8))
    # in a child process: before the fix the HDF5 library crashed the interpreter at exit (exit 139)
    for flag, name in (("--h5", "data.h5"), ("--zip", "data.zip")):
        done = subprocess.run([sys.executable, "-m", "celebahq.cli", "export", str(out), flag,
                               str(tiny_disk / name), "--quiet"], check=False, capture_output=True, text=True, timeout=120)
        assert done.returncode == 2, (done.returncode, done.stderr)
        assert done.stderr.strip().splitlines() == [f"error: {tiny_disk / name}: No space left on device"]
        assert list(tiny_disk.iterdir()) == []


def test_export_to_a_folder_that_cannot_be_written_fails_before_the_work(tmp_path):
    rng = np.random.default_rng(7)
    out = fake_build(tmp_path, rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8))
    blocker = tmp_path / "file"
    blocker.write_text("x")  # a path under a regular file: not writable even for root
    runner = CliRunner()
    result = runner.invoke(main, ["export", str(out), "--h5", str(blocker / "data.h5"), "--quiet"])
    assert result.exit_code == 2 and result.stderr.startswith("error: ") and len(result.stderr.splitlines()) == 1
    folder = runner.invoke(main, ["export", str(out), "--zip", str(tmp_path), "--quiet"])
    assert folder.exit_code == 2 and "is a directory" in folder.stderr  # click refuses it
