"""One face at a time: read it, choose its mask (file, landmarks or computed), crop and resize it.

The mask comes from, in order: a mask file; a landmark file (CK+); the 68 landmarks dlib finds (the
`feratt[landmarks]` extra); GrabCut around a cascade detection; an ellipse. `mask_method` forces one of
the computed kinds; a mask file always wins. Faces cut out by landmarks are aligned (eyes level) and
keep their points, in crop pixels.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from feratt.artifacts.bank import BankFace, Skipped, safe_text
from feratt.datasets import align
from feratt.datasets.demo import DEMO_SOURCE, render_demo_face
from feratt.datasets.facemask import compute_mask, inscribed_ellipse, to_grey, to_rgb
from feratt.datasets.imageio import IMAGE_EXTENSIONS, read_image, read_landmarks
from feratt.datasets.landmarks import face_landmarks, landmarks_available
from feratt.datasets.records import FaceEntry, FaceListing, FaceRecord
from feratt.errors import BadInputFile
from feratt.progress import Progress, no_progress
from feratt.workers import ignore_interrupts


@dataclass(frozen=True)
class BankOptions:
    """How faces are cut out for the bank."""

    size: int = 160
    margin: float = 0.2
    forehead: float = 0.0
    masks_root: str | None = None
    seed: int = 0
    min_side: int = 32
    mask_method: str = "auto"  # one of MASK_CHOICES


#: What --mask-method chooses among: `auto` takes the order above.
MASK_CHOICES: tuple[str, ...] = ("auto", "landmarks", "grabcut", "ellipse")


@dataclass
class FaceResult:
    """The outcome for one entry: the face, or None, the files skipped on the way, and decoder warnings."""

    face: BankFace | None
    skipped: list[Skipped] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _find_mask_file(masks_root: str, relpath: str) -> Path | None:
    stem = Path(masks_root) / relpath
    candidates = [stem] + [stem.with_suffix(ext) for ext in sorted(IMAGE_EXTENSIONS)]
    return next((p for p in candidates if p.is_file()), None)


def load_record(
    entry: FaceEntry, classes: tuple[str, ...], options: BankOptions
) -> tuple[FaceRecord, list[Skipped]]:
    """Read one entry's pixels, landmarks and mask file; raise BadInputFile if the image is unusable."""
    notes: list[Skipped] = []
    warned: list[str] = []
    if entry.source.startswith(DEMO_SOURCE):
        image, _ = render_demo_face(entry.source, options.seed)
        conversion = None
    else:
        image, conversion = read_image(entry.source, warned)
    if min(image.shape[:2]) < options.min_side:
        raise BadInputFile(
            entry.source,
            f"too small to hold a face: {image.shape[1]}x{image.shape[0]} px, "
            f"the shorter side is under {options.min_side} px",
        )
    landmarks = None
    if entry.landmarks is not None:
        try:
            landmarks = read_landmarks(entry.landmarks)
        except BadInputFile as exc:
            notes.append(Skipped(exc.path, exc.reason))
    mask = None
    mask_file = _find_mask_file(options.masks_root, entry.relpath) if options.masks_root else None
    if mask_file is not None:
        try:
            mask_image, _ = read_image(mask_file, warned)
        except BadInputFile as exc:
            raise BadInputFile(entry.source, f"its mask file is unusable ({exc.reason})") from None
        if mask_image.shape[:2] != image.shape[:2]:
            raise BadInputFile(
                entry.source,
                f"mask {mask_file} is {mask_image.shape[1]}x{mask_image.shape[0]}, "
                f"image is {image.shape[1]}x{image.shape[0]}",
            )
        mask = to_grey(mask_image) >= 128
        if not mask.any():
            raise BadInputFile(entry.source, f"mask {mask_file} is empty")
    record = FaceRecord(
        image, entry.label, classes[entry.label], entry.subject, entry.source, mask, landmarks, conversion
    )
    record.notes = warned
    return record, notes


def face_points(record: FaceRecord, mask_method: str) -> np.ndarray | None:
    """The landmarks to cut the face out by: its landmark file's, else dlib's, as `mask_method` allows."""
    if mask_method not in ("auto", "landmarks"):
        return None
    if record.landmarks is not None:
        return record.landmarks
    if record.mask is not None or not landmarks_available():
        return None
    return face_landmarks(record.image)


def crop_face(record: FaceRecord, options: BankOptions) -> BankFace:
    """Choose the mask (file, landmarks, or computed), then crop and resize the face around it.

    Raises BadInputFile when `mask_method` is `landmarks` and no face is found.
    """
    size = options.size
    points = face_points(record, options.mask_method)
    crop_points = None
    if points is not None:
        affine, outline = align.landmark_alignment(points, size, options.margin, options.forehead)
        crop_points = align.transform_points(affine, points).astype(np.float32)
        if record.mask is not None:
            mask, method = align.warp_mask(record.mask, affine, size), "file"
        else:
            mask, method = align.polygon_mask(outline, size), "landmarks"
    else:
        if record.mask is not None:
            source_mask, method = record.mask, "file"
        elif options.mask_method == "landmarks":
            raise BadInputFile(record.source, "the landmark detector found no face (--mask-method landmarks)")
        elif options.mask_method == "ellipse":
            source_mask, method = inscribed_ellipse(record.image.shape[:2]), "ellipse"
        else:
            source_mask, method = compute_mask(record.image)
        if method == "ellipse":
            affine = align.frame_crop(record.image.shape[:2], size)
        else:
            affine = align.mask_crop(source_mask, size, options.margin)
        mask = align.warp_mask(source_mask, affine, size)
    image = align.warp_image(to_rgb(record.image), affine, size)
    return BankFace(
        image=image,
        mask=mask.astype(np.uint8) * 255,
        label=record.label,
        subject=safe_text(record.subject),
        source=safe_text(record.source),
        method=method,
        grey=record.image.ndim == 2,
        conversion=record.conversion or "",
        landmarks=crop_points,
    )


def build_face(entry: FaceEntry, classes: tuple[str, ...], options: BankOptions) -> FaceResult:
    """Load and crop one face; a bad file becomes a skipped record instead of an error."""
    cv2.setNumThreads(1)  # the parallelism is across faces
    try:
        record, notes = load_record(entry, classes, options)
        face = crop_face(record, options)
    except BadInputFile as exc:
        return FaceResult(None, [Skipped(exc.path, exc.reason)])
    return FaceResult(face, notes, record.notes)


def build_faces(
    listing: FaceListing, options: BankOptions, jobs: int = 1, progress: Progress | None = None
) -> Iterator[FaceResult]:
    """Process every entry of `listing` in parallel, yielding results in listing order."""
    from joblib import Parallel, delayed

    report = progress or no_progress
    total = len(listing.entries)
    report(0, total)
    tasks = (delayed(build_face)(entry, listing.classes, options) for entry in listing.entries)
    results = Parallel(n_jobs=jobs, return_as="generator", batch_size=4, initializer=ignore_interrupts)(tasks)
    try:
        for done, result in enumerate(results, 1):
            report(done, total)
            yield result
    finally:
        with warnings.catch_warnings():
            # joblib warns that the tasks of an abandoned build were cancelled: that was the point.
            warnings.simplefilter("ignore")
            results.close()
