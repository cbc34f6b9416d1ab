"""The official path decodes as NVIDIA's original (IJG libjpeg 8d), and says whose fault a failed row is.

`celeba_variants` writes a small CelebA folder of JPEGs re-encoded from the bundled example at several sizes (odd
widths and heights), qualities and chroma subsamplings, with their landmarks scaled; its synthetic release
(`test_official.make_release`, pre-delta images from libjpeg-8d decodes read by jpeglib straight from the files)
must come back md5 for md5. Decoding with Pillow instead (libjpeg-turbo) must change exactly the rows whose chroma
is subsampled, and the report must say so. Damaged delta members are the delta's fault; a photo that does not derive
the key is the photo's.
"""

from __future__ import annotations

import bz2
import dataclasses
import io
import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from celebahq import decoding
from celebahq.cli import main
from celebahq.landmarks import read_celeba_landmarks
from celebahq.official import UNFINISHED, build_official, delta_key, verify_official
from gancore.sources import BadImage
from toolkit_testing.builds import read_manifest
from toolkit_testing.official_release import EXAMPLE, RESOLUTION, make_release, official_options, png_chw

# (example photo, size W×H, JPEG quality, Pillow subsampling: 0 = 4:4:4, 1 = 4:2:2, 2 = 4:2:0)
VARIANTS = [
    ("000002.jpg", (301, 353), 95, 2),
    ("000006.jpg", (121, 151), 75, 0),
    ("000007.jpg", (151, 119), 60, 2),
    ("000011.jpg", (271, 305), 90, 0),
    ("000014.jpg", (199, 249), 85, 1),
    ("000015.jpg", (326, 290), 50, 2),
]
SUBSAMPLED = [idx for idx, variant in enumerate(VARIANTS) if variant[3] != 0]


def write_variants(folder: Path) -> list[str]:
    """A CelebA-layout folder of VARIANTS (000001.jpg … in order) and their landmarks; returns the file names."""
    (folder / "img_celeba").mkdir(parents=True)
    (folder / "Anno").mkdir()
    landmarks = read_celeba_landmarks(EXAMPLE / "Anno" / "list_landmarks_celeba.txt")
    names, lines = [], []
    for number, (source, size, quality, subsampling) in enumerate(VARIANTS, start=1):
        with Image.open(EXAMPLE / "img_celeba" / source) as photo:
            scale = np.array(size) / np.array(photo.size)
            photo.convert("RGB").resize(size, Image.BICUBIC).save(
                folder / "img_celeba" / f"{number:06d}.jpg", "JPEG", quality=quality, subsampling=subsampling)
        names.append(f"{number:06d}.jpg")
        points = np.round(landmarks[source] * scale).astype(int).ravel()
        lines.append(f"{names[-1]} " + " ".join(str(value) for value in points))
    header = f"{len(lines)}\nlefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y " \
             "rightmouth_x rightmouth_y\n"
    (folder / "Anno" / "list_landmarks_celeba.txt").write_text(header + "\n".join(lines) + "\n")
    return names


@pytest.fixture(scope="module")
def variants(tmp_path_factory) -> tuple[Path, Path, dict[int, np.ndarray]]:
    """(CelebA folder, deltas folder, {idx: final uint8 CHW}); row idx = VARIANTS[idx]."""
    celeba, deltas = tmp_path_factory.mktemp("celeba"), tmp_path_factory.mktemp("deltas")
    names = write_variants(celeba)
    return celeba, deltas, make_release(deltas, names, celeba)


