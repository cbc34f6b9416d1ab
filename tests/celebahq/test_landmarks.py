"""celebahq.landmarks: CelebA's landmark file, dlib detection, and the bundled examples/celeba_wild_mini."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from celebahq.landmarks import (
    LANDMARK_COLUMNS,
    Detection,
    LandmarkDetector,
    LandmarkError,
    default_predictor_path,
    detection_available,
    implausible_landmarks,
    landmarks_for_folder,
    points5_from_68,
    read_celeba_landmarks,
    write_celeba_landmarks,
)
from gancore.errors import UserError

MINI = Path(__file__).resolve().parents[2] / "examples" / "celeba_wild_mini"
LANDMARK_FILE = MINI / "Anno" / "list_landmarks_celeba.txt"
HEADER = "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y rightmouth_x rightmouth_y"


needs_dlib = pytest.mark.skipif(not detection_available(), reason="dlib or face-recognition-models not installed "
                                                        "(pip install .[faces])")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "list_landmarks_celeba.txt"
    path.write_text(text, encoding="utf-8")
    return path


def variants() -> dict[str, dict]:
    info = json.loads((MINI / "variants.json").read_text(encoding="utf-8"))
    return {record["file"]: record for record in info["variants"]}


def load(name: str) -> np.ndarray:
    return np.asarray(Image.open(MINI / "img_celeba" / name).convert("RGB"))


def eye_to_mouth(points: np.ndarray) -> float:
    return float(np.linalg.norm(points[3:5].mean(axis=0) - points[0:2].mean(axis=0)))


# --------------------------------------------------------------------------------------------------------------
# Reader / writer


def test_reads_celeba_layout_with_odd_whitespace(tmp_path):
    path = write(tmp_path, "\ufeff2\r\n" + HEADER + "\r\n"
                 "000001.jpg    165   184   244   176   196   249   194   271   266   260\r\n"
                 "\n"
                 "  000002.jpg\t140 204 220.5 204 168 254 146 289 226 289   \r\n\n")
    landmarks = read_celeba_landmarks(path)
    assert list(landmarks) == ["000001.jpg", "000002.jpg"]
    first = landmarks["000001.jpg"]
    assert first.dtype == np.float64 and first.shape == (5, 2)
    np.testing.assert_array_equal(first, [[165, 184], [244, 176], [196, 249], [194, 271], [266, 260]])
    assert landmarks["000002.jpg"][1, 0] == 220.5


def test_write_then_read_round_trip(tmp_path):
    points = {"a.jpg": np.arange(10.0).reshape(5, 2) + 0.26, "b.jpg": -np.ones((5, 2)) * 0.2}
    path = tmp_path / "Anno" / "list_landmarks_celeba.txt"
    write_celeba_landmarks(path, points, decimals=2)
    back = read_celeba_landmarks(path)
    np.testing.assert_allclose(back["a.jpg"], points["a.jpg"], atol=0.005)
    write_celeba_landmarks(path, points)  # integers, like CelebA
    lines = path.read_text().splitlines()
    assert lines[0] == "2" and lines[1].split() == list(LANDMARK_COLUMNS)
    assert lines[2].split() == ["a.jpg", "0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]
    assert lines[3].split()[1:] == ["0"] * 10  # -0.2 rounds to 0, never "-0"
    assert not [p for p in path.parent.iterdir() if p.name != path.name]  # no temp files left behind


@pytest.mark.parametrize("text, message", [
    ("", "non-empty line"),
    ("two\n" + HEADER + "\n", "line 1: expected the number of rows"),
    ("1\nlefteye_x lefteye_y\n", "line 2: expected the 10 column names"),
    ("1\n" + HEADER + "\n000001.jpg 1 2 3 4 5 6 7 8 9\n", "line 3: expected a file name and 10 numbers"),
    ("1\n" + HEADER + "\n000001.jpg 1 2 3 4 5 six 7 8 9 10\n", "line 3: 000001.jpg: 'six' is not a number"),
    ("1\n" + HEADER + "\n000001.jpg 1 2 3 4 5 6 7 8 9 nan\n", "line 3: 000001.jpg: landmark coordinates must"),
    ("2\n" + HEADER + "\na.jpg 1 2 3 4 5 6 7 8 9 10\n\na.jpg 1 2 3 4 5 6 7 8 9 10\n",
     "line 5: a.jpg already has landmarks on line 3"),
    ("3\n" + HEADER + "\na.jpg 1 2 3 4 5 6 7 8 9 10\n", "line 1 announces 3 rows but the file has 1"),
])
def test_malformed_files_name_file_and_line(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(LandmarkError, match=message) as caught:
        read_celeba_landmarks(path)
    assert str(path) in str(caught.value)
    assert isinstance(caught.value, UserError)  # the CLIs print it as one line


def test_missing_and_binary_files(tmp_path):
    with pytest.raises(LandmarkError, match="not found"):
        read_celeba_landmarks(tmp_path / "nope.txt")
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xd8\xff\xe0 a jpeg, not landmarks")
    with pytest.raises(LandmarkError, match="not a text file"):
        read_celeba_landmarks(binary)


def test_bundled_example_file():
    landmarks = read_celeba_landmarks(LANDMARK_FILE)
    files = sorted(p.name for p in (MINI / "img_celeba").glob("*.jpg"))
    assert 12 <= len(files) <= 16 and sorted(landmarks) == files
    for name, points in landmarks.items():
        height, width = load(name).shape[:2]
        assert ((points >= 0) & (points < [width, height])).all(), name
        assert points[0, 0] < points[1, 0] and points[3, 0] < points[4, 0], f"{name}: CelebA's left = image left"
    total = sum(p.stat().st_size for p in MINI.rglob("*") if p.is_file())
    assert total < 2.5e6


# --------------------------------------------------------------------------------------------------------------
# The example's own consistency (no dlib needed)


def test_example_landmarks_are_the_source_points_through_each_matrix():
    info = json.loads((MINI / "variants.json").read_text(encoding="utf-8"))
    landmarks = read_celeba_landmarks(LANDMARK_FILE)
    for name, record in variants().items():
        matrix = np.array(record["matrix"])
        moved = np.array(info["source_points5"][record["source"]]) @ matrix[:, :2].T + matrix[:, 2]
        if record["mirror"]:
            moved = moved[[1, 0, 2, 4, 3]]
        np.testing.assert_allclose(moved, record["points5"], atol=1e-3, err_msg=name)
        np.testing.assert_allclose(landmarks[name], np.round(moved), atol=1e-9, err_msg=name)
        assert load(name).shape[:2] == (record["height"], record["width"])


def test_example_variety():
    records = list(variants().values())
    angles = [r["rotation_degrees"] for r in records]
    sizes = [eye_to_mouth(np.array(r["points5"])) for r in records]
    qualities = [r["jpeg_quality"] for r in records]
    assert min(angles) <= -25 and max(angles) >= 25
    assert min(sizes) <= 45 and max(sizes) >= 250
    assert min(qualities) <= 35 and max(qualities) >= 90
    assert min(r["width"] * r["height"] for r in records) <= 150 * 150
    assert max(max(r["width"], r["height"]) for r in records) >= 1400
    assert any(r["mirror"] for r in records)


def celebahq_quad(points: np.ndarray) -> np.ndarray:
    """The original create_celebahq's oriented square (spec section 4.3, steps 1-3), [4, 2]."""
    eye_avg = (points[0] + points[1]) / 2 + 0.5
    mouth_avg = (points[3] + points[4]) / 2 + 0.5
    eye_to_eye, eye_to_mouth_vec = points[1] - points[0], mouth_avg - eye_avg
    x = eye_to_eye - np.array([-eye_to_mouth_vec[1], eye_to_mouth_vec[0]])
    x = x / np.linalg.norm(x) * max(2.0 * np.linalg.norm(eye_to_eye), 1.8 * np.linalg.norm(eye_to_mouth_vec))
    y = np.array([-x[1], x[0]])
    c = eye_avg + 0.1 * eye_to_mouth_vec
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def test_example_has_faces_whose_crop_needs_padding():
    """At least two variants put the face so near the border that CelebA-HQ's square leaves the photo."""
    landmarks = read_celeba_landmarks(LANDMARK_FILE)
    leaving = []
    for name, record in variants().items():
        quad = celebahq_quad(landmarks[name])
        side = np.linalg.norm(quad[1] - quad[0])
        overshoot = max(-quad.min(axis=0).min(), (quad - [record["width"], record["height"]]).max())
        if overshoot > 0.15 * side:
            leaving.append(name)
    assert len(leaving) >= 2, leaving


