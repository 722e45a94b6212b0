"""`predict`: the faces in photos and videos, classified by a checkpoint or an exported ONNX model.

Each face is found by `feratt.datasets.detect.find_faces` (or the whole image is taken as one face
crop, with `detect=False`), framed as the model's training renders framed faces, and classified.
No torch is imported for an ONNX model.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from feratt.atomic import remove_temporaries
from feratt.codec import TRANSIENT
from feratt.config.framing import Framing
from feratt.datasets.detect import DetectorSettings
from feratt.errors import FerattError
from feratt.inference.annotate import draw_faces
from feratt.inference.backends import Classifier, open_model
from feratt.inference.classify import FaceResult, classify_faces, face_label
from feratt.inference.inputs import (
    expand_image_paths,
    is_video_file,
    make_folder,
    read_rgb,
    unique_stems,
    write_png,
)
from feratt.inference.video import VideoResult, classify_video
from feratt.locks import exclusive
from feratt.progress import Log, Progress, no_log, no_progress
from feratt.requests import check_fields, request_from


@dataclass(frozen=True, kw_only=True)
class PredictRequest:
    """What `predict` classifies, with which model, and what it writes."""

    checkpoint: str | os.PathLike[str]  # a run folder, fold folder, .pt checkpoint, or exported .onnx
    images: Sequence[str | os.PathLike[str]]  # image and video files, and folders of them
    fold: int | None = None  # the fold, when a run folder holds several
    device: str = "auto"  # torch only
    detect: bool = True  # False: each image is a face crop already, centre-cropped as it is
    detector: DetectorSettings = field(default_factory=DetectorSettings)
    render: str | os.PathLike[str] | None = None  # frame faces as this render did (older checkpoints)
    save_attention: str | os.PathLike[str] | None = None  # FERAtt: each face's input and I_att as PNGs
    annotate: str | os.PathLike[str] | None = None  # images (PNG) and videos (mp4, JSON lines) drawn on
    every: int = 1  # videos: classify every k-th frame
    smooth: int = 1  # videos: average each face's probabilities over this many classified frames
    overwrite: bool = False  # replace annotated files already in `annotate`

    def __post_init__(self) -> None:
        check_fields(self)  # images become a tuple
        if self.every < 1:
            raise FerattError(f"every must be at least 1, not {self.every}", field="every")
        if self.smooth < 1:
            raise FerattError(f"smooth must be at least 1, not {self.smooth}", field="smooth")


@dataclass(frozen=True, kw_only=True)
class Prediction:
    """One face's class probabilities (in the model's class order), its class and where it is."""

    path: Path
    face: int = 0  # the face's number in its image, largest first
    box: list[float] | None = None  # x, y, width, height in the image; None for a whole image
    probabilities: dict[str, float]
    prediction: str  # the most probable class

    @property
    def probability(self) -> float:
        """The probability of the predicted class."""
        return self.probabilities[self.prediction]

    def ranked(self) -> list[tuple[str, float]]:
        """(class, probability) pairs, most probable first."""
        return sorted(self.probabilities.items(), key=lambda item: -item[1])


@dataclass(kw_only=True)
class PredictionResult:
    """The faces found and classified in images and videos (as `--json` prints them), and files written."""

    checkpoint: Path
    method: str
    fold: int | None
    epoch: int | None
    classes: list[str]
    framing: Framing | None = None  # how faces were framed (None with detect=False)
    detector: str | None = None
    predictions: list[Prediction] = field(default_factory=list)
    no_face: list[Path] = field(default_factory=list)  # images in which no face was found
    videos: list[VideoResult] = field(default_factory=list)
    attention_written: list[Path] = field(default_factory=list, metadata=TRANSIENT)
    annotated: list[Path] = field(default_factory=list, metadata=TRANSIENT)


def _targets(
    request: PredictRequest, paths: list[Path], held: contextlib.ExitStack, log: Log
) -> dict[Path, Path]:
    """Where each input's annotated copy goes, its folder locked for the run; a FerattError for one that
    exists, unless overwriting. Temporary files a killed run left there go."""
    if request.annotate is None:
        return {}
    folder = make_folder(request.annotate)
    held.enter_context(exclusive(folder, what=f"the annotate folder {folder}"))
    targets = {}
    for path, stem in zip(paths, unique_stems(paths), strict=True):
        targets[path] = folder / (f"{stem}.mp4" if is_video_file(path) else f"{stem}.png")
    existing = [t for t in targets.values() if t.exists()] if not request.overwrite else []
    if existing:
        raise FerattError(f"{existing[0]} exists already; overwrite replaces it", field="overwrite")
    written = [*targets.values(), *(t.with_suffix(".jsonl") for t in targets.values() if t.suffix == ".mp4")]
    removed = [gone for target in written for gone in remove_temporaries(target)]
    if removed:
        files = "file" if len(removed) == 1 else "files"
        log(f"removed {len(removed)} temporary {files} an interrupted run left in {folder}")
    return targets


def _save_attention(folder: Path, stem: str, faces: list[FaceResult], whole: bool) -> list[Path]:
    """Each face's model input and I_att: `<stem>-input.png` for a whole image, `<stem>-face<k>-...`."""
    written = []
    for number, face in enumerate(faces):
        name = stem if whole else f"{stem}-face{number}"
        written.append(write_png(folder / f"{name}-input.png", face.input))
        written.append(write_png(folder / f"{name}-attention.png", face.attention))
    return written


