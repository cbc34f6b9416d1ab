"""Regenerate the bundled example image sets under examples/ (needs scikit-image and matplotlib).

examples/real/  128 random 128×128 crops (random scale 0.35–1.0 of the photo's short side, random mirror) of
                public-domain / CC0 photographs bundled with scikit-image and matplotlib.
examples/gen/   64 other crops of the same photographs, degraded like a mediocre generator: Gaussian blur
                (σ 1.2), mild noise and JPEG quality 30. SWD(gen, real) should sit clearly above the
                real-vs-real floor (`ganeval swd examples/gen examples/real --num-images 64 --baseline`).

Photographs (all public domain or CC0): skimage astronaut (NASA), chelsea (CC0, Stefan van der Walt),
coffee (CC0, Rachel Michetti), rocket (NASA), camera (CC0 replacement cameraman), hubble_deep_field (NASA/ESA);
matplotlib grace_hopper (US Navy, public domain).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

SIZE = 128
COUNTS = {"real": 128, "gen": 64}


def photographs() -> list[np.ndarray]:
    import matplotlib
    import skimage.data

    images = [getattr(skimage.data, name)() for name in
              ("astronaut", "chelsea", "coffee", "rocket", "camera", "hubble_deep_field")]
    hopper = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    images.append(np.asarray(Image.open(hopper).convert("RGB")))
    return [np.repeat(im[:, :, None], 3, 2) if im.ndim == 2 else im[:, :, :3] for im in images]


def random_crop(photo: np.ndarray, rng: np.random.Generator) -> Image.Image:
    height, width = photo.shape[:2]
    side = int(min(height, width) * rng.uniform(0.35, 1.0))
    top, left = rng.integers(0, height - side + 1), rng.integers(0, width - side + 1)
    crop = Image.fromarray(photo[top:top + side, left:left + side]).resize((SIZE, SIZE), Image.LANCZOS)
    return crop.transpose(Image.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else crop


def degrade(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    blurred = np.asarray(image.filter(ImageFilter.GaussianBlur(1.2)), dtype=np.float32)
    noisy = np.clip(blurred + rng.normal(0, 3, blurred.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noisy).save(buffer, "JPEG", quality=30)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def main(out: Path = Path(__file__).parent) -> None:
    rng = np.random.default_rng(2018)
    photos = photographs()
    for name in ("real", "gen"):
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(COUNTS[name]):
            image = random_crop(photos[index % len(photos)], rng)
            if name == "gen":
                image = degrade(image, rng)
            temporary = folder / f".{index:03d}.png.tmp"
            image.save(temporary, "PNG", optimize=True)
            os.replace(temporary, folder / f"{index:03d}.png")
    print(f"wrote {COUNTS['real']} real and {COUNTS['gen']} degraded {SIZE}x{SIZE} images under {out}")


if __name__ == "__main__":
    main()
