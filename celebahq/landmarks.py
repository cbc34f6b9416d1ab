"""Five-point face landmarks: CelebA's landmark file, and dlib detection for photos that have none.

CelebA convention (`Anno/list_landmarks_celeba.txt`, and every [5, 2] array in this package): (x, y) in
source-pixel units, x to the right, y down, in the order

    0 left eye, 1 right eye, 2 nose tip, 3 left mouth corner, 4 right mouth corner

where "left" means the image's left side (the person's right): CelebA's `lefteye_x` is smaller than its
`righteye_x` for a frontal face. Coordinates index pixels (pixel (i, j) is at x = i, y = j); the CelebA-HQ
geometry adds 0.5 to move them to pixel centres.

`read_celeba_landmarks` parses CelebA's file (two header lines, then `filename x1 y1 ... x5 y5`);
`write_celeba_landmarks` writes one (atomically). `LandmarkDetector` finds faces with dlib's HOG frontal face
detector, fits the 68-point shape predictor of the PyPI package `face-recognition-models`, and reduces the 68
points to CelebA's 5 the way the FFHQ aligner does (eye centre = mean of the eye's 6 points, mouth corners =
points 48 and 54; the nose tip is point 30). dlib and the models are an optional extra
(``pip install .[faces]``: `dlib-bin` + `face-recognition-models`); they are loaded on first use, so importing
this module never needs them.
"""

from __future__ import annotations

import importlib.util
import math
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gancore.errors import UserError, read_text_file
from gancore.sources import IMAGE_EXTENSIONS, BadImage, decode_image, to_rgb_hwc

__all__ = [
    "LANDMARK_COLUMNS",
    "LANDMARK_NAMES",
    "Detection",
    "LandmarkDetector",
    "LandmarkError",
    "default_predictor_path",
    "detection_available",
    "implausible_landmarks",
    "landmarks_for_folder",
    "points5_from_68",
    "read_celeba_landmarks",
    "write_celeba_landmarks",
]

LANDMARK_NAMES = ("left eye", "right eye", "nose", "left mouth corner", "right mouth corner")
LANDMARK_COLUMNS = ("lefteye_x", "lefteye_y", "righteye_x", "righteye_y", "nose_x", "nose_y",
                    "leftmouth_x", "leftmouth_y", "rightmouth_x", "rightmouth_y")
PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"
INSTALL_HINT = "pip install .[faces]  (installs dlib-bin and face-recognition-models)"


class LandmarkError(UserError):
    """A landmark file cannot be read, or face detection is not available."""


# --------------------------------------------------------------------------------------------------------------
# CelebA's landmark file


