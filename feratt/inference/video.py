"""Faces in a video: every k-th frame classified, faces followed by an IoU tracker, scores smoothed."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from feratt.atomic import atomic_path
from feratt.codec import OMIT_NONE, encode
from feratt.datasets.detect import DetectorSettings, FaceBox, iou
from feratt.errors import FerattError
from feratt.inference.annotate import draw_faces
from feratt.inference.backends import Classifier
from feratt.inference.classify import classify_faces, face_label, label_of
from feratt.progress import Progress, no_progress

# FFmpeg's own log lines ("moov atom not found") would reach stderr raw; OpenCV reads this before it first
# opens a video. Each failure is reported as one line instead; set it (to 32, say) to see them.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
#: Free bytes under which a video that could not be written whole is put down to a full disk.
_NEARLY_FULL = 1 << 20


class IouTracker:
    """Follows faces from frame to frame: each box joins the track it overlaps most, greedily by IoU.

    A box that overlaps no track by `threshold` starts a new one; a track unmatched for more than
    `patience` classified frames ends.
    """

    def __init__(self, threshold: float = 0.3, patience: int = 5) -> None:
        self.threshold = threshold
        self.patience = patience
        self.boxes: dict[int, FaceBox] = {}
        self.missed: dict[int, int] = {}
        self.next_id = 1

    def update(self, boxes: list[FaceBox]) -> list[int]:
        """The track id of each of this frame's boxes."""
        pairs = sorted(
            ((iou(old, box), track, i) for track, old in self.boxes.items() for i, box in enumerate(boxes)),
            key=lambda item: (-item[0], item[1], item[2]),
        )
        ids: list[int | None] = [None] * len(boxes)
        for overlap, track, i in pairs:
            if overlap < self.threshold:
                break
            if ids[i] is None and track not in ids:
                ids[i] = track
        for i, track in enumerate(ids):
            if track is None:
                ids[i] = self.next_id
                self.next_id += 1
        for track in list(self.boxes):
            self.missed[track] = 0 if track in ids else self.missed[track] + 1
            if self.missed[track] > self.patience:
                del self.boxes[track], self.missed[track]
        for track, box in zip(ids, boxes, strict=True):
            self.boxes[track] = box
            self.missed.setdefault(track, 0)
        return [int(track) for track in ids]


class Smoother:
    """The mean of each track's class probabilities over its last `frames` classified frames."""

    def __init__(self, frames: int) -> None:
        self.frames = frames
        self.history: dict[int, deque[np.ndarray]] = {}

    def add(self, track: int, probabilities: np.ndarray) -> np.ndarray:
        """Record a frame's probabilities for `track`; the smoothed probabilities."""
        history = self.history.setdefault(track, deque(maxlen=self.frames))
        history.append(probabilities)
        return np.mean(history, axis=0)


@dataclass(frozen=True)
class FrameFace:
    """One face of a classified frame: its track, box, probabilities and class (of the smoothed ones)."""

    track: int
    box: list[float]  # x, y, width, height
    probabilities: dict[str, float]
    prediction: str
    smoothed: dict[str, float] | None = field(default=None, metadata=OMIT_NONE)  # smoothing over > 1 frame


@dataclass(frozen=True)
class FrameRecord:
    """A classified frame: its number, its time in seconds and its faces (one JSON line of `annotate`)."""

    frame: int
    time: float
    faces: list[FrameFace]


@dataclass(frozen=True)
class TrackSummary:
    """One face followed: first and last frame, frames classified, mean probabilities and their class."""

    track: int
    first_frame: int
    last_frame: int
    frames: int
    probabilities: dict[str, float]
    prediction: str


@dataclass(frozen=True)
class VideoResult:
    """What `predict` found in one video, as `feratt predict --json` prints it: tracks and frame records."""

    path: Path
    frames: int  # frames read
    classified_frames: int
    fps: float
    every: int
    smooth: int
    tracks: list[TrackSummary]
    written: list[Path]  # the annotated video and its JSON lines
    notes: list[str]
    frame_records: list[FrameRecord]


def track_summaries(records: list[FrameRecord]) -> list[TrackSummary]:
    """Per track: first and last frame, frames classified, mean probabilities and their class."""
    seen: dict[int, list[tuple[int, dict[str, float]]]] = {}
    for record in records:
        for face in record.faces:
            seen.setdefault(face.track, []).append((record.frame, face.probabilities))
    summary = []
    for track, rows in sorted(seen.items()):
        names = list(rows[0][1])
        mean = np.mean([[p[name] for name in names] for _, p in rows], axis=0)
        probabilities = dict(zip(names, map(float, mean), strict=True))
        summary.append(
            TrackSummary(track, rows[0][0], rows[-1][0], len(rows), probabilities, label_of(names, mean))
        )
    return summary


def open_video(path: Path) -> tuple[Any, float, int]:
    """An OpenCV capture of `path`, its frame rate and its frame count (0 when unknown)."""
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise FerattError(f"{path}: not a readable video (OpenCV cannot open it)")
    fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
    count = int(max(capture.get(cv2.CAP_PROP_FRAME_COUNT), 0))
    return capture, fps if fps > 0 else 25.0, count


def frames(capture: Any) -> Iterator[np.ndarray]:
    """The capture's frames as RGB, until one cannot be read."""
    while True:
        ok, frame = capture.read()
        if not ok or frame is None:
            return
        yield (
            cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            if frame.ndim == 3
            else cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
        )