@pytest.mark.parametrize("name", ["000005.jpg", "000006.jpg", "000008.jpg", "000013.jpg"])
def test_example_images_are_the_source_warped_by_their_matrix(name):
    """Independent of the generator's cv2 code: warp the source with scipy (index coordinates, like the stored
    matrix) at sub-pixel offsets and find where it matches the stored JPEG best; a half-pixel convention slip
    in the generator would move that optimum away from 0."""
    pytest.importorskip("skimage")
    matplotlib = pytest.importorskip("matplotlib")
    import skimage.data
    from scipy import ndimage

    record = variants()[name]
    if record["source"] == "astronaut":
        photo = skimage.data.astronaut()[:, :, :3]
    else:
        photo = np.asarray(Image.open(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")
                           .convert("RGB"))
    gray = photo.astype(np.float64) @ [0.299, 0.587, 0.114]
    matrix = np.array(record["matrix"])
    scale = np.sqrt(abs(np.linalg.det(matrix[:, :2])))
    if scale < 1:
        gray = ndimage.gaussian_filter(gray, 0.5 * np.sqrt(1 / scale ** 2 - 1))
    stored = load(name).astype(np.float64) @ [0.299, 0.587, 0.114]
    height, width = stored.shape
    inner = (slice(height // 10, -height // 10), slice(width // 10, -width // 10))
    swap = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 1]])  # scipy works in (row, col) = (y, x)

    def mse(dx: float, dy: float) -> float:
        shifted = np.vstack([matrix, [0, 0, 1]]) + [[0, 0, dx], [0, 0, dy], [0, 0, 0]]
        inverse = swap @ np.linalg.inv(shifted) @ swap  # output (row, col) -> source (row, col)
        reference = ndimage.affine_transform(gray, inverse[:2, :2], inverse[:2, 2], output_shape=(height, width),
                                             order=3, mode="nearest")
        return float(((reference - stored)[inner] ** 2).mean())

    centre = mse(0, 0)
    assert centre < 100, f"{name}: the image does not match its source warped by its matrix (MSE {centre:.0f})"
    for axis in ("x", "y"):
        minus, plus = (mse(-0.5, 0), mse(0.5, 0)) if axis == "x" else (mse(0, -0.5), mse(0, 0.5))
        offset = 0.5 * (minus - plus) / (2 * (minus - 2 * centre + plus))  # parabola through the three
        assert abs(offset) < 0.15, f"{name}: best match {offset:+.2f} px off along {axis}"


