"""The bundled example images, and writing test images to files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"  # the repository's examples/


def load_folder(folder: Path, count: int | None = None) -> np.ndarray:
    """uint8 NHWC RGB array of the first `count` PNGs of a folder (sorted)."""
    files = sorted(folder.glob("*.png"))[:count]
    return np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])



def write_images(folder: Path, images: np.ndarray, fmt: str = "png") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, image in enumerate(images):
        path = folder / f"{index:04d}.{fmt}"
        Image.fromarray(image).save(path)
        paths.append(path)
    return paths
