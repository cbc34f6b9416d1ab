"""Regenerate examples/celeba_wild_mini/: a tiny CelebA "in-the-wild" release for `celebahq build`.

Layout (CelebA's):
    celeba_wild_mini/img_celeba/000001.jpg ... 000015.jpg
    celeba_wild_mini/Anno/list_landmarks_celeba.txt   (count line, column names, `file x1 y1 ... x5 y5`, integers)
    celeba_wild_mini/variants.json                     (how each image was made; not part of CelebA's layout)

Source photographs (public domain, bundled with the libraries, so no download is needed):
    astronaut     scikit-image `skimage.data.astronaut()`: Eileen Collins, NASA (public domain).
    grace_hopper  matplotlib `sample_data/grace_hopper.jpg`: Grace Hopper, US Navy photograph (public
                  domain).
(scikit-image's `camera` shows a face too small and half hidden for the detector; `lfw_subset` is not public
domain, so neither is used.)

Each image is a variant of one source: a similarity transform (rotation about the face, scale, optional
horizontal mirror, framing) applied with one known 2×3 matrix M in pixel-index coordinates, then saved as a
JPEG of a given quality. The variants cover rotations of -30°..+30°, eye-to-mouth distances of 40 px to
300 px, image sizes from 150×120 to 1500×1400, faces at the border (the CelebA-HQ crop must pad), mirrored
faces and JPEG qualities 30..95. Two variants are the unchanged photographs (M = identity).

Landmarks: dlib (HOG detector + 68-point predictor, `celebahq.landmarks.LandmarkDetector`) runs ONCE on each
source photograph; each variant's 5 points are the source points mapped through its own M (mirrored variants
swap left/right so that point 0 stays the eye on the image's left, CelebA's convention). Nothing is
re-detected on the variants, so the tests can use them to check the detector and these transforms against
each other. CelebA stores integer coordinates; so does this file (variants.json keeps the exact values).

Deterministic: fixed variant table + a fixed-seed jitter of the framing; files are written atomically.
Needs scikit-image, matplotlib, opencv and the faces extra (`pip install .[faces]`).
Run: python examples/make_celeba_mini.py [OUT_DIR]
"""

from __future__ import annotations

import io
import json
import math
import os
import sys
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "examples" / "celeba_wild_mini"
SEED = 2018
MAX_OUTSIDE = 0.03  # largest share of a variant's pixels that may come from beyond its source photo
SOURCES = {
    "astronaut": "scikit-image data.astronaut(): Eileen Collins, NASA, public domain",
    "grace_hopper": "matplotlib sample_data/grace_hopper.jpg: Grace Hopper, US Navy, public domain",
}

# source, rotation (degrees, counter-clockwise as seen), eye-to-mouth distance in the output (px; None = the
# unchanged photo), output (width, height), where the face centre lands (fractions of width, height),
# JPEG quality, horizontal mirror, what the variant is for.
VARIANTS = [
    ("astronaut", 0, None, None, None, 95, False, "unchanged photo"),
    ("grace_hopper", 0, None, None, None, 90, False, "unchanged photo"),
    ("astronaut", 15, 60, (400, 470), (0.50, 0.35), 75, False, "rotated +15°"),
    ("astronaut", -30, 60, (460, 540), (0.50, 0.32), 85, False, "rotated -30°"),
    ("grace_hopper", 30, 64, (300, 370), (0.50, 0.40), 60, False, "rotated +30°, downscaled"),
    ("grace_hopper", -10, 40, (120, 150), (0.50, 0.50), 80, False, "small image, small face"),
    ("astronaut", 5, 40, (150, 120), (0.50, 0.55), 50, False, "small landscape image"),
    ("grace_hopper", 20, 300, (1500, 1400), (0.50, 0.45), 70, False, "large image, large face"),
    ("grace_hopper", 0, 80, (300, 560), (0.19, 0.42), 50, False, "face at the left border"),
    ("astronaut", -8, 76, (640, 480), (0.55, 0.16), 40, False, "face at the top border"),
    ("grace_hopper", -25, 120, (540, 610), (0.45, 0.45), 30, False, "rotated -25°, JPEG quality 30"),
    ("astronaut", 10, 110, (700, 800), (0.50, 0.40), 65, False, "upscaled"),
    ("grace_hopper", 12, 57, (300, 370), (0.50, 0.40), 85, True, "mirrored, rotated +12°"),
    ("astronaut", -20, 50, (200, 250), (0.50, 0.48), 55, False, "small image, rotated -20°"),
    ("grace_hopper", 0, 81, (326, 290), (0.80, 0.81), 70, False, "face at the bottom-right corner"),
]


