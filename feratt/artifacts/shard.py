"""Shard files: one HDF5 file of rendered samples of one subject, written atomically and fast.

Every shard holds the datasets of SHARD_SCHEMA, one row per sample, and the attributes of ShardAttrs;
shards written since the renderer carried landmarks also hold those of OPTIONAL_SCHEMA.
`schema_problems` is the one schema check that verification, training and evaluation share.
"""

from __future__ import annotations

import concurrent.futures
import functools
import hashlib
import json
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from feratt.atomic import atomic_path
from feratt.errors import FerattError
from feratt.hdf5 import set_image_attrs, write_strings

SHARD_SCHEMA_VERSION = 1
SHARD_KIND = "feratt-shard"
COMPRESSIONS: tuple[str, ...] = ("gzip", "lzf", "none")
#: Per-sample image datasets: one chunk per sample, so a reader decompresses only what it asks for.
IMAGE_FIELDS: tuple[str, ...] = ("images", "masks", "faces")


#: Datasets every shard holds, with their dtype and the shape after the sample axis (None: any).
SHARD_SCHEMA: dict[str, tuple[str, tuple[int | None, ...]]] = {
    "images": ("uint8", (None, None, 3)),
    "masks": ("uint8", (None, None)),
    "faces": ("uint8", (None, None, 3)),
    "labels": ("int16", ()),
    "face_index": ("int32", ()),
    "sample_index": ("int64", ()),
    "matrices": ("float64", (3, 3)),
    "crops": ("float32", (3,)),
    "luminance_ratio": ("float32", ()),
    "params": ("float32", (None,)),
    "background_ids": ("object", ()),
}

#: Datasets that newer shards add, checked like SHARD_SCHEMA's when present; older shards lack them.
OPTIONAL_SCHEMA: dict[str, tuple[str, tuple[int | None, ...]]] = {
    "landmarks": ("float32", (68, 2)),
}


@dataclass
class ShardData:
    """The arrays of one shard, one row per sample."""

    images: np.ndarray
    masks: np.ndarray
    faces: np.ndarray
    labels: np.ndarray
    face_index: np.ndarray
    sample_index: np.ndarray
    background_ids: list[str]
    matrices: np.ndarray
    crops: np.ndarray
    luminance_ratio: np.ndarray
    params: np.ndarray
    attrs: dict[str, object] = field(default_factory=dict)
    deflated: ChunkDeflater | None = None
    #: (N, 68, 2) float32: each sample's face landmarks in sample pixels, NaN where the bank face has none;
    #: None writes no landmarks dataset, as shards before it.
    landmarks: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)


@functools.lru_cache(maxsize=1)
def _deflate_pool() -> concurrent.futures.ThreadPoolExecutor:
    # zlib releases the GIL, so chunks deflate in parallel threads while the file stays plain gzip.
    return concurrent.futures.ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1))


class ChunkDeflater:
    """Deflates image rows in background threads while the next samples are still being rendered."""

    def __init__(self, level: int) -> None:
        self.level = level
        self.pending: dict[str, list[concurrent.futures.Future[bytes]]] = {name: [] for name in IMAGE_FIELDS}

    def submit(self, name: str, row: np.ndarray) -> None:
        """Queue one sample's row of dataset `name`; the row must not change afterwards."""
        self.pending[name].append(_deflate_pool().submit(zlib.compress, row, self.level))

    def blobs(self, name: str) -> list[bytes]:
        """The deflated rows of `name`, in submission order."""
        return [future.result() for future in self.pending[name]]


def _write_image_dataset(
    h5: h5py.File,
    name: str,
    data: np.ndarray,
    compression: str,
    level: int,
    deflated: ChunkDeflater | None,
) -> None:
    chunk = (1, *data.shape[1:])
    if compression == "gzip":
        dataset = h5.create_dataset(
            name,
            data.shape,
            data.dtype,
            chunks=chunk,
            compression="gzip",
            compression_opts=level,
            shuffle=True,
            track_times=False,
        )
        # Byte shuffle is the identity for one-byte samples, so a zlib stream is exactly the filtered chunk.
        if deflated is not None and deflated.level == level and len(deflated.pending[name]) == len(data):
            blobs = deflated.blobs(name)
        else:
            blobs = _deflate_pool().map(lambda row: zlib.compress(row, level), data)
        for index, blob in enumerate(blobs):
            dataset.id.write_direct_chunk((index,) + (0,) * (data.ndim - 1), blob)
    elif compression == "lzf":
        dataset = h5.create_dataset(
            name, data=data, chunks=chunk, compression="lzf", shuffle=True, track_times=False
        )
    else:
        dataset = h5.create_dataset(name, data.shape, data.dtype, chunks=chunk, track_times=False)
        for index, row in enumerate(data):
            dataset.id.write_direct_chunk((index,) + (0,) * (data.ndim - 1), row.tobytes())
    set_image_attrs(dataset, truecolor=data.ndim == 4)


