"""The official CelebA-HQ build from NVIDIA's deltas, on a synthetic release made from the bundled example.

`make_release` writes deltas in the release's exact format (PBKDF2-HMAC-SHA256 keyed by the JPEG bytes, Fernet,
bz2, uint8 CHW, zips `deltas%05d.zip` of members `delta%05d.dat`, image_list.txt with both md5s): "official"
final images are made up from the pre-delta images of the legacy renderer (a tone curve and seeded noise), at a
small test resolution (the release is 1024²; only the Python API has the knob). The photos are decoded for the
release as NVIDIA's were, by IJG libjpeg 8d (`decode_8d`: jpeglib straight from the file, not our wrapper).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from celebahq.cli import main
from celebahq.landmarks import read_celeba_landmarks
from celebahq.official import (
    build_official,
    check_deltas,
    export_official,
    pre_delta_image,
    read_image_list,
    verify_official,
)
from celebahq.png_writers import pixels_md5
from celebahq.selection import ImageListRow
from gancore.errors import UserError
from gancore.sources import decode_image
from toolkit_testing.builds import read_manifest
from toolkit_testing.official_release import (
    EXAMPLE,
    RESOLUTION,
    SOURCES,
    decode_8d,
    make_release,
    official_options,
    png_chw,
)
from toolkit_testing.process_pause import resume, stop_when
from toolkit_testing.process_tree import descendants, process_state


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> tuple[Path, dict[int, np.ndarray]]:
    deltas = tmp_path_factory.mktemp("deltas")
    return deltas, make_release(deltas)


# --------------------------------------------------------------------------------------------------------------
# The round trip


def test_build_reproduces_the_finals_bit_for_bit(release, tmp_path):
    deltas, finals = release
    out = tmp_path / "out"
    report = build_official(EXAMPLE, deltas, out, official_options())  # worker processes: the kill test
    assert (report.rows, report.ok, report.exact, report.skipped) == (4, 4, 4, {})
    assert report.proc_mismatch == [] and report.final_mismatch == []
    for idx, final in finals.items():
        assert np.array_equal(png_chw(out, idx), final)
    records = read_manifest(out)
    assert [r["idx"] for r in records] == [0, 1, 2, 3]
    assert all(r["proc_md5_match"] and r["final_md5_match"] and r["legacy"] for r in records)
    assert {r["decoder"] for r in records} == {"libjpeg-8d"} and report.official
    assert records[1]["orig_file"] == "000002.jpg" and records[1]["output"] == "images/imgHQ00001.png"
    assert not (out / ".lock").exists() or "celebahq official" in (out / ".lock").read_text()
    assert verify_official(out, deltas, workers=0, progress=False).ok

    again = build_official(EXAMPLE, deltas, out, official_options())
    assert (again.processed, again.already_done, again.exact) == (0, 4, 4)


def test_a_different_pre_delta_still_gives_an_image(release, tmp_path):
    """--fast (current Pillow) renders other pre-delta pixels: each such row gets official + our difference, and the
    report names it."""
    deltas, finals = release
    out = tmp_path / "out"
    report = build_official(EXAMPLE, deltas, out, official_options(legacy=False))
    assert report.ok == 4 and report.proc_mismatch and report.proc_mismatch == report.final_mismatch
    assert report.exact == 4 - len(report.proc_mismatch)
    for row in read_image_list(deltas / "image_list.txt"):
        photo = decode_8d(EXAMPLE / "img_celeba" / row.orig_file)
        lm = list(read_celeba_landmarks(EXAMPLE / "Anno" / "list_landmarks_celeba.txt").values())[row.orig_idx]
        ours = pre_delta_image(photo, lm, False, RESOLUTION)
        official = pre_delta_image(photo, lm, True, RESOLUTION)
        assert np.array_equal(png_chw(out, row.idx), finals[row.idx] + (ours - official))
    result = CliRunner().invoke(main, ["verify", str(out), "--deltas", str(deltas), "--workers", "0", "--quiet"])
    assert result.exit_code == 1, result.output
    assert f"{len(report.proc_mismatch)} differ" in result.output


def test_export_follows_celebahq_numbering(release, tmp_path):
    import h5py

    deltas, finals = release
    out = tmp_path / "out"
    report = build_official(EXAMPLE, deltas, out, official_options())
    h5_path, zip_path = export_official(out, report, tmp_path / "hq.h5", tmp_path / "hq.zip", progress=False)
    with h5py.File(h5_path, "r") as h5:
        assert np.array_equal(h5[f"data{RESOLUTION}x{RESOLUTION}"][:], np.stack([finals[i] for i in range(4)]))
        assert "data4x4" in h5
    with zipfile.ZipFile(zip_path) as archive:
        assert len([n for n in archive.namelist() if n.endswith(".png")]) == 4


# --------------------------------------------------------------------------------------------------------------
# Bad input


def test_wrong_source_file_is_skipped_then_redone(release, tmp_path):
    deltas, finals = release
    src = tmp_path / "celeba"
    shutil.copytree(EXAMPLE, src)
    good = (src / "img_celeba" / "000011.jpg").read_bytes()
    (src / "img_celeba" / "000011.jpg").write_bytes((src / "img_celeba" / "000012.jpg").read_bytes())
    out = tmp_path / "out"
    report = build_official(src, deltas, out, official_options())
    assert report.ok == 3 and list(report.skipped) == ["imgHQ00002"]
    assert "InvalidToken" in report.skipped["imgHQ00002"] and "000011.jpg" in report.skipped["imgHQ00002"]
    with pytest.raises(UserError, match="rows have no image"):
        export_official(out, report, tmp_path / "x.h5")

    (src / "img_celeba" / "000011.jpg").write_bytes(good)
    fixed = build_official(src, deltas, out, official_options())
    assert (fixed.processed, fixed.exact, fixed.skipped) == (1, 4, {})
    assert np.array_equal(png_chw(out, 2), finals[2])


def _copy_release(release, tmp_path: Path) -> Path:
    deltas = tmp_path / "deltas"
    shutil.copytree(release[0], deltas)
    return deltas


def test_truncated_zip(release, tmp_path):
    deltas = _copy_release(release, tmp_path)
    data = (deltas / "deltas00000.zip").read_bytes()
    (deltas / "deltas00000.zip").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match=r"deltas00000\.zip: not a readable zip, truncated or damaged"):
        build_official(EXAMPLE, deltas, tmp_path / "out", official_options())


def test_missing_member_and_missing_zip(release, tmp_path):
    deltas = _copy_release(release, tmp_path)
    with zipfile.ZipFile(release[0] / "deltas00000.zip") as full, \
            zipfile.ZipFile(deltas / "deltas00000.zip", "w") as partial:
        for name in full.namelist():
            if name != "delta00002.dat":
                partial.writestr(name, full.read(name))
    with pytest.raises(UserError, match=r"deltas00000\.zip: member delta00002\.dat missing"):
        build_official(EXAMPLE, deltas, tmp_path / "out", official_options())
    (deltas / "deltas00000.zip").unlink()
    with pytest.raises(UserError, match=r"deltas00000\.zip: missing \(rows 0–3 need it\)"):
        check_deltas(deltas, read_image_list(deltas / "image_list.txt"))


@pytest.mark.parametrize("edit, message", [
    (lambda lines: ["idx orig_idx orig_file proc_md5"] + lines[1:], "line 1: expected the header"),
    (lambda lines: lines[:2] + ["x 1 000002.jpg " + " ".join(lines[2].split()[3:])] + lines[3:],
     "line 3: idx and orig_idx must be integers"),
    (lambda lines: lines[:2] + [" ".join(lines[2].split()[:4])] + lines[3:], "line 3: expected 5 fields"),
    (lambda lines: lines[:3] + [lines[3].replace(lines[3].split()[3], "nothex")] + lines[4:],
     "line 4: proc_md5 'nothex' is not an md5"),
    (lambda lines: [lines[0], lines[2], lines[1]] + lines[3:], "line 2: idx 1, expected 0"),
    (lambda lines: lines[:1], "no rows after the header"),
])
def test_damaged_image_list(release, tmp_path, edit, message):
    deltas = _copy_release(release, tmp_path)
    lines = (deltas / "image_list.txt").read_text().splitlines()
    (deltas / "image_list.txt").write_text("\n".join(edit(lines)) + "\n")
    with pytest.raises(UserError, match=message):
        read_image_list(deltas / "image_list.txt")
    result = CliRunner().invoke(main, ["official", "--src", str(EXAMPLE), "--deltas", str(deltas),
                                       "--out", str(tmp_path / "out"), "--quiet"])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and result.output.startswith("error: ")


def test_landmark_row_must_name_the_file(release, tmp_path):
    deltas = _copy_release(release, tmp_path)
    text = (deltas / "image_list.txt").read_text().replace(" 1 000002.jpg ", " 4 000002.jpg ")
    (deltas / "image_list.txt").write_text(text)
    report = build_official(EXAMPLE, deltas, tmp_path / "out", official_options())
    assert report.skipped == {"imgHQ00001": "landmark row 4 is 000005.jpg, image_list.txt says 000002.jpg"}


def test_check_decoder_reports_thepixels_md5(tmp_path):
    result = CliRunner().invoke(main, ["check-decoder", "--src", str(EXAMPLE)])
    assert result.exit_code == 1  # the example's 000001.jpg is not CelebA's
    assert "9cad8178d6cb0196b36f7b34bc5eb6d3" in result.output
    assert "official: libjpeg-8d, IJG libjpeg 8d (jpeglib " in result.output and "build: pillow, " in result.output
    sample = EXAMPLE / "img_celeba" / "000001.jpg"
    assert f"by libjpeg-8d: md5 {pixels_md5(decode_8d(sample))}, differs" in result.output
    assert f"by pillow: md5 {pixels_md5(decode_image(sample))}, differs" in result.output
    assert pixels_md5(decode_8d(sample)) != pixels_md5(decode_image(sample))  # the example's 000001.jpg is 4:2:0
    assert CliRunner().invoke(main, ["check-decoder", str(EXAMPLE)]).output == result.output  # CELEBA = --src
    result = CliRunner().invoke(main, ["check-decoder"])
    assert result.exit_code == 0 and "official: libjpeg-8d" in result.output and "available" in result.output
    result = CliRunner().invoke(main, ["check-decoder", "--src", str(tmp_path)])
    assert result.exit_code == 2 and "000001.jpg: not found" in result.output


def test_row_names():
    row = ImageListRow(12345, 7, "000008.jpg", "0" * 32, "f" * 32)
    assert (row.zip_name, row.member, row.output) == ("deltas12000.zip", "delta12345.dat", "images/imgHQ12345.png")


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_killed_build_resumes_and_leaves_no_worker(tmp_path):
    deltas = tmp_path / "deltas"
    finals = make_release(deltas, SOURCES * 3)
    out = tmp_path / "out"
    code = (f"from celebahq.official import OfficialOptions, build_official; build_official({str(EXAMPLE)!r}, "
            f"{str(deltas)!r}, {str(out)!r}, OfficialOptions(resolution={RESOLUTION}, workers=2, progress=False))")
    process = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    stop_when(process, lambda: len(read_manifest(out)) >= 2)
    workers = descendants(process.pid)
    assert workers, "the build had no workers to outlive it"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    resume(process)
    time.sleep(1.0)
    assert not [pid for pid in workers if process_state(pid) not in (None, "Z")], "a worker outlived the build"

    report = build_official(EXAMPLE, deltas, out, official_options())
    assert report.exact == 12 and report.already_done >= 2
    assert [r["idx"] for r in read_manifest(out)] == list(range(12))  # idx order, not the workers' order
    assert not list((out / "images").glob(".*"))
    for idx, final in finals.items():
        assert np.array_equal(png_chw(out, idx), final)


def test_deltas_of_the_wrong_size_or_damaged_are_refused():
    import bz2

    from cryptography.fernet import Fernet

    from celebahq.official import DeltaError, decrypt_delta, delta_key

    jpeg, name = b"jpeg bytes", "000001.jpg"
    fernet = Fernet(delta_key(jpeg, name))
    big = fernet.encrypt(bz2.compress(bytes(3 * 8 * 8 * 1000)))  # inflates 1000x past a 8x8 delta
    with pytest.raises(DeltaError, match="more than 192 bytes"):
        decrypt_delta(big, jpeg, name, resolution=8)
    with pytest.raises(DeltaError, match="bz2 data does not decompress"):
        decrypt_delta(fernet.encrypt(b"not bz2"), jpeg, name, resolution=8)
    assert decrypt_delta(fernet.encrypt(bz2.compress(bytes(192))), jpeg, name, resolution=8).shape == (3, 8, 8)
