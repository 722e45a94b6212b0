"""Face detection, shared by the face bank and `feratt predict`: scikit-image's LBP cascade, dlib's HOG or
CNN detector (the `feratt[landmarks]` extra), or OpenCV's YuNet.

The face bank takes `detect_faces` (the cascade on a copy of at most 320 px, overlapping detections
averaged) for its GrabCut masks, which must not change. `find_faces` is the detector for photos in the
wild: `auto` is dlib's HOG with 68 landmarks per face when the extra is installed, else the cascade on a
larger copy, then non-maximum suppression and the false-positive filters that `bench/detection_bench.py`
measured; or OpenCV's YuNet from a local model.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import cv2
import numpy as np

from feratt.datasets.boxes import FaceBox
from feratt.datasets.landmarks import (
    cnn_boxes,
    hog_boxes,
    landmarks_available,
    require_landmarks,
    with_points,
)
from feratt.errors import FerattError

BANK_DETECTION_SIDE = 320  # the bank detects on a copy no larger than this: the cost grows with the area
_MIN_FACE = 24  # the LBP cascade's window, in pixels of the copy it runs on
#: A box sharing this fraction of its area with a kept face is that face's hair or features found again
#: (bench/detection_bench.py: 0.2 rather than 0.6 removed a false face in 60 scenes and lost none).
_CONTAINED = 0.2


@functools.lru_cache(maxsize=1)
def _cascade():
    # Built once per process: joblib workers each load their own copy after the fork.
    from skimage import data
    from skimage.feature import Cascade

    return Cascade(data.lbp_frontal_face_cascade_filename())


def _grey(image: np.ndarray) -> np.ndarray:
    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


def cascade_boxes(image: np.ndarray, side: int, min_neighbours: int = 4) -> list[FaceBox]:
    """The LBP cascade's detections on a copy of `image` no larger than `side`, in `image`'s pixels."""
    grey = _grey(image)
    scale = min(1.0, side / max(grey.shape))
    if scale < 1.0:
        grey = cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    smallest = min(grey.shape)
    if smallest < _MIN_FACE:
        return []
    detections = _cascade().detect_multi_scale(
        img=grey.astype(np.float32) / 255.0,
        scale_factor=1.15,
        step_ratio=1,
        min_size=(_MIN_FACE, _MIN_FACE),
        max_size=(smallest, smallest),
        min_neighbor_number=min_neighbours,
    )
    return [
        FaceBox(d["c"] / scale, d["r"] / scale, d["width"] / scale, d["height"] / scale) for d in detections
    ]


def iou(a: FaceBox, b: FaceBox) -> float:
    """Intersection over union of two boxes."""
    inter = _intersection(a, b)
    return inter / (a.area + b.area - inter) if inter > 0 else 0.0


def _intersection(a: FaceBox, b: FaceBox) -> float:
    width = min(a.x + a.width, b.x + b.width) - max(a.x, b.x)
    height = min(a.y + a.height, b.y + b.height) - max(a.y, b.y)
    return width * height if width > 0 and height > 0 else 0.0


def merge_overlapping(boxes: list[FaceBox], threshold: float = 0.3) -> list[FaceBox]:
    """Average detections that overlap into one box each; the best supported, largest face first."""
    clusters: list[list[FaceBox]] = []
    for box in sorted(boxes, key=lambda b: (-b.width * b.height, b.y, b.x)):
        home = next((c for c in clusters if iou(c[0], box) >= threshold), None)
        if home is None:
            clusters.append([box])
        else:
            home.append(box)
    merged = [
        (len(c), FaceBox(*np.mean([[b.x, b.y, b.width, b.height] for b in c], axis=0).tolist(), len(c)))
        for c in clusters
    ]
    merged.sort(key=lambda item: (-item[0], -item[1].width * item[1].height))
    return [box for _, box in merged]


def detect_faces(image: np.ndarray) -> list[FaceBox]:
    """The face bank's detection: frontal faces by the LBP cascade, merged; best supported first."""
    return merge_overlapping(cascade_boxes(image, BANK_DETECTION_SIDE))