def _check(request: PredictRequest, model: Classifier) -> None:
    if request.save_attention is not None and not model.has_attention:
        raise FerattError(
            f"saving attention images needs a FERAtt model; {model.source} is {model.method}, "
            "which has no attention image",
            field="save_attention",
        )


def predict(
    request: PredictRequest | None = None,
    /,
    *,
    progress: Progress | None = None,
    log: Log | None = None,
    **fields: Any,
) -> PredictionResult:
    """Find, frame and classify the faces of image and video files (and of the images in folders).

    The fields are PredictRequest's. Images without a face are listed in the result (an error only when
    no image has one); a video read only in part is logged.
    """
    if request is None and not {"checkpoint", "images"} <= set(fields):
        raise FerattError("predict needs a checkpoint and images")
    request = request_from(PredictRequest, request, fields)
    log, progress = log or no_log, progress or no_progress
    model = open_model(request.checkpoint, request.fold, request.device, request.render)
    _check(request, model)
    paths = expand_image_paths(request.images, videos=True)
    detector = request.detector if request.detect else None
    if detector is not None and model.framing.aligned and detector.kind in ("cascade",):
        log(
            f"{model.source} was trained on faces aligned by their landmarks, which the cascade does not "
            "give: faces are framed around GrabCut masks instead (install feratt[landmarks] for dlib's HOG)"
        )
    result = PredictionResult(
        checkpoint=model.source,
        method=model.method,
        fold=model.fold,
        epoch=model.epoch,
        classes=list(model.classes),
        framing=model.framing if request.detect else None,
        detector=detector.name if detector is not None else None,
    )
    with contextlib.ExitStack() as held:
        targets = _targets(request, paths, held, log)
        attention = make_folder(request.save_attention) if request.save_attention is not None else None
        for done, (path, stem) in enumerate(zip(paths, unique_stems(paths), strict=True), 1):
            if is_video_file(path):
                _video(request, model, path, targets, result, progress, log)
                continue
            _image(model, path, stem, detector, (targets.get(path), attention), result)
            progress(done, len(paths))
    images = [path for path in paths if not is_video_file(path)]
    if images and len(result.no_face) == len(images) and not result.videos:
        raise FerattError(
            f"no face found in {_count(len(images), 'image')}; --no-detect takes face crops whole"
        )
    return result


def _count(n: int, noun: str) -> str:
    return f"the {noun}" if n == 1 else f"any of the {n} {noun}s"


def _image(
    model: Classifier,
    path: Path,
    stem: str,
    detector: DetectorSettings | None,
    outputs: tuple[Path | None, Path | None],
    result: PredictionResult,
) -> None:
    """Classify one image's faces into `result`, drawing and saving them as asked."""
    image = read_rgb(path)
    faces = classify_faces(model, image, detector)
    if not faces:
        result.no_face.append(path)
    for number, face in enumerate(faces):
        probabilities = dict(zip(model.classes, map(float, face.probabilities), strict=True))
        label = model.classes[int(np.argmax(face.probabilities))]
        box = None if face.box is None else face.box.as_list()
        result.predictions.append(
            Prediction(path=path, face=number, box=box, probabilities=probabilities, prediction=label)
        )
    annotated, attention = outputs
    if annotated is not None:
        boxed = [face for face in faces if face.box is not None]
        picture = draw_faces(
            image,
            [face.box.as_list() for face in boxed],
            [face_label(model.classes, face.probabilities) for face in boxed],
            [int(np.argmax(face.probabilities)) for face in boxed],
        )
        result.annotated.append(write_png(annotated, picture))
    if attention is not None:
        result.attention_written += _save_attention(attention, stem, faces, detector is None)


def _video(
    request: PredictRequest,
    model: Classifier,
    path: Path,
    targets: dict[Path, Path],
    result: PredictionResult,
    progress: Progress,
    log: Log,
) -> None:
    """Classify one video's faces into `result`."""
    target = targets.get(path)
    video = classify_video(
        model,
        path,
        request.detector,
        every=request.every,
        smooth=request.smooth,
        annotate=None if target is None else (target, target.with_suffix(".jsonl")),
        progress=progress,
    )
    for note in video.notes:
        log(note)
    result.videos.append(video)
    result.annotated += video.written[:1]