def test_the_variants_are_what_they_say():
    """The fixture's premise: 4:4:4 decodes alike in 8d and Pillow, subsampled chroma does not."""
    for source, size, quality, subsampling in VARIANTS:
        buffer = io.BytesIO()
        with Image.open(EXAMPLE / "img_celeba" / source) as photo:
            photo.convert("RGB").resize(size).save(buffer, "JPEG", quality=quality, subsampling=subsampling)
        data = buffer.getvalue()
        assert decoding.jpeg_subsampling(data) == {0: "4:4:4", 1: "4:2:2", 2: "4:2:0"}[subsampling]
        same = np.array_equal(decoding.decode_jpeg(data, decoding.LIBJPEG_8D),
                              decoding.decode_jpeg(data, decoding.PILLOW))
        assert same == (subsampling == 0), (source, subsampling)


def test_libjpeg_8d_reproduces_every_final(variants, tmp_path):
    celeba, deltas, finals = variants
    out = tmp_path / "out"
    report = build_official(celeba, deltas, out, official_options())
    assert (report.rows, report.ok, report.exact, report.skipped) == (len(VARIANTS), len(VARIANTS), len(VARIANTS), {})
    assert report.official and report.decoder == "libjpeg-8d" and "IJG libjpeg 8d" in report.decoder_version
    assert report.to_dict()["by_decoder"] == {"libjpeg-8d": {"rows": 6, "proc_match": 6, "final_match": 6}}
    for idx, final in finals.items():
        assert np.array_equal(png_chw(out, idx), final)
    checked = verify_official(out, deltas, workers=0, progress=False)
    assert checked.ok and checked.to_dict()["by_decoder"] == {"libjpeg-8d": {"rows": 6, "proc_match": 6,
                                                                             "final_match": 6}}


def test_pillow_decoder_changes_the_subsampled_rows_and_says_so(variants, tmp_path):
    celeba, deltas, finals = variants
    out = tmp_path / "out"
    report = build_official(celeba, deltas, out, official_options(decoder="pillow"))
    assert report.proc_mismatch == SUBSAMPLED and report.final_mismatch == SUBSAMPLED
    assert report.exact == len(VARIANTS) - len(SUBSAMPLED) and not report.official
    whole = len(VARIANTS) - len(SUBSAMPLED)  # the 4:4:4 rows
    assert report.to_dict()["by_decoder"] == {"pillow": {"rows": 6, "proc_match": whole, "final_match": whole}}
    assert {record["decoder"] for record in read_manifest(out)} == {"pillow"}
    for idx, final in finals.items():
        assert np.array_equal(png_chw(out, idx), final) == (idx not in SUBSAMPLED)

    again = build_official(celeba, deltas, out, official_options())  # rows of another decoder are done again
    assert (again.processed, again.exact) == (len(VARIANTS), len(VARIANTS)) and again.official


@pytest.fixture
def cli_at_test_size(monkeypatch):
    """`celebahq official` through the CLI at the test resolution (the CLI has no such knob: the release is 1024²)."""
    from celebahq import official

    real = official.build_official
    monkeypatch.setattr(official, "build_official", lambda src, deltas, out, options: real(
        src, deltas, out, dataclasses.replace(options, resolution=RESOLUTION)))


def test_cli_summary_and_verify_count_by_decoder(release_small, tmp_path, cli_at_test_size):
    out = tmp_path / "out"
    args = ["official", "--src", str(EXAMPLE), "--deltas", str(release_small), "--out", str(out), "--workers", "0",
            "--quiet"]
    result = CliRunner().invoke(main, args + ["--decoder", "pillow"])
    assert result.exit_code == 0, result.output
    assert "decoded by pillow: 4 images, proc md5 matches 0, final md5 matches 0" in result.output  # all 4:2:0
    assert "note: not the official CelebA-HQ: JPEGs decoded by libjpeg-turbo" in result.output
    result = CliRunner().invoke(main, ["verify", str(out), "--deltas", str(release_small), "--workers", "0"])
    assert result.exit_code == 1 and "decoded by pillow: 4 images, proc md5 matches 0, final md5 matches 0" \
        in result.output

    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0 and "not the official" not in result.output
    assert "decoded by libjpeg-8d: 4 images, proc md5 matches 4, final md5 matches 4" in result.output


