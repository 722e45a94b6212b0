"""The face bank: every face cropped around its mask, resized, and stored with its labels in HDF5."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import h5py
import numpy as np

from feratt import __version__
from feratt.atomic import atomic_path
from feratt.datasets import align
from feratt.datasets.demo import DEMO_SOURCE, render_demo_face
from feratt.datasets.facemask import compute_mask, to_grey, to_rgb
from feratt.datasets.imageio import IMAGE_EXTENSIONS, read_image, read_landmarks
from feratt.datasets.records import FaceEntry, FaceListing, FaceRecord, Skipped
from feratt.errors import BadInputFile, FerattError
from feratt.hdf5 import read_strings, set_image_attrs, write_strings
from feratt.progress import Progress, no_progress

BANK_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class BankOptions:
    """How faces are cut out for the bank."""

    size: int = 160
    margin: float = 0.2
    forehead: float = 0.0
    masks_root: str | None = None
    seed: int = 0


@dataclass
class BankFace:
    """One processed face: square RGB crop, its binary mask and where it came from."""

    image: np.ndarray
    mask: np.ndarray
    label: int
    subject: str
    source: str
    method: str
    grey: bool
    conversion: str


@dataclass
class FaceResult:
    """The outcome for one entry: the face, or None, and the files skipped on the way."""

    face: BankFace | None
    skipped: list[Skipped] = field(default_factory=list)


def _find_mask_file(masks_root: str, relpath: str) -> Path | None:
    stem = Path(masks_root) / relpath
    candidates = [stem] + [stem.with_suffix(ext) for ext in sorted(IMAGE_EXTENSIONS)]
    return next((p for p in candidates if p.is_file()), None)


def load_record(
    entry: FaceEntry, classes: tuple[str, ...], options: BankOptions
) -> tuple[FaceRecord, list[Skipped]]:
    """Read one entry's pixels, landmarks and mask file; raise BadInputFile if the image is unusable."""
    notes: list[Skipped] = []
    if entry.source.startswith(DEMO_SOURCE):
        image, _ = render_demo_face(entry.source, options.seed)
        conversion = None
    else:
        image, conversion = read_image(entry.source)
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
            mask_image, _ = read_image(mask_file)
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
    return record, notes


def crop_face(record: FaceRecord, options: BankOptions) -> BankFace:
    """Choose the mask (file, landmarks, or computed), then crop and resize the face around it."""
    size = options.size
    if record.landmarks is not None:
        affine, outline = align.landmark_alignment(record.landmarks, size, options.margin, options.forehead)
        if record.mask is not None:
            mask, method = align.warp_mask(record.mask, affine, size), "file"
        else:
            mask, method = align.polygon_mask(outline, size), "landmarks"
    else:
        if record.mask is not None:
            source_mask, method = record.mask, "file"
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
        subject=record.subject,
        source=record.source,
        method=method,
        grey=record.image.ndim == 2,
        conversion=record.conversion or "",
    )


def build_face(entry: FaceEntry, classes: tuple[str, ...], options: BankOptions) -> FaceResult:
    """Load and crop one face; a bad file becomes a skipped record instead of an error."""
    cv2.setNumThreads(1)  # the parallelism is across faces
    try:
        record, notes = load_record(entry, classes, options)
    except BadInputFile as exc:
        return FaceResult(None, [Skipped(exc.path, exc.reason)])
    return FaceResult(crop_face(record, options), notes)


def build_faces(
    listing: FaceListing, options: BankOptions, jobs: int = 1, progress: Progress | None = None
) -> Iterator[FaceResult]:
    """Process every entry of `listing` in parallel, yielding results in listing order."""
    from joblib import Parallel, delayed

    report = progress or no_progress
    total = len(listing.entries)
    report(0, total)
    tasks = (delayed(build_face)(entry, listing.classes, options) for entry in listing.entries)
    results = Parallel(n_jobs=jobs, return_as="generator", batch_size=4)(tasks)
    for done, result in enumerate(results, 1):
        report(done, total)
        yield result


