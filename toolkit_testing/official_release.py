"""A synthetic official CelebA-HQ release made from the bundled example (tests/celebahq/test_official.py,
tests/celebahq/test_official_decoding.py, benchmarks/official_speed.py).

`make_release` writes deltas in the release's exact format (PBKDF2-HMAC-SHA256 keyed by the JPEG bytes, Fernet,
bz2, uint8 CHW, zips `deltas%05d.zip` of members `delta%05d.dat`, image_list.txt with both md5s): "official"
final images are made up from the pre-delta images of the legacy renderer (a tone curve and seeded noise), at a
small test resolution (the release is 1024²; only the Python API has the knob). The photos are decoded for the
release as NVIDIA's were, by IJG libjpeg 8d (`decode_8d`: jpeglib straight from the file, not our wrapper).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from celebahq.landmarks import read_celeba_landmarks
from celebahq.official import OfficialOptions, encrypt_delta, pre_delta_image
from celebahq.png_writers import pixels_md5
from gancore.sources import decode_image

HEADER = "idx orig_idx orig_file proc_md5 final_md5"  # image_list.txt's header line
MD5S = "0123456789abcdef0123456789abcdef fedcba9876543210fedcba9876543210"  # a row's proc_md5 and final_md5
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "celeba_wild_mini"
RESOLUTION = 32
# CelebA-HQ idx -> CelebA file: shuffled on purpose (the output follows idx, not the source order)
SOURCES = ["000006.jpg", "000002.jpg", "000011.jpg", "000007.jpg"]


def decode_8d(path: Path) -> np.ndarray:
    """The reference decode of a JPEG file: IJG libjpeg 8d through jpeglib -> uint8 HWC RGB."""
    import jpeglib

    with jpeglib.version("8d"):
        return jpeglib.read_spatial(str(path)).spatial


def make_release(deltas: Path, sources: list[str] = SOURCES, src: Path = EXAMPLE,
                 resolution: int = RESOLUTION) -> dict[int, np.ndarray]:
    """Write image_list.txt and deltas*.zip for `sources` (row i = sources[i]); return {idx: final uint8 CHW}."""
    deltas.mkdir(parents=True, exist_ok=True)
    table = list(read_celeba_landmarks(src / "Anno" / "list_landmarks_celeba.txt").items())
    positions = {name: i for i, (name, _) in enumerate(table)}
    lines, finals, members = [HEADER], {}, {}
    rng = np.random.default_rng(17)
    for idx, name in enumerate(sources):
        jpeg = (src / "img_celeba" / name).read_bytes()
        pre = pre_delta_image(decode_8d(src / "img_celeba" / name), table[positions[name]][1], True, resolution)
        curve = np.clip(pre.astype(np.float64) ** 0.9 * 1.1 + rng.normal(0, 3, pre.shape), 0, 255)
        final = np.round(curve).astype(np.uint8)
        members[f"delta{idx:05d}.dat"] = encrypt_delta(final - pre, jpeg, name)  # uint8: modulo 256
        lines.append(f"{idx} {positions[name]} {name} {pixels_md5(pre)} {pixels_md5(final)}")
        finals[idx] = final
    with zipfile.ZipFile(deltas / "deltas00000.zip", "w") as archive:
        for member, token in members.items():
            archive.writestr(member, token)
    (deltas / "image_list.txt").write_text("\n".join(lines) + "\n")
    return finals


def official_options(**kwargs) -> OfficialOptions:
    """The tests' OfficialOptions: RESOLUTION, no workers, no progress bar, then `kwargs`."""
    return OfficialOptions(**{"resolution": RESOLUTION, "workers": 0, "progress": False, **kwargs})


def png_chw(out: Path, idx: int) -> np.ndarray:
    """An official build's image `idx` as uint8 CHW."""
    return decode_image(out / "images" / f"imgHQ{idx:05d}.png").transpose(2, 0, 1)
