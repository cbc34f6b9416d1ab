"""A synthetic official CelebA-HQ release made from the bundled example (tests/celebahq/test_official.py,
benchmarks/official_speed.py).

`make_release` writes deltas in the release's exact format (PBKDF2-HMAC-SHA256 keyed by the JPEG bytes, Fernet,
bz2, uint8 CHW, zips `deltas%05d.zip` of members `delta%05d.dat`, image_list.txt with both md5s): "official"
final images are made up from the pre-delta images of the legacy renderer (a tone curve and seeded noise), at a
small test resolution (the release is 1024²; only the Python API has the knob).
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np

from celebahq.landmarks import read_celeba_landmarks
from celebahq.official import encrypt_delta, pre_delta_image
from gancore.sources import decode_image

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "celeba_wild_mini"
RESOLUTION = 32
# CelebA-HQ idx -> CelebA file: shuffled on purpose (the output follows idx, not the source order)
SOURCES = ["000006.jpg", "000002.jpg", "000011.jpg", "000007.jpg"]


def _md5(array: np.ndarray) -> str:
    return hashlib.md5(np.ascontiguousarray(array).tobytes()).hexdigest()


def make_release(deltas: Path, sources: list[str] = SOURCES, src: Path = EXAMPLE,
                 resolution: int = RESOLUTION) -> dict[int, np.ndarray]:
    """Write image_list.txt and deltas*.zip for `sources` (row i = sources[i]); return {idx: final uint8 CHW}."""
    deltas.mkdir(parents=True, exist_ok=True)
    table = list(read_celeba_landmarks(src / "Anno" / "list_landmarks_celeba.txt").items())
    positions = {name: i for i, (name, _) in enumerate(table)}
    lines, finals, members = ["idx orig_idx orig_file proc_md5 final_md5"], {}, {}
    rng = np.random.default_rng(17)
    for idx, name in enumerate(sources):
        jpeg = (src / "img_celeba" / name).read_bytes()
        pre = pre_delta_image(decode_image(jpeg), table[positions[name]][1], True, resolution)
        curve = np.clip(pre.astype(np.float64) ** 0.9 * 1.1 + rng.normal(0, 3, pre.shape), 0, 255)
        final = np.round(curve).astype(np.uint8)
        members[f"delta{idx:05d}.dat"] = encrypt_delta(final - pre, jpeg, name)  # uint8: modulo 256
        lines.append(f"{idx} {positions[name]} {name} {_md5(pre)} {_md5(final)}")
        finals[idx] = final
    with zipfile.ZipFile(deltas / "deltas00000.zip", "w") as archive:
        for member, token in members.items():
            archive.writestr(member, token)
    (deltas / "image_list.txt").write_text("\n".join(lines) + "\n")
    return finals