@dataclass
class BankResult:
    """A written face bank: its path, source, faces per class, subject and mask method, and skipped files."""

    path: Path
    format: str
    root: str
    classes: tuple[str, ...]
    per_class: dict[str, int]
    per_subject: dict[str, int]
    per_method: dict[str, int]
    conversions: dict[str, int]
    skipped: list[Skipped]
    notes: list[str]
    checksum: str
    preview: Path | None = None

    @property
    def total(self) -> int:
        """The number of faces in the bank."""
        return sum(self.per_class.values())


def _update_digest(
    digest: Any, image: np.ndarray, mask: np.ndarray, label: int, subject: str, source: str
) -> None:
    digest.update(image.tobytes())
    digest.update(mask.tobytes())
    digest.update(np.int16(label).tobytes())
    digest.update(subject.encode() + b"\0")
    digest.update(source.encode() + b"\0")


def _new_digest(classes: tuple[str, ...]) -> Any:
    return hashlib.sha256(json.dumps(list(classes)).encode())


def _count(counts: dict[str, int], key: str) -> None:
    counts[key] = counts.get(key, 0) + 1


@dataclass
class _BankContents:
    """What has gone into a bank being written: per-face tables, counts, skipped files and the digest."""

    listing: FaceListing
    digest: Any
    skipped: list[Skipped]
    per_class: dict[str, int]
    per_subject: dict[str, int] = field(default_factory=dict)
    per_method: dict[str, int] = field(default_factory=dict)
    conversions: dict[str, int] = field(default_factory=dict)
    tables: dict[str, list[Any]] = field(
        default_factory=lambda: {
            k: [] for k in ("labels", "subjects", "sources", "methods", "grey", "conversions")
        }
    )

    @classmethod
    def start(cls, listing: FaceListing) -> _BankContents:
        return cls(
            listing, _new_digest(listing.classes), list(listing.skipped), dict.fromkeys(listing.classes, 0)
        )

    def add(self, face: BankFace) -> None:
        _update_digest(self.digest, face.image, face.mask, face.label, face.subject, face.source)
        for name, value in (
            ("labels", face.label),
            ("subjects", face.subject),
            ("sources", face.source),
            ("methods", face.method),
            ("grey", face.grey),
            ("conversions", face.conversion),
        ):
            self.tables[name].append(value)
        self.per_class[self.listing.classes[face.label]] += 1
        _count(self.per_subject, face.subject)
        _count(self.per_method, face.method)
        if face.conversion:
            _count(self.conversions, face.conversion)

    def result(self, path: str | Path) -> BankResult:
        return BankResult(
            path=Path(path),
            format=self.listing.format,
            root=self.listing.root,
            classes=self.listing.classes,
            per_class=self.per_class,
            per_subject=dict(sorted(self.per_subject.items())),
            per_method=dict(sorted(self.per_method.items())),
            conversions=self.conversions,
            skipped=self.skipped,
            notes=self.listing.notes,
            checksum=self.digest.hexdigest(),
        )


def _face_datasets(h5: h5py.File, size: int) -> tuple[h5py.Dataset, h5py.Dataset]:
    """The empty, growable image and mask datasets: one gzip chunk per face."""
    chunked = {"compression": "gzip", "compression_opts": 4, "shuffle": True, "track_times": False}
    images = h5.create_dataset(
        "images",
        (0, size, size, 3),
        np.uint8,
        maxshape=(None, size, size, 3),
        chunks=(1, size, size, 3),
        **chunked,
    )
    masks = h5.create_dataset(
        "masks", (0, size, size), np.uint8, maxshape=(None, size, size), chunks=(1, size, size), **chunked
    )
    return images, masks


def _append_face(images: h5py.Dataset, masks: h5py.Dataset, face: BankFace) -> None:
    index = images.shape[0]
    images.resize(index + 1, axis=0)
    masks.resize(index + 1, axis=0)
    images[index] = face.image
    masks[index] = face.mask