@dataclass
class _Drawn:
    """The faces of the last classified frame, drawn on the frames that follow it until the next."""

    boxes: list[list[float]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    classes: list[int] = field(default_factory=list)


def _frame_record(
    model: Classifier,
    image: np.ndarray,
    index: int,
    fps: float,
    state: tuple[DetectorSettings, IouTracker, Smoother],
    drawn: _Drawn,
) -> FrameRecord:
    """Classify one frame's faces; its record, and what to draw updated."""
    detector, tracker, smoother = state
    faces = classify_faces(model, image, detector)
    tracks = tracker.update([face.box for face in faces if face.box is not None])
    found = []
    drawn.boxes, drawn.labels, drawn.classes = [], [], []
    for face, track in zip(faces, tracks, strict=True):
        smoothed = smoother.add(track, face.probabilities)
        mean = dict(zip(model.classes, map(float, smoothed), strict=True)) if smoother.frames > 1 else None
        entry = FrameFace(
            track=track,
            box=face.box.as_list(),
            probabilities=dict(zip(model.classes, map(float, face.probabilities), strict=True)),
            prediction=label_of(model.classes, smoothed),
            smoothed=mean,
        )
        found.append(entry)
        drawn.boxes.append(entry.box)
        drawn.labels.append(face_label(model.classes, smoothed, track))
        drawn.classes.append(int(np.argmax(smoothed)))
    return FrameRecord(frame=index, time=round(index / fps, 3), faces=found)


def classify_video(
    model: Classifier,
    path: Path,
    detector: DetectorSettings,
    *,
    every: int = 1,
    smooth: int = 1,
    annotate: tuple[Path, Path] | None = None,
    progress: Progress | None = None,
) -> VideoResult:
    """Classify the faces of every `every`-th frame of `path`, smoothing over `smooth` classified frames.

    With `annotate` (video path, JSON-lines path), writes every frame with the latest boxes drawn, and
    one JSON line per classified frame.
    """
    progress = progress or no_progress
    records: list[FrameRecord] = []
    read = 0
    state = (detector, IouTracker(), Smoother(smooth))
    drawn = _Drawn()
    with quiet_opencv(), _unwritten_named(annotate), contextlib.ExitStack() as stack:
        capture, fps, count = open_video(path)
        stack.callback(capture.release)
        writer = None
        for index, image in enumerate(frames(capture)):
            if index % every == 0:
                records.append(_frame_record(model, image, index, fps, state, drawn))
            if annotate is not None:
                if writer is None:
                    writer = AnnotatedVideo(stack, annotate[0], fps, image.shape[1::-1])
                writer.write(draw_faces(image, drawn.boxes, drawn.labels, drawn.classes))
            read = index + 1
            progress(read, count or None)
        if read == 0:
            raise FerattError(f"{path}: not a readable video (no frame could be decoded)")
        if writer is not None:
            writer.finish()
            # Both files take their names together, once both are whole.
            _write_lines(stack, annotate[1], records)
    notes = []
    if count and read < count:
        notes.append(f"{path}: frame {read} of {count} could not be read; the video was read up to there")
    written = [] if annotate is None else [annotate[0], annotate[1]]
    tracks = track_summaries(records)
    return VideoResult(path, read, len(records), fps, every, smooth, tracks, written, notes, records)


@contextlib.contextmanager
def quiet_opencv() -> Iterator[None]:
    """OpenCV's warnings ("Failed to write frame", once a frame) kept off stderr for the block."""
    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging is None:
        yield
        return
    level = logging.getLogLevel()
    logging.setLogLevel(min(level, logging.LOG_LEVEL_ERROR))
    try:
        yield
    finally:
        logging.setLogLevel(level)


@contextlib.contextmanager
def _unwritten_named(annotate: tuple[Path, Path] | None) -> Iterator[None]:
    """An OSError while writing the annotated video or its JSON lines as one FerattError, saying that
    neither was written."""
    try:
        yield
    except OSError as exc:
        if annotate is None:
            raise
        where = exc.filename or annotate[0]
        raise FerattError(f"{where}: {exc.strerror or exc}; {_neither(annotate[0])}") from None


def _neither(target: Path) -> str:
    return f"neither {target.name} nor {target.with_suffix('.jsonl').name} was written"


class AnnotatedVideo:
    """An mp4 writer into a temporary file that replaces `target` once the stack closes without error."""

    def __init__(self, stack: contextlib.ExitStack, target: Path, fps: float, size: tuple[int, int]) -> None:
        self.target = target
        self.tmp = stack.enter_context(atomic_path(target))
        self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
        stack.callback(self.writer.release)  # on an error too, before the temporary file goes
        if not self.writer.isOpened():
            raise FerattError(f"cannot write the video {target}: OpenCV has no mp4 encoder here")
        self.frames = 0

    def write(self, picture: np.ndarray) -> None:
        """Add an RGB frame."""
        self.writer.write(cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
        self.frames += 1

    def finish(self) -> None:
        """Close the file; a FerattError unless it reads back with every frame (OpenCV's writer reports
        no error of its own: a full disk shows only here)."""
        self.writer.release()
        capture = cv2.VideoCapture(str(self.tmp))
        try:
            whole = capture.isOpened() and int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == self.frames
        finally:
            capture.release()
        if not whole:
            raise FerattError(f"{self.target}: {_why_unwritten(self.tmp.parent)}; {_neither(self.target)}")


def _why_unwritten(folder: Path) -> str:
    """Why OpenCV could not write a whole video into `folder`, as far as can be told afterwards."""
    try:
        full = shutil.disk_usage(folder).free < _NEARLY_FULL
    except OSError:
        full = False
    return "No space left on device" if full else "OpenCV could not write the video whole"


def _write_lines(stack: contextlib.ExitStack, target: Path, records: list[FrameRecord]) -> None:
    """The JSON lines of `records` into a temporary file that replaces `target` once the stack closes."""
    tmp = stack.enter_context(atomic_path(target))
    tmp.write_text("".join(json.dumps(encode(record)) + "\n" for record in records))