def read_celeba_landmarks(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Parse CelebA's `list_landmarks_celeba.txt`: {file name: float64 [5, 2] array}, in file order.

    Line 1 is the number of rows, line 2 the 10 column names, then one row per image: the file name and 10
    numbers (x, y of left eye, right eye, nose, left mouth corner, right mouth corner). Any run of spaces or
    tabs separates fields; blank lines, a byte-order mark and CRLF line ends are ignored. Integers and
    decimals are both accepted. A malformed row, a duplicated file name or a count that does not match the
    rows raises `LandmarkError` naming the file and the line.
    """
    path = Path(path)
    text = read_text_file(path, "utf-8-sig", "landmark file", error=LandmarkError)

    lines = [(number, line.split()) for number, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if len(lines) < 2:
        raise LandmarkError(f"{path}: expected a count line and a column-name line before the rows "
                            f"(CelebA's Anno/list_landmarks_celeba.txt layout); the file has {len(lines)} "
                            f"non-empty line(s)")
    (count_line, count_fields), (names_line, names) = lines[0], lines[1]
    if len(count_fields) != 1 or not count_fields[0].isdigit():
        raise LandmarkError(f"{path}, line {count_line}: expected the number of rows (CelebA's first header "
                            f"line), found {' '.join(count_fields)[:80]!r}")
    if len(names) != 10:
        raise LandmarkError(f"{path}, line {names_line}: expected the 10 column names "
                            f"({' '.join(LANDMARK_COLUMNS)}), found {len(names)} field(s)")

    landmarks: dict[str, np.ndarray] = {}
    first_seen: dict[str, int] = {}
    for number, fields in lines[2:]:
        where = f"{path}, line {number}"
        if len(fields) != 11:
            raise LandmarkError(f"{where}: expected a file name and 10 numbers (x y of 5 points), found "
                                f"{len(fields)} field(s): {' '.join(fields)[:80]!r}")
        name = fields[0]
        try:
            values = [float(value) for value in fields[1:]]
        except ValueError:
            bad = next(value for value in fields[1:] if not _is_number(value))
            raise LandmarkError(f"{where}: {name}: {bad!r} is not a number") from None
        if not all(math.isfinite(value) for value in values):
            raise LandmarkError(f"{where}: {name}: landmark coordinates must be finite numbers")
        if name in first_seen:
            raise LandmarkError(f"{where}: {name} already has landmarks on line {first_seen[name]}")
        first_seen[name] = number
        landmarks[name] = np.array(values, dtype=np.float64).reshape(5, 2)

    expected = int(count_fields[0])
    if expected != len(landmarks):
        raise LandmarkError(f"{path}: line {count_line} announces {expected} rows but the file has "
                            f"{len(landmarks)} (truncated download or edited file?)")
    return landmarks


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def write_celeba_landmarks(path: str | os.PathLike, landmarks: Mapping[str, np.ndarray],
                           decimals: int = 0) -> None:
    """Write {file name: [5, 2]} in CelebA's layout, atomically (temp file + rename).

    ``decimals=0`` writes integers, exactly like CelebA's own file; more decimals keep sub-pixel precision.
    """
    path = Path(path)
    rows = [str(len(landmarks)), " ".join(LANDMARK_COLUMNS)]
    for name, points in landmarks.items():
        points = np.asarray(points, dtype=np.float64)
        if points.shape != (5, 2) or not np.isfinite(points).all():
            raise LandmarkError(f"landmarks of {name}: expected 5 finite (x, y) points, got {points.shape}")
        if not name or any(char.isspace() for char in name):
            raise LandmarkError(f"{name!r}: file names in a landmark file cannot be empty or contain spaces")
        values = np.round(points.reshape(-1), decimals) + 0.0  # + 0.0 turns -0.0 into 0.0
        rows.append(name + "".join(f" {value:{5 + decimals + (decimals > 0)}.{decimals}f}" for value in values))
    _write_text_atomically(path, "\n".join(rows) + "\n")


def _write_text_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "w", encoding="utf-8", newline="\n") as file:
            file.write(text)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------------------------
# Sanity of a five-point set

#: The smallest sine of the angle from the eye-to-eye to the eye-to-mouth vector that a face can have (0.2: the mouth
#: at least ~12° off the line through the eyes). Frontal faces have ~1, turned or tilted ones well above 0.5.
MIN_FACE_SINE = 0.2


def implausible_landmarks(points: np.ndarray) -> str | None:
    """Why five CelebA points [5, 2] (x, y; y down) cannot be a face's, or None when they can.

    In a face, rotated or not, the mouth lies on the same side of the left-eye -> right-eye line as the person's
    chin: the cross product of eye-to-eye and eye-to-mouth is positive (y down). A negative one means the eye columns
    are swapped or the mouth is above the eyes; the crop recipe would render the face mirrored or upside down.
    Coinciding eyes are left to the crop planner (it refuses them as degenerate)."""
    lm = np.asarray(points, dtype=np.float64).reshape(5, 2)
    eyes = (lm[0] + lm[1]) / 2
    eye_to_eye, eye_to_mouth = lm[1] - lm[0], (lm[3] + lm[4]) / 2 - eyes
    lengths = float(np.hypot(*eye_to_eye) * np.hypot(*eye_to_mouth))
    if lengths == 0.0 or not np.isfinite(lengths):
        return None
    sine = float(eye_to_eye[0] * eye_to_mouth[1] - eye_to_eye[1] * eye_to_mouth[0]) / lengths
    if sine < 0 and eye_to_mouth[1] < 0:
        return "implausible landmarks: the mouth is above the eyes (the crop would be upside down)"
    if sine < 0:
        return ("implausible landmarks: the eyes are swapped (the left eye is right of the right eye; the crop would "
                "be mirrored or upside down)")
    if sine < MIN_FACE_SINE:
        return (f"implausible landmarks: the mouth lies on the line through the eyes (angle "
                f"{np.degrees(np.arcsin(sine)):.0f}°, a face has more than {np.degrees(np.arcsin(MIN_FACE_SINE)):.0f}°)")
    return None


# --------------------------------------------------------------------------------------------------------------
# dlib detection


def points5_from_68(points68: np.ndarray) -> np.ndarray:
    """dlib's 68 points -> CelebA's 5, float64 [5, 2].

    In dlib's (iBUG 300-W) numbering, points 36-41 outline the eye on the image's left (the person's right)
    and 42-47 the other, 48 and 54 are the mouth corners on the image's left and right, 30 is the nose tip;
    so the order matches CelebA's "left" = image-left convention without any swapping.
    """
    points68 = np.asarray(points68, dtype=np.float64)
    if points68.shape != (68, 2):
        raise ValueError(f"expected 68 (x, y) points, got an array of shape {points68.shape}")
    return np.stack([points68[36:42].mean(axis=0), points68[42:48].mean(axis=0),
                     points68[30], points68[48], points68[54]])


@dataclass(frozen=True, eq=False)
class Detection:
    """One face found by `LandmarkDetector.detect`.

    points5    float64 [5, 2], CelebA's order and convention (see the module docstring).
    score      dlib's HOG detector confidence (SVM margin). >= 0 is a detection at dlib's default threshold;
               a negative score (down to the detector's `adjust_threshold`) is a weak detection, returned only
               when there was no confident one.
    box        (left, top, right, bottom) of the detector's face rectangle in image pixels (right/bottom
               inclusive, as dlib reports them).
    num_faces  how many faces the detector reported at its default threshold (score >= 0); 0 for a weak
               detection, > 1 when the photo holds several faces and the largest was taken.
    upsample   how many times the image was upsampled (2×) for the detection that was used.
    points68   float64 [68, 2], dlib's full shape.
    """

    points5: np.ndarray
    score: float
    box: tuple[int, int, int, int]
    num_faces: int
    upsample: int = 0
    points68: np.ndarray | None = field(default=None, repr=False)

    @property
    def confident(self) -> bool:
        return self.score >= 0.0

    def to_record(self) -> dict:
        """JSON-ready summary for a manifest: where the landmarks came from and how confidently."""
        return {"landmarks": np.round(self.points5, 3).tolist(), "landmark_source": "dlib",
                "detection_score": round(float(self.score), 4), "face_box": list(self.box),
                "num_faces": self.num_faces, "upsample": self.upsample}


def default_predictor_path() -> Path:
    """Where `face-recognition-models` keeps the 68-point predictor (found without importing the package:
    its `__init__` needs `pkg_resources`, which setuptools 82+ no longer ships)."""
    try:
        spec = importlib.util.find_spec("face_recognition_models")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise LandmarkError(f"face landmark detection needs the dlib face models, which are not installed: "
                            f"{INSTALL_HINT}")
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "models" / PREDICTOR_FILE
        if candidate.is_file():
            return candidate
    raise LandmarkError(f"face-recognition-models is installed but {PREDICTOR_FILE} is missing from its "
                        f"models/ folder ({', '.join(spec.submodule_search_locations)}); reinstall it: "
                        f"pip install --force-reinstall face-recognition-models")


def _import_dlib():
    try:
        import dlib
    except ImportError as error:
        raise LandmarkError(f"face landmark detection needs dlib, which cannot be imported ({error}): "
                            f"{INSTALL_HINT}") from None
    return dlib


def detection_available() -> bool:
    """True when dlib imports and the 68-point model is installed (cheap: loads no model)."""
    try:
        _import_dlib()
        default_predictor_path()
    except LandmarkError:
        return False
    return True


class LandmarkDetector:
    """dlib HOG face detector + 68-point shape predictor -> CelebA's 5 landmarks.

    detect(image) takes a uint8 HW3 RGB array (grayscale, HW1 and RGBA are converted) and returns the largest
    confident face as a `Detection`, or None when no face is found. Policy:

    - Images whose longer side is below `small_side` pixels are upsampled once (2×) before detection, because
      the HOG detector's 80×80 window misses faces smaller than about 80 px. Larger images are searched at
      their own size first; if that finds no confident face and the image's longer side is at most
      `max_upsample_side`, the search is repeated upsampled once.
    - Detections scoring at least `adjust_threshold` (default -0.5, below dlib's default threshold 0) are
      considered. The largest box wins among the confident ones: score >= 0 and within `score_margin` of the
      best score (a marginal false positive, such as a patch of the astronaut photo's spacesuit at score
      ~0, can be as large as the real face). When no detection scores >= 0, the best-scoring weak one is
      returned (its negative `score` says so) unless `accept_weak=False`.

    The dlib models load on first use (`load()` forces it), and are dropped when the detector is pickled, so
    a detector can be handed to worker processes, each loading its own copy.
    """

    def __init__(self, predictor_path: str | os.PathLike | None = None, *, adjust_threshold: float = -0.5,
                 small_side: int = 400, max_upsample_side: int = 2500, score_margin: float = 1.0,
                 accept_weak: bool = True):
        self.predictor_path = Path(predictor_path) if predictor_path is not None else None
        self.adjust_threshold = float(adjust_threshold)
        self.small_side = int(small_side)
        self.max_upsample_side = int(max_upsample_side)
        self.score_margin = float(score_margin)
        self.accept_weak = accept_weak
        self._detector = None
        self._predictor = None
        self._dlib = None

    def __getstate__(self):
        state = self.__dict__.copy()
        state.update(_detector=None, _predictor=None, _dlib=None)
        return state

    def load(self) -> LandmarkDetector:
        """Load dlib and the models now (raises `LandmarkError` with the install command when missing)."""
        if self._predictor is None:
            dlib = _import_dlib()
            path = self.predictor_path or default_predictor_path()
            if not Path(path).is_file():
                raise LandmarkError(f"shape predictor not found: {path}")
            try:
                predictor = dlib.shape_predictor(str(path))
            except RuntimeError as error:
                raise LandmarkError(f"cannot load the shape predictor {path}: {error}") from None
            self._dlib, self._detector, self._predictor = dlib, dlib.get_frontal_face_detector(), predictor
        return self

    def _candidates(self, image: np.ndarray, upsample: int) -> list[tuple[float, object]]:
        rects, scores, _ = self._detector.run(image, upsample, self.adjust_threshold)
        return [(float(score), rect) for rect, score in zip(rects, scores)]

    def detect(self, image: np.ndarray) -> Detection | None:
        """The largest face of a uint8 image as a `Detection`, or None when dlib finds none."""
        self.load()
        image = np.ascontiguousarray(to_rgb_hwc(np.asarray(image)))
        longer = max(image.shape[:2])
        upsample = 1 if longer < self.small_side else 0
        candidates = self._candidates(image, upsample)
        if (upsample == 0 and longer <= self.max_upsample_side
                and not any(score >= 0 for score, _ in candidates)):
            retry = self._candidates(image, 1)
            if any(score >= 0 for score, _ in retry) or not candidates:
                candidates, upsample = retry, 1
        if not candidates:
            return None
        confident = [(score, rect) for score, rect in candidates if score >= 0]
        if confident:
            best = max(score for score, _ in confident)
            plausible = [(score, rect) for score, rect in confident if score >= best - self.score_margin]
            score, rect = max(plausible, key=lambda item: (item[1].width() * item[1].height(), item[0]))
        elif self.accept_weak:
            score, rect = max(candidates, key=lambda item: item[0])
        else:
            return None
        shape = self._predictor(image, rect)
        points68 = np.array([(shape.part(i).x, shape.part(i).y) for i in range(shape.num_parts)],
                            dtype=np.float64)
        return Detection(points5=points5_from_68(points68), score=score,
                         box=(rect.left(), rect.top(), rect.right(), rect.bottom()),
                         num_faces=len(confident), upsample=upsample, points68=points68)

    def detect_file(self, path: str | os.PathLike) -> Detection | None:
        """Decode an image file and detect; raises `gancore.sources.BadImage` when it cannot be decoded."""
        return self.detect(decode_image(path))


def landmarks_for_folder(folder: str | os.PathLike, detector: LandmarkDetector | None = None, *,
                         files: Iterable[str | os.PathLike] | None = None,
                         progress: Callable[[str], None] | None = None,
                         ) -> tuple[dict[str, Detection], dict[str, str]]:
    """Detect landmarks for every image of a folder of face photos that has no landmark file.

    Images are the folder's files with an image extension (not recursive, sorted by name), or the given
    `files` (names relative to `folder`, or paths). Returns (found, skipped): {file name: Detection} and
    {file name: reason} for files that could not be decoded or show no face. `progress`, if given, is called
    with each file name after it is processed. One bad image never stops the loop.
    """
    folder = Path(folder)
    detector = (detector or LandmarkDetector()).load()
    if files is None:
        if not folder.is_dir():
            raise LandmarkError(f"{folder}: not a folder")
        paths = sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS),
                       key=lambda p: p.name)
    else:
        paths = [Path(f) if Path(f).is_absolute() else folder / f for f in files]
    found: dict[str, Detection] = {}
    skipped: dict[str, str] = {}
    for path in paths:
        name = path.name if files is None else os.path.relpath(path, folder)
        try:
            detection = detector.detect_file(path)
        except BadImage as error:
            skipped[name] = str(error)
        else:
            if detection is None:
                skipped[name] = "no face found"
            else:
                found[name] = detection
        if progress is not None:
            progress(name)
    return found, skipped