def test_official_refuses_without_libjpeg_8d(monkeypatch, tmp_path):
    deltas = tmp_path / "deltas"
    make_release(deltas, ["000002.jpg"])
    monkeypatch.setitem(sys.modules, "jpeglib", None)  # import jpeglib now fails
    decoding.decoder_problem.cache_clear()
    try:
        args = ["official", "--src", str(EXAMPLE), "--deltas", str(deltas), "--out", str(tmp_path / "out"), "--quiet"]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2 and result.output.count("\n") == 1
        assert result.output.startswith("error: the official JPEG decoder, IJG libjpeg 8d, is unavailable: the "
                                        "jpeglib package is not installed. pip install jpeglib")
        assert not (tmp_path / "out").exists()
        result = CliRunner().invoke(main, ["check-decoder"])
        assert result.exit_code == 1 and "official: libjpeg-8d, IJG libjpeg 8d (jpeglib not installed), " \
                                          "unavailable" in result.output
        report = build_official(EXAMPLE, deltas, tmp_path / "out", official_options(decoder="pillow"))
        assert report.ok == 1 and report.decoder == "pillow" and not report.official
    finally:
        monkeypatch.undo()
        decoding.decoder_problem.cache_clear()
    assert decoding.decoder_problem(decoding.LIBJPEG_8D) is None


# --------------------------------------------------------------------------------------------------------------
# The 8d decoder on bad bytes: one reason, nothing printed


@pytest.mark.parametrize("data, reason", [
    (b"", "not a readable JPEG file"),
    (b"hello world" * 10, "Not a JPEG file"),
    ((EXAMPLE / "img_celeba" / "000006.jpg").read_bytes()[:3000], "truncated"),
])
def test_8d_decoder_refuses_bad_bytes_quietly(data, reason, capfd):
    with pytest.raises(BadImage, match=reason):
        decoding.decode_jpeg(data, decoding.LIBJPEG_8D)
    assert capfd.readouterr().err == ""  # libjpeg's own messages do not reach the terminal


def test_8d_decoder_grey_and_pixel_limit(monkeypatch):
    buffer = io.BytesIO()
    Image.fromarray(np.arange(63, dtype=np.uint8).reshape(7, 9) * 4).save(buffer, "JPEG", quality=95)
    grey = decoding.decode_jpeg(buffer.getvalue(), decoding.LIBJPEG_8D)
    assert grey.shape == (7, 9, 3) and np.array_equal(grey[..., 0], grey[..., 2])
    monkeypatch.setenv("GANCORE_MAX_PIXELS", "50")
    with pytest.raises(BadImage, match="too large: 9x7"):
        decoding.decode_jpeg(buffer.getvalue(), decoding.LIBJPEG_8D)


# --------------------------------------------------------------------------------------------------------------
# Whose fault: the delta member or the photo


def _with_member(release: Path, tmp_path: Path, member: str, token: bytes | None = None, flip: bool = False) -> Path:
    """A copy of the release whose `member` is replaced by `token`, or has one byte of its stored data flipped."""
    deltas = tmp_path / "deltas"
    shutil.copytree(release, deltas)
    with zipfile.ZipFile(release / "deltas00000.zip") as full, \
            zipfile.ZipFile(deltas / "deltas00000.zip", "w") as changed:
        for name in full.namelist():
            changed.writestr(name, token if name == member and token is not None else full.read(name))
    if flip:
        data = bytearray((deltas / "deltas00000.zip").read_bytes())
        with zipfile.ZipFile(deltas / "deltas00000.zip") as archive:
            info = archive.getinfo(member)
        data[info.header_offset + 30 + len(info.filename) + 40] ^= 0x01  # inside the stored member
        (deltas / "deltas00000.zip").write_bytes(bytes(data))
    return deltas