#: The detectors `find_faces` offers. `auto`: with the landmarks extra, dlib's HOG (with landmarks), plus
#: the faces only the filtered cascade finds (drawn faces, which HOG often misses; no landmarks);
#: without it, the cascade.
DETECTORS: tuple[str, ...] = ("auto", "hog", "cnn", "cascade", "yunet")


@dataclass(frozen=True)
class DetectorSettings:
    """How `find_faces` looks for faces in a photo (defaults: the setting the detection bench chose)."""

    detector: str = "auto"  # one of DETECTORS; a YuNet `model` with `auto` means yunet
    side: int = 640  # the cascade and HOG run on a copy no larger than this (bigger: smaller faces, slower)
    upsample: int = 1  # HOG and CNN: image doublings (1 finds faces down to about 40 px of the copy)
    #: HOG's score threshold: over 0.15 drops the one false HOG face measured, a suit badge in the astronaut
    #: photo (0.12); recall on the bench's 224 faces 95 against 120 at 0, the difference drawn faces
    hog_threshold: float = 0.15
    min_neighbours: int = 4  # the cascade's own grouping: raw windows a detection needs
    overlap: float = 0.3  # detections overlapping more than this (IoU, or 0.6 of the smaller) are one face
    min_skin: float = 0.15  # the face's centre must hold this fraction of skin-coloured pixels (colour only)
    min_contrast: float = 0.1  # dark features (eyes, brows) in the box's upper half; see feature_contrast
    model: str | None = None  # a local YuNet .onnx file: OpenCV's FaceDetectorYN instead of the cascade
    min_score: float = 0.7  # YuNet's confidence threshold

    def __post_init__(self) -> None:
        checks = (
            (self.side >= 2 * _MIN_FACE, f"the detection side must be at least {2 * _MIN_FACE} px", "side"),
            (self.min_neighbours >= 1, "the cascade needs at least 1 neighbour", "min_neighbours"),
            (0 < self.overlap <= 1, "the overlap must lie in (0, 1]", "overlap"),
            (0 <= self.min_skin <= 1, "the skin fraction must lie in [0, 1]", "min_skin"),
            (0 <= self.min_contrast <= 1, "the feature contrast must lie in [0, 1]", "min_contrast"),
            (0 <= self.min_score <= 1, "the detector score must lie in [0, 1]", "min_score"),
            (-1 <= self.hog_threshold <= 3, "the HOG threshold must lie in [-1, 3]", "hog_threshold"),
        )
        for ok, message, name in checks:
            if not ok:
                raise FerattError(message, field=name)
        if self.detector not in DETECTORS:
            choices = ", ".join(DETECTORS)
            message = f"the detector must be one of {choices}, not {self.detector!r}"
            raise FerattError(message, field="detector")
        if not 0 <= self.upsample <= 2:
            raise FerattError(f"the upsampling must be 0 to 2, not {self.upsample}", field="upsample")
        if self.model is not None and not os.path.isfile(self.model):
            raise FerattError(f"no YuNet model file at {self.model}", field="detector_model")
        if self.detector == "yunet" and self.model is None:
            raise FerattError("the yunet detector needs a local YuNet .onnx file", field="detector_model")
        if self.detector in ("hog", "cnn"):
            require_landmarks(f"the {self.detector} detector", "detector")

    @property
    def kind(self) -> str:
        """The detector `find_faces` runs: `auto` resolved."""
        if self.detector != "auto":
            return self.detector
        if self.model is not None:
            return "yunet"
        return "hog" if landmarks_available() else "cascade"

    @property
    def name(self) -> str:
        """A short description, for logs and benchmark tables."""
        kind = self.kind
        if kind == "yunet":
            return f"yunet score>={self.min_score}"
        filters = f"skin>={self.min_skin} contrast>={self.min_contrast}"
        cascade = f"lbp side {self.side} n>={self.min_neighbours} {filters}"
        if kind in ("hog", "cnn"):
            dlib = f"dlib {kind} side {self.side} upsample {self.upsample}"
            return f"{dlib}, then {cascade}" if self.detector == "auto" else dlib
        return cascade


