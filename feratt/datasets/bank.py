"""The face bank: every face cropped around its mask, resized, and stored with its labels in HDF5."""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
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
from feratt.datasets.records import FaceEntry, FaceListing, FaceRecord, Skipped, safe_text
from feratt.errors import BadInputFile, FerattError
from feratt.hdf5 import read_strings, set_image_attrs, write_strings
from feratt.progress import Progress, no_progress

BANK_SCHEMA_VERSION = 1
_MAX_WARNINGS = 50  # decoder warnings listed among a bank's notes; the rest are counted


@dataclass(frozen=True)
class BankOptions:
    """How faces are cut out for the bank."""

    size: int = 160
    margin: float = 0.2
    forehead: float = 0.0
    masks_root: str | None = None
    seed: int = 0
    min_side: int = 32


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
        subject=safe_text(record.subject),
        source=safe_text(record.source),
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
    return FaceResult(crop_face(record, options), notes, record.notes)


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
    try:
        for done, result in enumerate(results, 1):
            report(done, total)
            yield result
    finally:
        with warnings.catch_warnings():
            # joblib warns that the tasks of an abandoned build were cancelled: that was the point.
            warnings.simplefilter("ignore")
            results.close()


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
    notes: list[str] = field(default_factory=list)
    warned: int = 0
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
            listing,
            _new_digest(listing.classes),
            [skipped.safe() for skipped in listing.skipped],
            dict.fromkeys(listing.classes, 0),
            list(listing.notes),
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

    def warn(self, notes: list[str]) -> None:
        """Add a face's decoder warnings to the notes; past _MAX_WARNINGS, only count them."""
        kept = max(0, _MAX_WARNINGS - self.warned)
        self.notes.extend(map(safe_text, notes[:kept]))
        self.warned += len(notes)

    def result(self, path: str | Path) -> BankResult:
        notes = self.notes
        if self.warned > _MAX_WARNINGS:
            notes = [*notes, f"decoder warnings not listed: {self.warned - _MAX_WARNINGS}"]
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
            notes=notes,
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


def _bank_attrs(listing: FaceListing, options: BankOptions, result: BankResult) -> dict[str, Any]:
    return {
        "schema_version": BANK_SCHEMA_VERSION,
        "feratt_version": __version__,
        "kind": "feratt-face-bank",
        "format": listing.format,
        "source": safe_text(listing.root),
        "class_names": json.dumps(list(listing.classes)),
        "protocol": json.dumps(listing.protocol, sort_keys=True),
        "notes": json.dumps(result.notes),
        "seed": options.seed,
        "face_size": options.size,
        "margin": options.margin,
        "forehead": options.forehead,
        "masks_root": safe_text(options.masks_root or ""),
        "content_sha256": result.checksum,
    }


class _StopAtFirstError:
    """The bank's temporary file, as h5py writes it: after its first failed write, it writes nothing more.

    A failed write is kept in `error` and not raised: HDF5 writes while it closes objects, where h5py
    cannot pass an error on, and an HDF5 file left half-closed crashes the interpreter at exit. So
    HDF5 goes on as if every write succeeded, nothing more reaches the disk, the writer checks `error`
    after each face, and the abandoned file closes cleanly and is deleted.
    """

    def __init__(self, path: Path) -> None:
        self._file: Any = open(path, "w+b")  # noqa: SIM115 - closed by close() or abandon()
        self.error: OSError | None = None

    def _guarded(self, name: str, *args: Any, dropped: Any = None, writes: bool = False) -> Any:
        if self._file is None or (writes and self.error is not None):
            return dropped
        try:
            return getattr(self._file, name)(*args)
        except OSError as exc:
            self.error = self.error or exc
            return dropped

    def write(self, data: Any) -> int:
        return self._guarded("write", data, dropped=len(data), writes=True)

    def truncate(self, size: int | None = None) -> int | None:
        return self._guarded("truncate", size, dropped=size, writes=True)

    def flush(self) -> None:
        self._guarded("flush", writes=True)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._guarded("seek", offset, whence, dropped=offset)

    def tell(self) -> int:
        return self._guarded("tell", dropped=0)

    def read(self, size: int = -1) -> bytes:
        return self._guarded("read", size, dropped=b"")

    def readinto(self, buffer: Any) -> int | None:
        return self._guarded("readinto", buffer, dropped=0)

    def check(self) -> None:
        """Raise the first write error, if there was one."""
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        """Write what is buffered and close; the first write error, if there was one."""
        self.flush()
        self.check()
        self._file.close()
        self._file = None

    def abandon(self) -> None:
        """Close without writing anything more."""
        file, self._file = self._file, None
        if file is not None:
            with contextlib.suppress(OSError):
                file.close()  # a buffered write that fails here is dropped: the file is deleted next


