"""A build folder as the tests read it: its manifest's records, the images an export takes."""

from __future__ import annotations

import os
from pathlib import Path

from celebahq.export import selected_files
from celebahq.manifest import MANIFEST_NAME, load_manifest


def read_manifest(out_dir: str | os.PathLike, name: str = MANIFEST_NAME) -> list[dict]:
    """The good records of one manifest file, in the order written (damaged lines and a torn last line left out;
    celebahq.manifest.load_manifest says which)."""
    return load_manifest(out_dir, name).records


def selected_images(out_dir: str | os.PathLike, num_images: int | None = None) -> list[Path]:
    """The build's finished images in export order (celebahq.export.selected_files)."""
    return selected_files(Path(out_dir), num_images)[0]