# --------------------------------------------------------------------------------------------------------------
# dlib


def test_points5_from_68_uses_the_eye_means_nose_tip_and_mouth_corners():
    points68 = np.zeros((68, 2))
    points68[36:42] = [[10, 20]] * 5 + [[16, 26]]
    points68[42:48] = [[40, 20]] * 6
    points68[30], points68[48], points68[54] = [25, 35], [12, 50], [38, 51]
    np.testing.assert_allclose(points5_from_68(points68), [[11, 21], [40, 20], [25, 35], [12, 50], [38, 51]])
    with pytest.raises(ValueError, match="68"):
        points5_from_68(np.zeros((5, 2)))


def test_missing_dlib_gives_the_install_command(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_dlib(name, *args, **kwargs):
        if name == "dlib":
            raise ImportError("No module named 'dlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_dlib)
    detector = LandmarkDetector()  # constructing never needs dlib
    with pytest.raises(LandmarkError, match=r"pip install \.\[faces\]"):
        detector.detect(np.zeros((64, 64, 3), np.uint8))


def test_missing_models_give_the_install_command(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None)
    with pytest.raises(LandmarkError, match=r"pip install \.\[faces\]"):
        default_predictor_path()


@pytest.fixture(scope="module")
def detector():
    return LandmarkDetector().load()


@needs_dlib
def test_detector_finds_the_astronaut_where_the_example_says(detector):
    skimage_data = pytest.importorskip("skimage.data")
    unchanged = next(name for name, r in variants().items() if r["source"] == "astronaut" and r["scale"] == 1
                     and r["rotation_degrees"] == 0 and not r["mirror"])
    stored = read_celeba_landmarks(LANDMARK_FILE)[unchanged]
    for image in (skimage_data.astronaut(), load(unchanged)):
        detection = detector.detect(image)
        assert isinstance(detection, Detection)
        assert detection.score > 0.5 and detection.num_faces >= 1 and detection.confident
        left, top, right, bottom = detection.box
        assert left < stored[:, 0].min() and stored[:, 0].max() < right
        assert top < stored[:, 1].min() and stored[:, 1].max() < bottom
        assert np.abs(detection.points5 - stored).max() < 3.0
        assert detection.points68.shape == (68, 2)
        # CelebA's "left eye" is the one on the image's left
        assert detection.points5[0, 0] < detection.points5[1, 0]
        assert detection.points5[3, 0] < detection.points5[4, 0]
    record = detection.to_record()
    assert record["landmark_source"] == "dlib" and json.dumps(record)


@needs_dlib
@pytest.mark.parametrize("name", ["000003.jpg", "000004.jpg", "000013.jpg", "000014.jpg"])
def test_example_transforms_agree_with_redetection(detector, name):
    """Re-detect on rotated / mirrored / small variants: dlib must land where the transformed source points say."""
    stored = read_celeba_landmarks(LANDMARK_FILE)[name]
    detection = detector.detect(load(name))
    assert detection is not None, f"no face found in {name}"
    error = np.linalg.norm(detection.points5 - stored, axis=1).max()
    assert error < 0.12 * eye_to_mouth(stored), f"{name}: {error:.1f} px from the stored landmarks"


@needs_dlib
def test_detector_small_images_blank_images_and_formats(detector):
    small = load("000006.jpg")  # 120×150: found only with the upsampling
    detection = detector.detect(small)
    assert detection is not None and detection.upsample == 1
    assert detector.detect(np.full((200, 300, 3), 128, np.uint8)) is None
    gray = np.asarray(Image.fromarray(load("000001.jpg")).convert("L"))
    assert detector.detect(gray) is not None


@needs_dlib
def test_largest_confident_face_wins(detector):
    big = load("000012.jpg")  # eye-to-mouth 110 px
    small = np.asarray(Image.fromarray(big).resize((big.shape[1] // 3, big.shape[0] // 3), Image.LANCZOS))
    canvas = np.full((800, 1200, 3), 200, np.uint8)
    canvas[:, :700] = big
    canvas[300:300 + small.shape[0], 800:800 + small.shape[1]] = small
    detection = detector.detect(canvas)
    assert detection.num_faces == 2
    assert detection.points5[:, 0].max() < 700
    stored = read_celeba_landmarks(LANDMARK_FILE)["000012.jpg"]
    assert np.abs(detection.points5 - stored).max() < 0.1 * eye_to_mouth(stored)


@needs_dlib
def test_detector_pickles_without_its_models(detector):
    clone = pickle.loads(pickle.dumps(detector))
    assert clone._predictor is None
    assert clone.detect(load("000001.jpg")) is not None


@needs_dlib
def test_landmarks_for_folder_reports_faces_and_skips(tmp_path, detector):
    for name in ("000001.jpg", "000007.jpg"):
        (tmp_path / name).write_bytes((MINI / "img_celeba" / name).read_bytes())
    Image.fromarray(np.full((100, 100, 3), 90, np.uint8)).save(tmp_path / "blank.png")
    (tmp_path / "broken.jpg").write_bytes((MINI / "img_celeba" / "000001.jpg").read_bytes()[:300])
    (tmp_path / "notes.txt").write_text("not an image")
    seen = []
    found, skipped = landmarks_for_folder(tmp_path, detector, progress=seen.append)
    assert sorted(found) == ["000001.jpg", "000007.jpg"]
    assert skipped["blank.png"] == "no face found"
    assert "decode" in skipped["broken.jpg"]
    assert sorted(seen) == ["000001.jpg", "000007.jpg", "blank.png", "broken.jpg"]
    stored = read_celeba_landmarks(LANDMARK_FILE)
    for name, detection in found.items():
        assert np.abs(detection.points5 - stored[name]).max() < 0.1 * eye_to_mouth(stored[name])


# --------------------------------------------------------------------------------------------------------------
# Sanity of a five-point set (issue 16)

FRONTAL = np.array([(100, 100), (140, 100), (120, 125), (105, 150), (135, 150)], dtype=np.float64)


def _rotate(points: np.ndarray, degrees: float) -> np.ndarray:
    t = np.radians(degrees)
    return points @ np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]).T + 500


@pytest.mark.parametrize("degrees", [0, 30, -45, 90, 150, 180, 270])
def test_faces_in_any_rotation_are_plausible(degrees):
    assert implausible_landmarks(_rotate(FRONTAL, degrees)) is None


def test_every_bundled_example_is_plausible():
    for name, points in read_celeba_landmarks(LANDMARK_FILE).items():
        assert implausible_landmarks(points) is None, name


def test_swapped_eye_columns_are_refused():
    swapped = FRONTAL.copy()
    swapped[[0, 1]] = swapped[[1, 0]]
    assert "the eyes are swapped" in implausible_landmarks(swapped)
    assert "the eyes are swapped" in implausible_landmarks(_rotate(swapped, 20))


def test_mouth_above_the_eyes_is_refused():
    upside = FRONTAL.copy()
    upside[3:, 1] = 60
    assert "the mouth is above the eyes" in implausible_landmarks(upside)


def test_mouth_on_the_eye_line_is_refused_and_degenerate_sets_are_left_to_the_planner():
    flat = FRONTAL.copy()
    flat[3:] = [(160, 102), (170, 103)]
    assert "on the line through the eyes" in implausible_landmarks(flat)
    same = FRONTAL.copy()
    same[1] = same[0]
    assert implausible_landmarks(same) is None  # plan_crop raises "the eyes coincide"
