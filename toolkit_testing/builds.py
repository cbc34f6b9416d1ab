"""Build folders as the tests make and read them: a small CelebA-layout source, a manifest's records, the images
an export takes."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from celebahq.export import selected_files
from celebahq.landmarks import read_celeba_landmarks, write_celeba_landmarks
from celebahq.manifest import MANIFEST_NAME, load_manifest

from .images import EXAMPLES

MINI = EXAMPLES / "celeba_wild_mini"  # the bundled CelebA-layout example


def read_manifest(out_dir: str | os.PathLike, name: str = MANIFEST_NAME) -> list[dict]:
    """The good records of one manifest file, in the order written (damaged lines and a torn last line left out;
    celebahq.manifest.load_manifest says which)."""
    return load_manifest(out_dir, name).records


def selected_images(out_dir: str | os.PathLike, num_images: int | None = None) -> list[Path]:
    """The build's finished images in export order (celebahq.export.selected_files)."""
    return selected_files(Path(out_dir), num_images)[0]


def small_celeba(tmp_path: Path, count: int) -> Path:
    """A CelebA-layout folder with the first `count` bundled photos and their landmark rows."""
    src = tmp_path / "celeba"
    (src / "img_celeba").mkdir(parents=True)
    table = read_celeba_landmarks(MINI / "Anno" / "list_landmarks_celeba.txt")
    names = sorted(table)[:count]
    for name in names:
        shutil.copy(MINI / "img_celeba" / name, src / "img_celeba" / name)
    write_celeba_landmarks(src / "Anno" / "list_landmarks_celeba.txt", {name: table[name] for name in names})
    return src


HEADER = "idx orig_idx orig_file proc_md5 final_md5"
MD5S = "0123456789abcdef0123456789abcdef fedcba9876543210fedcba9876543210"
