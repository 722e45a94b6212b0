"""The face bank file: one HDF5 file of square face crops, their masks, labels, subjects and sources.

Layout (schema version 1): `images` (N, S, S, 3) uint8 and `masks` (N, S, S) uint8 (0 or 255), one gzip
chunk per face; `labels` (N,) int16; `grey` (N,) bool; `landmarks` (N, 68, 2) float32, each face's iBUG
points in crop pixels, NaN where it has none (banks before feratt 0.x lack it: all NaN); the string
tables `subjects`, `sources`, `methods` and `conversions`; the group `skipped` with the string tables
`path` and `reason`; and the attributes of `BankHeader`, plus `content_sha256`, a sha256 of the classes
and of every face's pixels, label, subject and source, in order, then of the landmarks if present.

`FaceBank.open` checks the schema, reads the per-face metadata at once and the pixels on demand, and
streams the checksum; `BankWriter` writes a bank atomically, a face at a time, and a write error (a full
disk) stops it at once, leaving any bank already at the path as it was.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from feratt import __version__
from feratt.atomic import atomic_path
from feratt.config.limits import MAX_CLASSES, MAX_IMAGE_SIDE
from feratt.errors import FerattError
from feratt.hdf5 import read_strings, set_image_attrs, write_strings

BANK_KIND = "feratt-face-bank"
BANK_SCHEMA_VERSION = 1
_BLOCK_BYTES = 4 << 20  # pixels read at a time by the checksum and by bulk reads
_REQUIRED_ATTRS = ("schema_version", "class_names", "content_sha256", "face_size")
_STRING_TABLES = ("subjects", "sources", "methods")
LANDMARK_SHAPE = (68, 2)


def safe_text(text: str) -> str:
    """`text` as valid UTF-8: the bytes of a file name that is not UTF-8 become backslash escapes."""
    try:
        raw = os.fsencode(text)
    except UnicodeEncodeError:  # a lone surrogate that no file name decoded to
        raw = text.encode("utf-8", "backslashreplace")
    return raw.decode("utf-8", "backslashreplace")


@dataclass(frozen=True)
class Skipped:
    """An input file that was not used, and why."""

    path: str
    reason: str

    def safe(self) -> Skipped:
        """This record with path and reason as valid UTF-8, fit for a bank's string tables."""
        return Skipped(safe_text(self.path), safe_text(self.reason))


@dataclass(frozen=True)
class BankFace:
    """One face as the bank stores it: square RGB crop, its 0/255 mask, and where it came from."""

    image: np.ndarray
    mask: np.ndarray
    label: int
    subject: str
    source: str
    method: str
    grey: bool
    conversion: str
    landmarks: np.ndarray | None = None  # (68, 2) float32 in crop pixels, when the face was cut by them


def no_landmarks(count: int) -> np.ndarray:
    """(count, 68, 2) float32 NaN: the landmarks of faces that have none."""
    return np.full((count, *LANDMARK_SHAPE), np.nan, np.float32)


@dataclass(frozen=True)
class BankHeader:
    """What a bank records besides its faces: where they came from and how they were cut out."""

    format: str
    source: str
    classes: tuple[str, ...]
    face_size: int
    margin: float = 0.2
    forehead: float = 0.0
    masks_root: str = ""
    seed: int = 0
    protocol: str = "{}"  # the reader's protocol choices, as JSON text
    mask_method: str = "auto"  # --mask-method: auto, landmarks, grabcut or ellipse
    notes: tuple[str, ...] = ()
    feratt_version: str = __version__


def _new_digest(classes: Sequence[str]) -> Any:
    return hashlib.sha256(json.dumps(list(classes)).encode())


def _update_digest(
    digest: Any, image: np.ndarray, mask: np.ndarray, label: int, subject: str, source: str
) -> None:
    digest.update(image.tobytes())
    digest.update(mask.tobytes())
    digest.update(np.int16(label).tobytes())
    digest.update(subject.encode() + b"\0")
    digest.update(source.encode() + b"\0")


# ----------------------------------------------------------------------------------------------- writing


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