def _write_error(path: Path, exc: OSError, existed: bool) -> FerattError:
    """One line for a failed bank write: the bank, the reason, and what was kept."""
    reason = (exc.strerror or str(exc)).splitlines()[0]
    kept = "the face bank already there is unchanged" if existed else "no face bank was written"
    return FerattError(f"{path}: {reason}; {kept}")


def _fill_bank(
    h5: h5py.File,
    sink: _StopAtFirstError,
    path: Path,
    listing: FaceListing,
    results: Iterable[FaceResult],
    options: BankOptions,
) -> BankResult:
    """Write every face, the tables and the attributes into the open bank file `h5`, written to `sink`."""
    contents = _BankContents.start(listing)
    images, masks = _face_datasets(h5, options.size)
    for result in results:
        contents.skipped.extend(skipped.safe() for skipped in result.skipped)
        contents.warn(result.notes)
        if result.face is not None:
            _append_face(images, masks, result.face)
            sink.check()
            contents.add(result.face)
    if images.shape[0] == 0:
        raise FerattError(f"none of the {len(listing.entries)} faces in {listing.root} could be read")
    set_image_attrs(images, truecolor=True)
    set_image_attrs(masks, truecolor=False)
    _write_tables(h5, contents)
    written = contents.result(path)
    for key, value in _bank_attrs(listing, options, written).items():
        h5.attrs[key] = value
    return written


def write_bank(
    path: str | Path,
    listing: FaceListing,
    results: Iterable[FaceResult],
    options: BankOptions,
) -> BankResult:
    """Write processed faces to an HDF5 bank atomically and return what went into it.

    A write error (a full disk, say) stops the writing at once: the temporary file is removed, a bank
    already at `path` is left as it was, and a FerattError names `path` and the reason.
    """
    path = Path(path)
    existed = path.exists()
    with atomic_path(path) as tmp:
        sink = _StopAtFirstError(tmp)
        try:
            # No chunk cache: each face is written once, and a write error shows at that face, not at close.
            with h5py.File(sink, "w", libver="v110", rdcc_nbytes=0) as h5:
                written = _fill_bank(h5, sink, path, listing, results, options)
            sink.close()
        except Exception as exc:
            sink.abandon()
            error = sink.error or exc
            if not isinstance(error, OSError):
                raise
            raise _write_error(path, error, existed) from None
        finally:
            close = getattr(results, "close", None)
            if close is not None:
                close()  # stop the workers of an abandoned build
    return written


_BLOCK_BYTES = 4 << 20  # pixels read at a time by the checksum and by bulk reads
_REQUIRED_ATTRS = ("schema_version", "class_names", "content_sha256", "face_size")
_STRING_TABLES = ("subjects", "sources", "methods")


def _invalid(path: Path, what: str) -> FerattError:
    return FerattError(f"{path} is not a valid feratt face bank: {what}")


@contextmanager
def _open_bank(path: Path) -> Iterator[h5py.File]:
    """The bank file, open for reading; an unreadable file or dataset becomes a FerattError."""
    # Opened for one read and closed again: an HDF5 handle must never cross a fork into a worker.
    try:
        with h5py.File(path, "r") as h5:
            yield h5
    except OSError as exc:
        raise FerattError(f"cannot read face bank {path}: {exc}") from None


def _read_rows(dataset: h5py.Dataset, indices: np.ndarray) -> np.ndarray:
    """Rows `indices` (any order, repeats allowed) of a dataset, read one contiguous run at a time."""
    wanted = np.unique(indices)
    rows = np.empty((len(wanted), *dataset.shape[1:]), dataset.dtype)
    starts = np.flatnonzero(np.diff(wanted, prepend=-2) != 1)
    for start, stop in zip(starts, [*starts[1:], len(wanted)], strict=True):
        first = int(wanted[start])  # read straight into `rows`: no second copy of the block
        dataset.read_direct(rows, np.s_[first : first + stop - start], np.s_[start:stop])
    return rows if np.array_equal(wanted, indices) else rows[np.searchsorted(wanted, indices)]