def write_shard(path: str | Path, data: ShardData, compression: str = "gzip", level: int = 4) -> str:
    """Write a shard atomically and return the sha256 of the file's bytes."""
    if compression not in COMPRESSIONS:
        raise ValueError(f"unknown compression {compression!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    small = (
        {"compression": "gzip", "shuffle": True, "track_times": False}
        if compression == "gzip"
        else {"track_times": False}
    )
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w", libver="v110") as h5:
            for name in IMAGE_FIELDS:
                _write_image_dataset(h5, name, getattr(data, name), compression, level, data.deflated)
            h5.create_dataset("labels", data=data.labels.astype(np.int16), **small)
            h5.create_dataset("face_index", data=data.face_index.astype(np.int32), **small)
            h5.create_dataset("sample_index", data=data.sample_index.astype(np.int64), **small)
            h5.create_dataset("matrices", data=data.matrices.astype(np.float64), **small)
            h5.create_dataset("crops", data=data.crops.astype(np.float32), **small)
            h5.create_dataset("luminance_ratio", data=data.luminance_ratio.astype(np.float32), **small)
            h5.create_dataset("params", data=data.params.astype(np.float32), **small)
            if data.landmarks is not None:
                h5.create_dataset("landmarks", data=data.landmarks.astype(np.float32), **small)
            write_strings(h5, "background_ids", data.background_ids)
            h5.attrs["kind"] = SHARD_KIND
            h5.attrs["schema_version"] = SHARD_SCHEMA_VERSION
            for key, value in data.attrs.items():
                h5.attrs[key] = value
        digest = file_sha256(tmp)
    return digest


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def open_shard(path: str | os.PathLike[str]) -> h5py.File:
    """A shard, open for reading (close it, or use it as a context manager); never open one before a fork."""
    return h5py.File(path, "r")


def read_shard_attrs(path: str | Path) -> dict[str, object]:
    """A shard's file attributes, with the JSON-valued ones decoded."""
    with open_shard(path) as h5:
        attrs = dict(h5.attrs)
    for key in ("class_names", "render_config", "param_fields"):
        if key in attrs:
            attrs[key] = json.loads(attrs[key])
    return attrs


def layout_problems(
    h5: h5py.File, size: int | None = None, classes: int | None = None, samples: int | None = None
) -> list[str]:
    """What is wrong with an open shard: its kind and version, each dataset's dtype and shape (images
    `size` x `size` when given; OPTIONAL_SCHEMA's only when present), equal lengths (`samples` when
    given) and labels in [0, `classes`)."""
    if h5.attrs.get("kind") != SHARD_KIND:
        return ["not a feratt shard"]
    if h5.attrs.get("schema_version") != SHARD_SCHEMA_VERSION:
        return [f"schema version {h5.attrs.get('schema_version')}, expected {SHARD_SCHEMA_VERSION}"]
    problems = []
    count = samples
    optional = {name: spec for name, spec in OPTIONAL_SCHEMA.items() if name in h5}
    for name, (dtype, tail) in {**SHARD_SCHEMA, **optional}.items():
        if name not in h5 or not isinstance(h5[name], h5py.Dataset):
            problems.append(f"dataset {name} {'is not a dataset' if name in optional else 'missing'}")
            continue
        dataset = h5[name]
        count = dataset.shape[0] if count is None and dataset.shape else count
        kind = "object" if h5py.check_string_dtype(dataset.dtype) else str(dataset.dtype)
        want = tuple(size if name in IMAGE_FIELDS and i < 2 and v is None else v for i, v in enumerate(tail))
        shape_ok = len(dataset.shape) == 1 + len(want) and all(
            w is None or w == got for w, got in zip(want, dataset.shape[1:], strict=True)
        )
        if kind != dtype or not shape_ok or dataset.shape[0] != count:
            problems.append(f"dataset {name} is {kind} {dataset.shape}")
    if not problems and classes is not None:
        labels = h5["labels"][()]
        if len(labels) and (labels.min() < 0 or labels.max() >= classes):
            problems.append(f"labels outside 0..{classes - 1}")
    return problems


def schema_problems(
    path: str | os.PathLike[str], size: int | None = None, classes: int | None = None
) -> list[str]:
    """What is wrong with a shard's layout (see layout_problems); empty when it follows the schema."""
    try:
        with open_shard(path) as h5:
            return layout_problems(h5, size, classes)
    except OSError as exc:
        return [f"cannot be opened: {exc}"]


def shard_error(path: str | os.PathLike[str], exc: Exception) -> FerattError:
    """One line for a shard that cannot be read."""
    return FerattError(
        f"{path} is not a readable feratt shard ({type(exc).__name__}: {exc}); "
        "feratt inspect --verify lists every problem"
    )