@dataclass
class _Tables:
    """The per-face tables of a bank being written, and its running checksum."""

    digest: Any
    labels: list[int] = field(default_factory=list)
    grey: list[bool] = field(default_factory=list)
    subjects: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)
    conversions: list[str] = field(default_factory=list)
    landmarks: list[np.ndarray | None] = field(default_factory=list)

    def landmark_array(self) -> np.ndarray:
        """Every face's landmarks as one (N, 68, 2) float32 array, NaN where a face has none."""
        points = no_landmarks(len(self.landmarks))
        for row, face_points in enumerate(self.landmarks):
            if face_points is not None:
                points[row] = face_points
        return points

    def add(self, face: BankFace) -> None:
        _update_digest(self.digest, face.image, face.mask, face.label, face.subject, face.source)
        self.labels.append(face.label)
        self.grey.append(face.grey)
        self.subjects.append(face.subject)
        self.sources.append(face.source)
        self.methods.append(face.method)
        self.conversions.append(face.conversion)
        self.landmarks.append(face.landmarks)


class BankWriter:
    """A face bank being written to a temporary file beside `path`: `add` faces, then `finish`."""

    def __init__(self, h5: h5py.File, sink: _StopAtFirstError, header: BankHeader) -> None:
        self._h5, self._sink, self._header = h5, sink, header
        self._tables = _Tables(_new_digest(header.classes))
        chunked = {"compression": "gzip", "compression_opts": 4, "shuffle": True, "track_times": False}
        size = header.face_size
        self._images = h5.create_dataset(
            "images",
            (0, size, size, 3),
            np.uint8,
            maxshape=(None, size, size, 3),
            chunks=(1, size, size, 3),
            **chunked,
        )
        self._masks = h5.create_dataset(
            "masks", (0, size, size), np.uint8, maxshape=(None, size, size), chunks=(1, size, size), **chunked
        )

    def __len__(self) -> int:
        return len(self._tables.labels)

    def add(self, face: BankFace) -> None:
        """Append one face; an OSError at once if its write failed."""
        index = self._images.shape[0]
        self._images.resize(index + 1, axis=0)
        self._masks.resize(index + 1, axis=0)
        self._images[index] = face.image
        self._masks[index] = face.mask
        self._sink.check()
        self._tables.add(face)

    def finish(self, skipped: Sequence[Skipped], notes: Sequence[str]) -> str:
        """Write the tables, the skipped files and the attributes; the bank's content checksum."""
        h5, tables = self._h5, self._tables
        set_image_attrs(self._images, truecolor=True)
        set_image_attrs(self._masks, truecolor=False)
        h5.create_dataset("labels", data=np.asarray(tables.labels, np.int16), track_times=False)
        h5.create_dataset("grey", data=np.asarray(tables.grey, bool), track_times=False)
        landmarks = tables.landmark_array()
        h5.create_dataset("landmarks", data=landmarks, compression="gzip", track_times=False)
        for name in ("subjects", "sources", "methods", "conversions"):
            write_strings(h5, name, getattr(tables, name))
        skipped_group = h5.create_group("skipped", track_order=True)
        write_strings(skipped_group, "path", [s.path for s in skipped])
        write_strings(skipped_group, "reason", [s.reason for s in skipped])
        tables.digest.update(landmarks.tobytes())
        checksum = tables.digest.hexdigest()
        header = self._header
        attrs = {
            "schema_version": BANK_SCHEMA_VERSION,
            "feratt_version": header.feratt_version,
            "kind": BANK_KIND,
            "format": header.format,
            "source": header.source,
            "class_names": json.dumps(list(header.classes)),
            "protocol": header.protocol,
            "notes": json.dumps(list(notes)),
            "seed": header.seed,
            "face_size": header.face_size,
            "margin": header.margin,
            "forehead": header.forehead,
            "masks_root": header.masks_root,
            "mask_method": header.mask_method,
            "content_sha256": checksum,
        }
        for key, value in attrs.items():
            h5.attrs[key] = value
        return checksum


def _write_error(path: Path, exc: OSError, existed: bool) -> FerattError:
    """One line for a failed bank write: the bank, the reason, and what was kept."""
    reason = (exc.strerror or str(exc)).splitlines()[0]
    kept = "the face bank already there is unchanged" if existed else "no face bank was written"
    return FerattError(f"{path}: {reason}; {kept}")