def _write_tables(h5: h5py.File, contents: _BankContents) -> None:
    """The per-face labels, flags and strings, and the skipped files with their reasons."""
    tables = contents.tables
    h5.create_dataset("labels", data=np.asarray(tables["labels"], np.int16), track_times=False)
    h5.create_dataset("grey", data=np.asarray(tables["grey"], bool), track_times=False)
    for name in ("subjects", "sources", "methods", "conversions"):
        write_strings(h5, name, tables[name])
    skipped_group = h5.create_group("skipped", track_order=True)
    write_strings(skipped_group, "path", [s.path for s in contents.skipped])
    write_strings(skipped_group, "reason", [s.reason for s in contents.skipped])


def _bank_attrs(listing: FaceListing, options: BankOptions, checksum: str) -> dict[str, Any]:
    return {
        "schema_version": BANK_SCHEMA_VERSION,
        "feratt_version": __version__,
        "kind": "feratt-face-bank",
        "format": listing.format,
        "source": listing.root,
        "class_names": json.dumps(list(listing.classes)),
        "protocol": json.dumps(listing.protocol, sort_keys=True),
        "notes": json.dumps(listing.notes),
        "seed": options.seed,
        "face_size": options.size,
        "margin": options.margin,
        "forehead": options.forehead,
        "masks_root": options.masks_root or "",
        "content_sha256": checksum,
    }


def write_bank(
    path: str | Path,
    listing: FaceListing,
    results: Iterable[FaceResult],
    options: BankOptions,
) -> BankResult:
    """Write processed faces to an HDF5 bank atomically and return what went into it."""
    contents = _BankContents.start(listing)
    with atomic_path(path) as tmp, h5py.File(tmp, "w", libver="v110") as h5:
        images, masks = _face_datasets(h5, options.size)
        for result in results:
            contents.skipped.extend(result.skipped)
            if result.face is not None:
                _append_face(images, masks, result.face)
                contents.add(result.face)
        if images.shape[0] == 0:
            raise FerattError(f"none of the {len(listing.entries)} faces in {listing.root} could be read")
        set_image_attrs(images, truecolor=True)
        set_image_attrs(masks, truecolor=False)
        _write_tables(h5, contents)
        result = contents.result(path)
        for key, value in _bank_attrs(listing, options, result.checksum).items():
            h5.attrs[key] = value
    return result


@dataclass
class FaceBank:
    """A face bank read into memory."""

    images: np.ndarray
    masks: np.ndarray
    labels: np.ndarray
    subjects: list[str]
    sources: list[str]
    methods: list[str]
    classes: tuple[str, ...]
    attrs: dict[str, Any]
    skipped: list[Skipped]

    def __len__(self) -> int:
        return len(self.labels)


def bank_checksum(bank: FaceBank) -> str:
    """Recompute the content checksum that `write_bank` stores."""
    digest = _new_digest(bank.classes)
    for i in range(len(bank)):
        _update_digest(
            digest, bank.images[i], bank.masks[i], int(bank.labels[i]), bank.subjects[i], bank.sources[i]
        )
    return digest.hexdigest()


def read_bank(path: str | Path, verify: bool = True) -> FaceBank:
    """Read a face bank; with `verify`, check its content checksum."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as h5:
            if h5.attrs.get("kind") != "feratt-face-bank":
                raise FerattError(f"{path} is not a feratt face bank")
            bank = FaceBank(
                images=h5["images"][()],
                masks=h5["masks"][()],
                labels=h5["labels"][()],
                subjects=read_strings(h5["subjects"]),
                sources=read_strings(h5["sources"]),
                methods=read_strings(h5["methods"]),
                classes=tuple(json.loads(h5.attrs["class_names"])),
                attrs=dict(h5.attrs),
                skipped=[
                    Skipped(p, r)
                    for p, r in zip(
                        read_strings(h5["skipped/path"]), read_strings(h5["skipped/reason"]), strict=True
                    )
                ],
            )
    except OSError as exc:
        raise FerattError(f"cannot read face bank {path}: {exc}") from None
    if verify and bank_checksum(bank) != bank.attrs["content_sha256"]:
        raise FerattError(f"face bank {path} is corrupt: its content does not match its checksum")
    return bank