def suppress(boxes: list[FaceBox], overlap: float, merge: bool = True) -> list[FaceBox]:
    """Non-maximum suppression: boxes that overlap a better one by `overlap` IoU, or lie mostly in it, go.

    The cascade gives no confidence: with `merge`, overlapping detections are first averaged into
    one box whose score is how many it merged (then size orders them); YuNet's own scores order its
    boxes. A box is dropped when it overlaps a kept one by `overlap` IoU or shares a fifth of its own
    area with it (a face's hair or features found again).
    """
    ranked = merge_overlapping(boxes, overlap) if merge else sorted(boxes, key=lambda b: (-b.score, -b.area))
    kept: list[FaceBox] = []
    for box in ranked:
        if not any(_same_face(box, k, overlap) for k in kept):
            kept.append(box)
    return kept


def is_grey(image: np.ndarray) -> bool:
    """Whether an image is grey: one channel, or three equal ones."""
    if image.ndim == 2:
        return True
    return bool(np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 1], image[..., 2]))


def skin_fraction(image: np.ndarray, box: FaceBox) -> float:
    """The fraction of skin-coloured pixels (YCrCb rule of Chai and Ngan) in the middle of `box`."""
    if image.ndim == 2:
        return 1.0
    patch = _middle(image, box)
    if patch.size == 0:
        return 0.0
    ycrcb = cv2.cvtColor(patch, cv2.COLOR_RGB2YCrCb)
    skin = cv2.inRange(ycrcb, (0, 133, 77), (255, 173, 127))
    return float(np.count_nonzero(skin)) / skin.size


#: Chroma (|Cr - 128| + |Cb - 128|) that 90 % of a grey face's pixels stay under, JPEG noise included.
_GREY_CHROMA = 6
#: A grey box in a colour photo has no skin colour to judge: it needs this many times the feature
#: contrast instead (grey faces measured 0.28 and up, grey walls, suits and metal 0.26 and under).
GREY_BOX_CONTRAST = 2.5


def box_is_grey(image: np.ndarray, box: FaceBox) -> bool:
    """Whether the middle of `box` is grey: a grey face pasted into a colour photo, or a grey object."""
    if image.ndim == 2:
        return True
    patch = _middle(image, box)
    if patch.size == 0:
        return False
    ycrcb = cv2.cvtColor(patch, cv2.COLOR_RGB2YCrCb)
    chroma = np.abs(ycrcb[..., 1:].astype(np.int16) - 128).sum(axis=-1)
    return bool(np.percentile(chroma, 90) <= _GREY_CHROMA)


def _middle(image: np.ndarray, box: FaceBox) -> np.ndarray:
    """The middle of `box` (columns 0.25 to 0.75, rows 0.25 to 0.85): cheeks, nose and mouth."""
    x0, y0 = int(box.x + 0.25 * box.width), int(box.y + 0.25 * box.height)
    x1, y1 = int(box.x + 0.75 * box.width) + 1, int(box.y + 0.85 * box.height) + 1
    return np.ascontiguousarray(image[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)])


def keeps_box(image: np.ndarray, box: FaceBox, settings: DetectorSettings) -> bool:
    """Whether a cascade detection passes the filters: skin colour (judged on the box's own colour) and
    dark features in the eye band."""
    contrast = feature_contrast(image, box)
    if is_grey(image):  # a grey photo has no skin colour to check
        return contrast >= settings.min_contrast
    if box_is_grey(image, box):
        return contrast >= GREY_BOX_CONTRAST * settings.min_contrast
    return skin_fraction(image, box) >= settings.min_skin and contrast >= settings.min_contrast


def feature_contrast(image: np.ndarray, box: FaceBox) -> float:
    """How much darker the darkest features of the box's eye band are than the band (0 to 1).

    The median grey minus its 5th percentile, over rows 0.2 to 0.5 and columns 0.15 to 0.85 of the box:
    eyes and brows make it large; hair, skin or a flat surface that fooled the cascade leave it small.
    """
    grey = _grey(image)
    x0, y0 = max(int(box.x + 0.15 * box.width), 0), max(int(box.y + 0.2 * box.height), 0)
    x1, y1 = int(box.x + 0.85 * box.width), int(box.y + 0.5 * box.height)
    band = grey[y0:y1, x0:x1]
    if band.size == 0:
        return 0.0
    return float(np.median(band) - np.percentile(band, 5)) / 255.0