@contextmanager
def write_bank(path: str | os.PathLike[str], header: BankHeader) -> Iterator[BankWriter]:
    """A BankWriter whose bank replaces `path` when the block ends without an error.

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
                yield BankWriter(h5, sink, header)
            sink.close()
        except Exception as exc:
            sink.abandon()
            error = sink.error or exc
            if not isinstance(error, OSError):
                raise
            raise _write_error(path, error, existed) from None


# ----------------------------------------------------------------------------------------------- reading


def _invalid(path: Path, what: str) -> FerattError:
    return FerattError(f"{path} is not a valid feratt face bank: {what}")


@contextmanager
def _open_file(path: Path) -> Iterator[h5py.File]:
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


def _block_faces(size: int) -> int:
    """How many faces (image and mask) of `size` px make one block of reading."""
    return max(1, _BLOCK_BYTES // (size * size * 4))


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
        with _open_file(self.path) as h5:
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


@dataclass(frozen=True)
class FaceBank:
    """A face bank: its header and per-face metadata, read on open; its pixels, read on demand."""

    path: Path
    header: BankHeader
    checksum: str  # content_sha256, as the file records it
    labels: np.ndarray
    subjects: list[str]
    sources: list[str]
    methods: list[str]
    skipped: list[Skipped]
    landmarks: np.ndarray  # (N, 68, 2) float32 in crop pixels, NaN rows for faces without points
    stores_landmarks: bool = True  # False for a bank written before the landmarks dataset

    @property
    def aligned(self) -> bool:
        """Whether most faces were cut out by their landmarks (eyes levelled), not around a mask."""
        with_points = int(np.count_nonzero(~np.isnan(self.landmarks[:, 0, 0])))
        return 2 * with_points > len(self)

    @classmethod
    def open(cls, path: str | os.PathLike[str], verify: bool = True) -> FaceBank:
        """Open a face bank: check its schema, read its metadata and, with `verify`, stream its checksum."""
        path = Path(path)
        with _open_file(path) as h5:
            if h5.attrs.get("kind") != BANK_KIND:
                raise FerattError(f"{path} is not a feratt face bank")
            bank = _read_metadata(h5, path)
        if verify:
            bank.verify()
        return bank

    @staticmethod
    def framing(path: str | os.PathLike[str]) -> tuple[int, float, float, bool] | None:
        """(face size, margin, forehead, aligned) of the bank at `path`; None when it cannot be read."""
        try:
            bank = FaceBank.open(path, verify=False)
        except FerattError:
            return None
        return bank.size, bank.header.margin, bank.header.forehead, bank.aligned

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def classes(self) -> tuple[str, ...]:
        """The class names, in label order."""
        return self.header.classes

    @property
    def size(self) -> int:
        """The side of the square face crops, in pixels."""
        return self.header.face_size

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
        with _open_file(self.path) as h5:
            for start in range(0, len(order), step):
                block = order[start : start + step]
                images, masks = _read_rows(h5["images"], block), _read_rows(h5["masks"], block)
                for row, index in enumerate(block.tolist()):
                    # Copies: a view the caller keeps would hold the whole block while the next is read.
                    yield index, images[row].copy(), masks[row].copy()
                del images, masks

    def content_checksum(self) -> str:
        """Recompute the content checksum the writer stored, streaming the pixels a block at a time."""
        digest = _new_digest(self.classes)
        for i, image, mask in self.iter_faces():
            _update_digest(digest, image, mask, int(self.labels[i]), self.subjects[i], self.sources[i])
        if self.stores_landmarks:
            digest.update(self.landmarks.tobytes())
        return digest.hexdigest()

    def verify(self) -> None:
        """A FerattError unless the faces match the recorded checksum."""
        if self.content_checksum() != self.checksum:
            raise FerattError(f"face bank {self.path} is corrupt: its content does not match its checksum")


def read_faces(
    path: str | os.PathLike[str], indices: Sequence[int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The images, masks and landmarks (NaN where none) of the faces at `indices` (sorted, distinct), and
    every face's label.

    For a worker process: the file is opened here and closed again, never held across a fork.
    """
    rows = list(indices)
    with _open_file(Path(path)) as h5:
        points = h5["landmarks"][rows] if "landmarks" in h5 else no_landmarks(len(rows))
        return h5["images"][rows], h5["masks"][rows], points, h5["labels"][()]


def _check(holds: bool, path: Path, what: str) -> None:
    if not holds:
        raise _invalid(path, what)


