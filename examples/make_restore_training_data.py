"""Write the photographs the shipped restoration weights were trained and validated on (celebahq/restore).

Usage: python examples/make_restore_training_data.py PLASMA_ROOT OUT_DIR

PLASMA_ROOT is Debian's plasma-workspace-wallpapers extracted with
`apt-get download plasma-workspace-wallpapers && dpkg-deb -x plasma-workspace-wallpapers_*.deb PLASMA_ROOT`.
Needs scikit-image and matplotlib (their bundled sample photographs). Writes OUT_DIR/train/*.png and
OUT_DIR/val/*.png (whole photographs held out for validation). The KDE wallpapers are downscaled with an
antialiasing filter to 1280 pixels wide, which also removes their own JPEG artifacts. gnome-backgrounds 43 has no
photographs (all its pictures are renders or vector art), so none of it is used.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

WALLPAPER_WIDTH = 1280
# every picture listed is a photograph (checked by eye)
TRAIN_WALLPAPERS = ("BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "FallenLeaf", "Grey", "Kite",
                    "OneStandsOut", "summer_1am", "Volna")
VAL_WALLPAPERS = ("EveningGlow", "Path")
TRAIN_SAMPLES = ("skimage:chelsea.png", "skimage:rocket.jpg", "skimage:motorcycle_left.png",
                 "matplotlib:grace_hopper.jpg")
VAL_SAMPLES = ("skimage:astronaut.png", "skimage:coffee.png")


def sample_photo(name: str) -> np.ndarray:
    """A scikit-image or matplotlib sample photograph as uint8 HWC RGB."""
    library, key = name.split(":")
    if library == "skimage":
        import skimage.data

        folder = Path(skimage.data.__file__).parent
    else:
        import matplotlib

        folder = Path(matplotlib.get_data_path()) / "sample_data"
    return np.asarray(Image.open(folder / key).convert("RGB"))


def wallpaper_photo(plasma_root: Path, name: str) -> np.ndarray:
    """The largest landscape version of a KDE wallpaper, downscaled to WALLPAPER_WIDTH, uint8 HWC RGB."""
    folder = plasma_root / "usr" / "share" / "wallpapers" / name / "contents" / "images"
    largest = max(folder.iterdir(), key=lambda p: int(p.stem.split("x")[0]))
    image = Image.open(largest).convert("RGB")
    height = round(image.height * WALLPAPER_WIDTH / image.width)
    return np.asarray(image.resize((WALLPAPER_WIDTH, height), Image.Resampling.LANCZOS))


def main(plasma_root: Path, out: Path) -> None:
    for split, samples, wallpapers in (("train", TRAIN_SAMPLES, TRAIN_WALLPAPERS),
                                       ("val", VAL_SAMPLES, VAL_WALLPAPERS)):
        folder = out / split
        folder.mkdir(parents=True, exist_ok=True)
        for name in samples:
            stem = Path(name.replace(":", "_")).stem
            Image.fromarray(sample_photo(name)).save(folder / f"{stem}.png")
        for name in wallpapers:
            Image.fromarray(wallpaper_photo(plasma_root, name)).save(folder / f"kde_{name}.png")
        print(f"{split}: {len(samples) + len(wallpapers)} photographs -> {folder}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