def _face_indices(key: Any, count: int) -> np.ndarray:
    """The face indices that an index, slice, boolean mask or list of indices selects, as an array."""
    if isinstance(key, slice):
        return np.arange(*key.indices(count))
    indices = np.asarray(key)
    if indices.dtype == bool:
        indices = np.flatnonzero(indices)
    indices = np.where(indices < 0, indices + count, indices).astype(np.int64)
    if indices.size and (indices.min() < 0 or indices.max() >= count):
        raise IndexError(f"face index out of range for a bank of {count} faces")
    return indices


class BankPixels:
    """A bank's images or masks: array-like, read from the file only for the faces indexed."""

    dtype = np.dtype(np.uint8)

    def __init__(self, path: Path, name: str, shape: tuple[int, ...]) -> None:
        self.path = path
        self.name = name
        self.shape = shape

    @property
    def ndim(self) -> int:
        """The number of dimensions, the face index first."""
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        rest: tuple[Any, ...] = ()
        if isinstance(key, tuple):
            key, rest = key[0], key[1:]
        indices = _face_indices(key, len(self))
        with _open_bank(self.path) as h5:
            rows = _read_rows(h5[self.name], indices.reshape(-1))
        rows = rows.reshape(*indices.shape, *self.shape[1:])
        return rows[(slice(None),) * indices.ndim + rest] if rest else rows

    def __iter__(self) -> Iterator[np.ndarray]:
        step = _block_faces(self.shape[1])
        for start in range(0, len(self), step):
            yield from self[start : start + step]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        whole = self[:]
        return whole if dtype is None else whole.astype(dtype)


