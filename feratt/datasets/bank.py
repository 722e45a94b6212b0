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
    listing: FaceListing, options: BankOptions, jobs: int = 1, progress: bool = False
) -> Iterator[FaceResult]:
    """Process every entry of `listing` in parallel, yielding results in listing order."""
    from joblib import Parallel, delayed
    from tqdm import tqdm

    tasks = (delayed(build_face)(entry, listing.classes, options) for entry in listing.entries)
    results = Parallel(n_jobs=jobs, return_as="generator", batch_size=4)(tasks)
    yield from tqdm(
        results, total=len(listing.entries), desc="faces", unit="face", disable=None if progress else True
    )


@dataclass
class BankSummary:
    """What went into a bank: counts per class, subject and mask method, and what was skipped."""

    classes: tuple[str, ...]
    per_class: dict[str, int]
    per_subject: dict[str, int]
    per_method: dict[str, int]
    conversions: dict[str, int]
    skipped: list[Skipped]
    checksum: str

    @property
    def total(self) -> int:
        return sum(self.per_class.values())


def _update_digest(
    digest: Any, image: np.ndarray, mask: np.ndarray, label: int, subject: str, source: str
) -> None:
    digest.update(image.tobytes())
    digest.update(mask.tobytes())
    digest.update(np.int16(label).tobytes())
    digest.update(subject.encode() + b"\0")
    digest.update(source.encode() + b"\0")


def write_bank(
    path: str | Path,
    listing: FaceListing,
    results: Iterable[FaceResult],
    options: BankOptions,
) -> BankSummary:
    """Write processed faces to an HDF5 bank atomically and return its summary."""
    size = options.size
    digest = hashlib.sha256(json.dumps(list(listing.classes)).encode())
    skipped = list(listing.skipped)
    per_class = dict.fromkeys(listing.classes, 0)
    per_subject: dict[str, int] = {}
    per_method: dict[str, int] = {}
    conversions: dict[str, int] = {}
    meta: dict[str, list[Any]] = {
        k: [] for k in ("labels", "subjects", "sources", "methods", "grey", "conversions")
    }
    with atomic_path(path) as tmp, h5py.File(tmp, "w", libver="v110") as h5:
        chunked = {
            "chunks": True,
            "compression": "gzip",
            "compression_opts": 4,
            "shuffle": True,
            "track_times": False,
        }
        images = h5.create_dataset(
            "images",
            (0, size, size, 3),
            np.uint8,
            maxshape=(None, size, size, 3),
            **{**chunked, "chunks": (1, size, size, 3)},
        )
        masks = h5.create_dataset(
            "masks",
            (0, size, size),
            np.uint8,
            maxshape=(None, size, size),
            **{**chunked, "chunks": (1, size, size)},
        )
        for result in results:
            skipped.extend(result.skipped)
            face = result.face
            if face is None:
                continue
            index = images.shape[0]
            images.resize(index + 1, axis=0)
            masks.resize(index + 1, axis=0)
            images[index] = face.image
            masks[index] = face.mask
            _update_digest(digest, face.image, face.mask, face.label, face.subject, face.source)
            meta["labels"].append(face.label)
            meta["subjects"].append(face.subject)
            meta["sources"].append(face.source)
            meta["methods"].append(face.method)
            meta["grey"].append(face.grey)
            meta["conversions"].append(face.conversion)
            per_class[listing.classes[face.label]] += 1
            per_subject[face.subject] = per_subject.get(face.subject, 0) + 1
            per_method[face.method] = per_method.get(face.method, 0) + 1
            if face.conversion:
                conversions[face.conversion] = conversions.get(face.conversion, 0) + 1
        if images.shape[0] == 0:
            raise FerattError(f"none of the {len(listing.entries)} faces in {listing.root} could be read")
        set_image_attrs(images, truecolor=True)
        set_image_attrs(masks, truecolor=False)
        h5.create_dataset("labels", data=np.asarray(meta["labels"], np.int16), track_times=False)
        h5.create_dataset("grey", data=np.asarray(meta["grey"], bool), track_times=False)
        for name in ("subjects", "sources", "methods", "conversions"):
            write_strings(h5, name, meta[name])
        skipped_group = h5.create_group("skipped", track_order=True)
        write_strings(skipped_group, "path", [s.path for s in skipped])
        write_strings(skipped_group, "reason", [s.reason for s in skipped])
        checksum = digest.hexdigest()
        attrs = {
            "schema_version": BANK_SCHEMA_VERSION,
            "feratt_version": __version__,
            "kind": "feratt-face-bank",
            "format": listing.format,
            "source": listing.root,
            "class_names": json.dumps(list(listing.classes)),
            "protocol": json.dumps(listing.protocol, sort_keys=True),
            "notes": json.dumps(listing.notes),
            "seed": options.seed,
            "face_size": size,
            "margin": options.margin,
            "forehead": options.forehead,
            "masks_root": options.masks_root or "",
            "content_sha256": checksum,
        }
        for key, value in attrs.items():
            h5.attrs[key] = value
    return BankSummary(
        listing.classes,
        per_class,
        dict(sorted(per_subject.items())),
        dict(sorted(per_method.items())),
        conversions,
        skipped,
        checksum,
    )


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
    digest = hashlib.sha256(json.dumps(list(bank.classes)).encode())
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


def ensure_demo_bank(path: Path, seed: int = 0, jobs: int = -1) -> Path:
    """Build the default demo face bank at `path` unless a valid one is already there."""
    from feratt.datasets.demo import list_demo
    from feratt.datasets.records import ReaderOptions

    if path.is_file():
        try:
            read_bank(path)
            return path
        except FerattError:
            pass
    path.parent.mkdir(parents=True, exist_ok=True)
    listing = list_demo(ReaderOptions(seed=seed))
    options = BankOptions(seed=seed)
    write_bank(path, listing, build_faces(listing, options, jobs=jobs), options)
    return path