def _classes_and_size(h5: h5py.File, path: Path) -> tuple[tuple[str, ...], int]:
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
        named and 0 < len(classes) == len(set(classes)) <= MAX_CLASSES,
        path,
        f"its class_names attribute is not a JSON list of 1 to {MAX_CLASSES} distinct class names",
    )
    checksum = h5.attrs["content_sha256"]
    _check(
        isinstance(checksum, str) and re.fullmatch("[0-9a-f]{64}", checksum) is not None,
        path,
        "its content_sha256 attribute is not a sha256 hex digest",
    )
    size = h5.attrs["face_size"]
    _check(
        isinstance(size, int | np.integer) and 0 < size <= MAX_IMAGE_SIDE,
        path,
        f"its face_size is {size}, not 1 to {MAX_IMAGE_SIDE} pixels",
    )
    return tuple(classes), int(size)


def _attr(h5: h5py.File, name: str, kind: type, default: Any) -> Any:
    """An optional attribute as `kind`, or `default` when it is missing or of another type."""
    value = h5.attrs.get(name, default)
    try:
        return kind(value)
    except (TypeError, ValueError):
        return default


def _header(h5: h5py.File, path: Path) -> BankHeader:
    classes, size = _classes_and_size(h5, path)
    try:
        notes = tuple(str(note) for note in json.loads(h5.attrs.get("notes", "[]")))
    except (TypeError, ValueError):
        notes = ()
    return BankHeader(
        format=_attr(h5, "format", str, ""),
        source=_attr(h5, "source", str, ""),
        classes=classes,
        face_size=size,
        margin=_attr(h5, "margin", float, 0.2),
        forehead=_attr(h5, "forehead", float, 0.0),
        masks_root=_attr(h5, "masks_root", str, ""),
        seed=_attr(h5, "seed", int, 0),
        protocol=_attr(h5, "protocol", str, "{}"),
        mask_method=_attr(h5, "mask_method", str, "auto"),
        notes=notes,
        feratt_version=_attr(h5, "feratt_version", str, ""),
    )


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


def _pixel_count(h5: h5py.File, path: Path, size: int) -> int:
    """The number of faces, once the images and masks are checked against the face size."""
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
    return count


def _read_metadata(h5: h5py.File, path: Path) -> FaceBank:
    """Check a bank's schema and read everything but its pixels."""
    header = _header(h5, path)
    count = _pixel_count(h5, path, header.face_size)
    labels_set = _dataset(h5, path, "labels", count)
    _check(
        labels_set.ndim == 1 and np.issubdtype(labels_set.dtype, np.integer),
        path,
        "its labels are not integers",
    )
    labels = labels_set[()]
    bad = np.flatnonzero((labels < 0) | (labels >= len(header.classes)))
    if bad.size:
        raise _invalid(
            path, f"face {bad[0]} has label {labels[bad[0]]}, outside the {len(header.classes)} classes"
        )
    for name in ("grey", "conversions"):
        if name in h5:
            _dataset(h5, path, name, count)
    tables = {name: _strings(h5, path, name, count) for name in _STRING_TABLES}
    landmarks = _landmarks(h5, path, count, header.face_size)
    skipped_paths = _strings(h5, path, "skipped/path", None)
    skipped_reasons = _strings(h5, path, "skipped/reason", len(skipped_paths), "skipped/path")
    return FaceBank(
        path=path,
        header=header,
        checksum=str(h5.attrs["content_sha256"]),
        labels=labels,
        skipped=[Skipped(p, r) for p, r in zip(skipped_paths, skipped_reasons, strict=True)],
        landmarks=no_landmarks(count) if landmarks is None else landmarks,
        stores_landmarks=landmarks is not None,
        **tables,
    )


def _landmarks(h5: h5py.File, path: Path, count: int, size: int) -> np.ndarray | None:
    """The bank's landmarks, checked (a face's points all given or all NaN, near its crop); None if absent."""
    if "landmarks" not in h5:
        return None
    dataset = _dataset(h5, path, "landmarks", count)
    _check(
        dataset.shape[1:] == LANDMARK_SHAPE and dataset.dtype == np.float32,
        path,
        f"its landmarks are {' x '.join(map(str, dataset.shape))} {dataset.dtype}, not N x 68 x 2 float32",
    )
    points = dataset[()]
    missing = np.isnan(points).reshape(count, -1)
    _check(bool(np.all(missing.all(axis=1) | ~missing.any(axis=1))), path, "a face has only some landmarks")
    given = points[~missing.any(axis=1)]
    _check(
        bool(np.all(np.abs(given) <= 4 * size)), path, f"its landmarks lie far outside the {size} px crops"
    )
    return points