def _sealed(payload: bytes, jpeg_name: str = "000002.jpg") -> bytes:
    """`payload` encrypted under the key of EXAMPLE's `jpeg_name` (as NVIDIA sealed each delta)."""
    from cryptography.fernet import Fernet

    jpeg = (EXAMPLE / "img_celeba" / jpeg_name).read_bytes()
    return Fernet(delta_key(jpeg, jpeg_name)).encrypt(payload)


@pytest.mark.parametrize("token, flip, reason", [
    (b"this is not a token", False, "not a Fernet token"),
    (None, True, "unreadable (Bad CRC-32"),
    (lambda: _sealed(b"not bz2 data"), False, "bz2 data does not decompress"),
    (lambda: _sealed(bz2.compress(bytes(10))), False, "it has 10 bytes, expected 3×32×32"),
    (lambda: _sealed(bz2.compress(bytes(3 * 32 * 32)), "000006.jpg"), False,
     "it does not decrypt (InvalidToken) under the key of 000002.jpg, whose pre-delta image matches proc_md5"),
])
def test_a_damaged_delta_member_is_the_deltas_fault(release_small, tmp_path, token, flip, reason):
    deltas = _with_member(release_small, tmp_path, "delta00001.dat", token() if callable(token) else token, flip)
    report = build_official(EXAMPLE, deltas, tmp_path / "out", official_options())
    assert list(report.skipped) == ["imgHQ00001"] and report.ok == 3
    message = report.skipped["imgHQ00001"]
    assert message.startswith("deltas00000.zip: member delta00001.dat is damaged: ") and reason in message
    assert "is not the file the deltas were made from" not in message


def test_a_photo_that_does_not_derive_the_key_is_the_photos_fault(release_small, tmp_path):
    out = tmp_path / "out"
    build_official(EXAMPLE, release_small, out, official_options(decoder="pillow"))  # a finished build of another decoder
    src = tmp_path / "celeba"
    shutil.copytree(EXAMPLE, src)
    with Image.open(src / "img_celeba" / "000002.jpg") as photo:
        photo.save(src / "img_celeba" / "000002.jpg", "JPEG", quality=70)  # the same photo, other bytes
    report = build_official(src, release_small, out, official_options())
    assert report.skipped == {"imgHQ00001": "decryption failed (InvalidToken): 000002.jpg is not the file the "
                                            "deltas were made from"}
    # the row's PNG of the Pillow build is still there, but no manifest line vouches for it
    counts = verify_official(out, release_small, workers=0, progress=False).to_dict()["by_decoder"]
    assert counts == {"libjpeg-8d": {"rows": 3, "proc_match": 3, "final_match": 3},
                      UNFINISHED: {"rows": 1, "proc_match": 0, "final_match": 0}}


@pytest.fixture(scope="module")
def release_small(tmp_path_factory) -> Path:
    deltas = tmp_path_factory.mktemp("deltas")
    make_release(deltas)
    return deltas



def test_libjpeg_7_and_later_agree_and_differ_from_6b_and_turbo_on_420():
    """The two families of decoders, on the bundled 4:2:0 000001.jpg: IJG 7, 8, 8d, 9f give one image (DCT-scaled
    chroma), 6b, libjpeg-turbo and Pillow another (fancy upsampling), and the two differ in many values."""
    import jpeglib

    path = EXAMPLE / "img_celeba" / "000001.jpg"

    def decoded(version: str) -> np.ndarray:
        with jpeglib.version(version):
            return jpeglib.read_spatial(str(path)).spatial

    ijg, old = [decoded(v) for v in ("7", "8", "8d", "9f")], [decoded(v) for v in ("6b", "turbo210")]
    old.append(np.asarray(Image.open(path).convert("RGB")))
    assert all(np.array_equal(image, ijg[0]) for image in ijg)
    assert all(np.array_equal(image, old[0]) for image in old)
    assert np.mean(ijg[0] != old[0]) > 0.1