def source_photos() -> dict[str, np.ndarray]:
    import matplotlib
    import skimage.data

    hopper = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    return {"astronaut": np.ascontiguousarray(skimage.data.astronaut()[:, :, :3]),
            "grace_hopper": np.asarray(Image.open(hopper).convert("RGB"))}


def face_centre(points: np.ndarray) -> np.ndarray:
    """Midpoint of the eye centre and the mouth centre."""
    return (points[0:2].mean(axis=0) + points[3:5].mean(axis=0)) / 2


def eye_to_mouth(points: np.ndarray) -> float:
    return float(np.linalg.norm(points[3:5].mean(axis=0) - points[0:2].mean(axis=0)))


def variant_matrix(points: np.ndarray, angle: float, scale: float, mirror: bool,
                   centre_out: np.ndarray) -> np.ndarray:
    """2×3 M with out = M @ (x, y, 1): mirror about the face, rotate by `angle` (counter-clockwise on screen,
    y pointing down), scale, and move the face centre to `centre_out`."""
    theta = math.radians(angle)
    rotation = np.array([[math.cos(theta), math.sin(theta)], [-math.sin(theta), math.cos(theta)]])
    linear = scale * rotation @ np.diag([-1.0 if mirror else 1.0, 1.0])
    centre = face_centre(points)
    return np.hstack([linear, (centre_out - linear @ centre)[:, None]])