def _block_faces(size: int) -> int:
    """How many faces (image and mask) of `size` px make one block of reading."""
    return max(1, _BLOCK_BYTES // (size * size * 4))


@dataclass
class FaceBank:
    """A face bank: its per-face metadata, read on open; its pixels, read from the file on demand."""

    path: Path
    size: int
    labels: np.ndarray
    subjects: list[str]
    sources: list[str]
    methods: list[str]
    classes: tuple[str, ...]
    attrs: dict[str, Any]
    skipped: list[Skipped]

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def images(self) -> BankPixels:
        """The N x S x S x 3 RGB faces."""
        return BankPixels(self.path, "images", (len(self), self.size, self.size, 3))

    @property
    def masks(self) -> BankPixels:
        """The N x S x S masks, 0 or 255."""
        return BankPixels(self.path, "masks", (len(self), self.size, self.size))

    def iter_faces(
        self, indices: Sequence[int] | None = None
    ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """(index, image, mask) of the faces at `indices` (default all), in order, a block at a time."""
        order = _face_indices(slice(None) if indices is None else indices, len(self)).reshape(-1)
        step = _block_faces(self.size)
        with _open_bank(self.path) as h5:
            for start in range(0, len(order), step):
                block = order[start : start + step]
                images, masks = _read_rows(h5["images"], block), _read_rows(h5["masks"], block)
                for row, index in enumerate(block.tolist()):
                    # Copies: a view the caller keeps would hold the whole block while the next is read.
                    yield index, images[row].copy(), masks[row].copy()
                del images, masks


def bank_checksum(bank: FaceBank) -> str:
    """Recompute the content checksum that `write_bank` stores, streaming the pixels a block at a time."""
    digest = _new_digest(bank.classes)
    for i, image, mask in bank.iter_faces():
        _update_digest(digest, image, mask, int(bank.labels[i]), bank.subjects[i], bank.sources[i])
    return digest.hexdigest()


def _check(holds: bool, path: Path, what: str) -> None:
    if not holds:
        raise _invalid(path, what)


def _bank_attrs_checked(h5: h5py.File, path: Path) -> tuple[tuple[str, ...], int]:
    """The class names and face size from a bank's attributes, each checked."""
    missing = [name for name in _REQUIRED_ATTRS if name not in h5.attrs]
    _check(not missing, path, f"it lacks the attribute{'s' * (len(missing) > 1)} {', '.join(missing)}")
    version = h5.attrs["schema_version"]
    _check(
        isinstance(version, int | np.integer) and 1 <= version <= BANK_SCHEMA_VERSION,
        path,
        f"its schema_version is {version}; this feratt reads 1 to {BANK_SCHEMA_VERSION}",
    )
    try:
        classes = json.loads(h5.attrs["class_names"])
    except (TypeError, ValueError):
        classes = None
    named = isinstance(classes, list) and all(isinstance(name, str) and name for name in classes)
    _check(
        named and 0 < len(classes) == len(set(classes)),
        path,
        "its class_names attribute is not a JSON list of distinct class names",
    )
    checksum = h5.attrs["content_sha256"]
    _check(
        isinstance(checksum, str) and re.fullmatch("[0-9a-f]{64}", checksum) is not None,
        path,
        "its content_sha256 attribute is not a sha256 hex digest",
    )
    size = h5.attrs["face_size"]
    _check(isinstance(size, int | np.integer) and size > 0, path, f"its face_size is {size}")
    return tuple(classes), int(size)


def _dataset(
    h5: h5py.File, path: Path, name: str, count: int | None, counted: str = "images"
) -> h5py.Dataset:
    """Dataset `name`, checked to exist and, with `count`, to hold as many rows as there are `counted`."""
    try:
        dataset = h5.get(name)
    except (KeyError, TypeError, ValueError):
        dataset = None
    _check(isinstance(dataset, h5py.Dataset), path, f"it has no {name} dataset")
    if count is not None:
        rows = dataset.shape[0] if dataset.shape else 0
        _check(rows == count, path, f"it has {count} {counted} but {rows} {name}")
    return dataset


def _strings(h5: h5py.File, path: Path, name: str, count: int | None, counted: str = "images") -> list[str]:
    dataset = _dataset(h5, path, name, count, counted)
    _check(
        dataset.ndim == 1 and h5py.check_string_dtype(dataset.dtype) is not None,
        path,
        f"its {name} dataset does not hold strings",
    )
    try:
        return read_strings(dataset)
    except UnicodeDecodeError:
        raise _invalid(path, f"its {name} dataset holds strings that are not UTF-8") from None


def _read_metadata(h5: h5py.File, path: Path) -> FaceBank:
    """Check a bank's schema and read everything but its pixels."""
    classes, size = _bank_attrs_checked(h5, path)
    images = _dataset(h5, path, "images", None)
    shape = f"{size} x {size} x 3"
    _check(
        images.ndim == 4 and images.shape[1:] == (size, size, 3) and images.dtype == np.uint8,
        path,
        f"its images are {' x '.join(map(str, images.shape))} {images.dtype}, not N x {shape} uint8",
    )
    count = images.shape[0]
    masks = _dataset(h5, path, "masks", count)
    _check(
        masks.shape[1:] == (size, size) and masks.dtype == np.uint8,
        path,
        f"its masks are {' x '.join(map(str, masks.shape))} {masks.dtype}, not N x {size} x {size} uint8",
    )
    labels_set = _dataset(h5, path, "labels", count)
    _check(
        labels_set.ndim == 1 and np.issubdtype(labels_set.dtype, np.integer),
        path,
        "its labels are not integers",
    )
    labels = labels_set[()]
    bad = np.flatnonzero((labels < 0) | (labels >= len(classes)))
    if bad.size:
        raise _invalid(path, f"face {bad[0]} has label {labels[bad[0]]}, outside the {len(classes)} classes")
    for name in ("grey", "conversions"):
        if name in h5:
            _dataset(h5, path, name, count)
    tables = {name: _strings(h5, path, name, count) for name in _STRING_TABLES}
    skipped_paths = _strings(h5, path, "skipped/path", None)
    skipped_reasons = _strings(h5, path, "skipped/reason", len(skipped_paths), "skipped/path")
    return FaceBank(
        path=path,
        size=size,
        labels=labels,
        classes=classes,
        attrs=dict(h5.attrs),
        skipped=[Skipped(p, r) for p, r in zip(skipped_paths, skipped_reasons, strict=True)],
        **tables,
    )


def read_bank(path: str | Path, verify: bool = True) -> FaceBank:
    """Open a face bank: check its schema, read its metadata and, with `verify`, stream its checksum."""
    path = Path(path)
    with _open_bank(path) as h5:
        if h5.attrs.get("kind") != "feratt-face-bank":
            raise FerattError(f"{path} is not a feratt face bank")
        bank = _read_metadata(h5, path)
    if verify and bank_checksum(bank) != bank.attrs["content_sha256"]:
        raise FerattError(f"face bank {path} is corrupt: its content does not match its checksum")
    return bank
