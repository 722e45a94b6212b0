"""68 facial landmarks from dlib (the optional `feratt[landmarks]` extra), for the bank and `predict`.

dlib's HOG frontal face detector needs no model file; its MMOD CNN detector and the 68-point shape
predictor (iBUG 300-W, whose terms exclude commercial use) ship inside the `face-recognition-models`
wheel. Nothing is downloaded. The detector and predictor objects are built once per process, so each
joblib worker loads its own after the fork.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import cv2
import numpy as np

from feratt.datasets.boxes import FaceBox
from feratt.errors import FerattError

LANDMARK_COUNT = 68
INSTALL_HINT = "pip install 'feratt[landmarks]' (dlib-bin and face-recognition-models)"
#: Faces smaller than HOG's 80 px window are found on an upscaled copy: the bank upscales an image whose
#: shorter side is under this many pixels (a 48-px CK+48 face becomes 192 px, which HOG finds).
BANK_DETECTION_MIN_SIDE = 192
_MAX_UPSCALE = 4
#: A larger image is searched on a copy of this longer side: HOG's time and memory grow with the area.
BANK_DETECTION_MAX_SIDE = 800
_PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"
_CNN_FILE = "mmod_human_face_detector.dat"


def _model_folder() -> Path | None:
    """face_recognition_models' models folder, found without importing it (it imports pkg_resources)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "models"


@functools.lru_cache(maxsize=1)
def landmarks_available() -> bool:
    """Whether dlib and the 68-point model are installed (the `feratt[landmarks]` extra)."""
    try:
        import dlib  # noqa: F401
    except ImportError:
        return False
    folder = _model_folder()
    return folder is not None and (folder / _PREDICTOR_FILE).is_file()


def require_landmarks(what: str, field: str) -> None:
    """A FerattError naming `field` unless the extra is installed."""
    if not landmarks_available():
        raise FerattError(f"{what} needs dlib's 68-point landmarks: {INSTALL_HINT}", field=field)


def describe() -> str:
    """One line: which landmark path this installation takes."""
    if landmarks_available():
        return "landmarks: dlib HOG detector and 68-point shape predictor (feratt[landmarks])"
    return (
        f"landmarks: not installed, faces without mask or landmark files get GrabCut masks ({INSTALL_HINT})"
    )


@functools.lru_cache(maxsize=1)
def _hog():
    import dlib

    return dlib.get_frontal_face_detector()


@functools.lru_cache(maxsize=1)
def _cnn():
    import dlib

    return dlib.cnn_face_detection_model_v1(str(_model_folder() / _CNN_FILE))


@functools.lru_cache(maxsize=1)
def _predictor():
    import dlib

    return dlib.shape_predictor(str(_model_folder() / _PREDICTOR_FILE))


def _dlib_image(image: np.ndarray) -> np.ndarray:
    """A C-contiguous uint8 grey or RGB array, as dlib takes it."""
    return np.ascontiguousarray(image if image.ndim == 2 else image[..., :3])


def _box(rect, score: float) -> FaceBox:
    return FaceBox(float(rect.left()), float(rect.top()), float(rect.width()), float(rect.height()), score)


def hog_boxes(image: np.ndarray, upsample: int = 0, threshold: float = 0.0) -> list[FaceBox]:
    """dlib's HOG frontal faces scoring over `threshold`, best first (`upsample`: image doublings)."""
    rects, scores, _ = _hog().run(_dlib_image(image), upsample, threshold)
    boxes = [_box(rect, float(score)) for rect, score in zip(rects, scores, strict=True)]
    return sorted(boxes, key=lambda b: -b.score)


def cnn_boxes(image: np.ndarray, upsample: int = 0) -> list[FaceBox]:
    """dlib's MMOD CNN faces, best score first."""
    found = _cnn()(_dlib_image(image), upsample)
    return sorted((_box(d.rect, float(d.confidence)) for d in found), key=lambda b: -b.score)


def shape_points(image: np.ndarray, box: FaceBox) -> np.ndarray:
    """The 68 iBUG landmarks (x, y) of the face in `box`, float64, in `image`'s pixels."""
    import dlib

    rect = dlib.rectangle(
        round(box.x), round(box.y), round(box.x + box.width) - 1, round(box.y + box.height) - 1
    )
    shape = _predictor()(_dlib_image(image), rect)
    return np.array([(p.x, p.y) for p in shape.parts()], np.float64)


def with_points(image: np.ndarray, box: FaceBox) -> FaceBox:
    """`box` carrying its 68 landmarks."""
    return FaceBox(box.x, box.y, box.width, box.height, box.score, landmarks=shape_points(image, box))


def _search_copy(image: np.ndarray, min_side: int) -> tuple[np.ndarray, float]:
    """The copy HOG searches (small images upscaled, large ones shrunk) and its scale."""
    height, width = image.shape[:2]
    if max(height, width) > BANK_DETECTION_MAX_SIDE:
        scale = BANK_DETECTION_MAX_SIDE / max(height, width)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        return cv2.resize(image, size, interpolation=cv2.INTER_AREA), scale
    factor = min(_MAX_UPSCALE, int(np.ceil(min_side / max(1, min(height, width)))))
    if factor <= 1:
        return image, 1.0
    return cv2.resize(image, (width * factor, height * factor), interpolation=cv2.INTER_CUBIC), float(factor)


def face_landmarks(image: np.ndarray, min_side: int = BANK_DETECTION_MIN_SIDE) -> np.ndarray | None:
    """The 68 landmarks of the largest face HOG finds in a face image, or None; for the face bank.

    A small image (shorter side under `min_side`) is searched on an upscaled copy (bicubic, at most
    4x), so that small faces reach HOG's window; a large one on a shrunk copy. The points are predicted
    on the copy of the two that is larger, and come back in the original image's pixels.
    """
    work, scale = _search_copy(image, min_side)
    boxes = hog_boxes(work, 0) or hog_boxes(work, 1)
    if not boxes:
        return None
    largest = max(boxes, key=lambda b: b.area)
    if scale < 1.0:  # predict on the full image: its detail places the points best
        box = FaceBox(largest.x / scale, largest.y / scale, largest.width / scale, largest.height / scale)
        return shape_points(image, box)
    # A pixel centre at k in the copy lies at (k + 0.5) / scale - 0.5 in the original.
    return (shape_points(work, largest) + 0.5) / scale - 0.5