def apply_matrix(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


def warp(photo: np.ndarray, matrix: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resample `photo` through M (pixel-index coordinates, as cv2 uses them); blur first when shrinking so the
    small variants are not aliased. The variant table keeps frames (almost) inside the photo; the few pixels
    beyond it (corners of rotated frames, at most MAX_OUTSIDE of the image) repeat the photo's edge."""
    scale = math.sqrt(abs(np.linalg.det(matrix[:, :2])))
    source = photo
    if scale < 1:
        sigma = 0.5 * math.sqrt(1 / scale ** 2 - 1)
        source = cv2.GaussianBlur(photo, (0, 0), sigma)
    return cv2.warpAffine(source, matrix, size, flags=cv2.INTER_CUBIC if scale > 1 else cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


def outside_fraction(matrix: np.ndarray, size: tuple[int, int], photo_shape: tuple[int, ...]) -> float:
    """Fraction of the output's pixels whose source position lies outside the photo."""
    inverse = np.linalg.inv(np.vstack([matrix, [0, 0, 1]]))[:2]
    ys, xs = np.mgrid[0:size[1], 0:size[0]]
    x, y = apply_matrix(inverse, np.stack([xs.ravel(), ys.ravel()], axis=1)).T
    height, width = photo_shape[:2]
    return float(((x < 0) | (x > width - 1) | (y < 0) | (y > height - 1)).mean())


def jpeg_bytes(image: np.ndarray, quality: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def write_atomically(path: Path, data: bytes) -> None:
    """Temp file + rename: a killed run never leaves a half-written file under its final name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_bytes(data)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def main(out: Path = DEFAULT_OUT) -> None:
    sys.path.insert(0, str(ROOT))  # run from a checkout without installing
    from celebahq.landmarks import LandmarkDetector, write_celeba_landmarks

    rng = np.random.default_rng(SEED)
    photos = source_photos()
    detector = LandmarkDetector()
    source_points = {}
    for name, photo in photos.items():
        detection = detector.detect(photo)
        if detection is None or detection.num_faces != 1:
            raise SystemExit(f"dlib did not find exactly one face in {name}")
        source_points[name] = detection.points5
        print(f"{name}: {photo.shape[1]}×{photo.shape[0]}, detection score {detection.score:.2f}, "
              f"eye-to-mouth {eye_to_mouth(detection.points5):.1f} px")

    landmarks, records = {}, []
    for index, (source, angle, e2m, size, centre, quality, mirror, purpose) in enumerate(VARIANTS, start=1):
        file_name = f"{index:06d}.jpg"
        photo, points = photos[source], source_points[source]
        if e2m is None:
            matrix, image = np.hstack([np.eye(2), np.zeros((2, 1))]), photo
            size = (photo.shape[1], photo.shape[0])
        else:
            jitter = rng.uniform(-0.02, 0.02, 2) * np.array(size)
            centre_out = np.array(centre) * np.array(size) + jitter
            matrix = variant_matrix(points, angle, e2m / eye_to_mouth(points), mirror, centre_out)
            image = warp(photo, matrix, size)
            if outside_fraction(matrix, size, photo.shape) > MAX_OUTSIDE:
                raise SystemExit(f"{file_name}: the frame leaves the source photo; adjust VARIANTS")
        moved = apply_matrix(matrix, points)
        if mirror:  # the person's eyes swap image sides: keep point 0 = the eye on the image's left
            moved = moved[[1, 0, 2, 4, 3]]
        width, height = size
        if not ((moved >= 1).all() and (moved[:, 0] <= width - 2).all() and (moved[:, 1] <= height - 2).all()):
            raise SystemExit(f"{file_name}: a landmark falls outside the {width}×{height} image: {moved}")
        write_atomically(out / "img_celeba" / file_name, jpeg_bytes(image, quality))
        landmarks[file_name] = moved
        records.append({"file": file_name, "source": source, "purpose": purpose, "width": width,
                        "height": height, "rotation_degrees": angle, "mirror": mirror,
                        "scale": round(float(math.sqrt(abs(np.linalg.det(matrix[:, :2])))), 6),
                        "eye_to_mouth": round(eye_to_mouth(moved), 2), "jpeg_quality": quality,
                        "matrix": np.round(matrix, 9).tolist(), "points5": np.round(moved, 4).tolist()})
        print(f"{file_name}: {source:12s} {width:4d}×{height:<4d} rot {angle:+3d}° e2m "
              f"{eye_to_mouth(moved):6.1f} q{quality} {purpose}")

    write_celeba_landmarks(out / "Anno" / "list_landmarks_celeba.txt", landmarks)
    info = {"about": "How each image of this mini CelebA was made (examples/make_celeba_mini.py). "
                     "matrix: 2x3, out = matrix @ (x, y, 1) in pixel-index coordinates, applied to the source "
                     "photo; points5: the source's dlib landmarks mapped through it (unrounded).",
            "seed": SEED, "sources": SOURCES,
            "source_points5": {name: np.round(p, 4).tolist() for name, p in source_points.items()},
            "variants": records}
    write_atomically(out / "variants.json", _json_lines(info).encode())


def _json_lines(info: dict) -> str:
    """JSON with one line per key / per variant (readable diffs, no point split over ten lines)."""
    lines = [f" {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}," for key, value in info.items()
             if key != "variants"]
    records = [f"  {json.dumps(record, ensure_ascii=False)}" for record in info["variants"]]
    return "{\n" + "\n".join(lines) + '\n "variants": [\n' + ",\n".join(records) + "\n ]\n}\n"


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT)