def find_faces(image: np.ndarray, settings: DetectorSettings | None = None) -> list[FaceBox]:
    """The faces in an RGB (or grey) photo: detected, filtered and suppressed; largest first.

    The cascade's overlapping detections are averaged first, then filtered, then suppressed: a false
    detection the filters drop can never suppress a true face.
    """
    settings = settings or DetectorSettings()
    kind = settings.kind
    if kind == "yunet":
        boxes = yunet_boxes(image, settings.model, settings.min_score)
    elif kind in ("hog", "cnn"):
        boxes = dlib_boxes(image, settings, kind)
    else:
        boxes = filtered_cascade(image, settings)
    boxes = sorted(suppress(boxes, settings.overlap, merge=False), key=lambda b: (-b.area, b.y, b.x))
    if kind == "cascade":
        return boxes  # the cascade's box (brows to mouth) is not the one the shape predictor was trained on
    if landmarks_available():
        boxes = [with_points(image, box) for box in boxes]
    if settings.detector == "auto" and kind == "hog":
        cascade = suppress(filtered_cascade(image, settings), settings.overlap, merge=False)
        boxes = boxes + _unexplained(cascade, boxes, settings.overlap)
        boxes.sort(key=lambda b: (-b.area, b.y, b.x))
    return boxes


def filtered_cascade(image: np.ndarray, settings: DetectorSettings) -> list[FaceBox]:
    """The cascade's detections, overlapping ones averaged, that pass the skin and feature filters."""
    raw = cascade_boxes(image, settings.side, settings.min_neighbours)
    return [b for b in merge_overlapping(raw, settings.overlap) if keeps_box(image, b, settings)]


def _unexplained(extra: list[FaceBox], kept: list[FaceBox], overlap: float) -> list[FaceBox]:
    """The faces of `extra` that no face of `kept` accounts for (nor an earlier one of `extra`)."""
    taken = list(kept)
    for box in extra:
        if not any(_same_face(box, k, overlap) for k in taken):
            taken.append(box)
    return taken[len(kept) :]


def _same_face(a: FaceBox, b: FaceBox, overlap: float) -> bool:
    """Whether two boxes overlap by `overlap` IoU, or share a fifth of the smaller's area (see suppress)."""
    return iou(a, b) >= overlap or _intersection(a, b) >= _CONTAINED * min(a.area, b.area)


def dlib_boxes(image: np.ndarray, settings: DetectorSettings, kind: str = "hog") -> list[FaceBox]:
    """dlib's HOG or CNN faces, found on a copy no larger than `settings.side`, in `image`'s pixels."""
    scale = min(1.0, settings.side / max(image.shape[:2]))
    work = image
    if scale < 1.0:
        size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
        work = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    if kind == "hog":
        found = hog_boxes(work, settings.upsample, settings.hog_threshold)
    else:
        found = cnn_boxes(work, settings.upsample)
    return [FaceBox(b.x / scale, b.y / scale, b.width / scale, b.height / scale, b.score) for b in found]


@functools.lru_cache(maxsize=2)
def _yunet(model: str):
    try:
        return cv2.FaceDetectorYN.create(model, "", (320, 320), 0.5, 0.3, 5000)
    except cv2.error as exc:
        raise FerattError(
            f"OpenCV cannot load {model} as a YuNet face detector: {str(exc).strip().splitlines()[-1]}",
            field="detector_model",
        ) from None


def yunet_boxes(image: np.ndarray, model: str, min_score: float) -> list[FaceBox]:
    """OpenCV's YuNet detections of at least `min_score` (its rows: x, y, w, h, 10 landmark values, score)."""
    detector = _yunet(model)
    height, width = image.shape[:2]
    bgr = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR if image.ndim == 2 else cv2.COLOR_RGB2BGR)
    detector.setInputSize((width, height))
    detector.setScoreThreshold(float(min_score))
    _, faces = detector.detect(bgr)
    if faces is None:
        return []
    return [FaceBox(float(f[0]), float(f[1]), float(f[2]), float(f[3]), float(f[-1])) for f in faces]
