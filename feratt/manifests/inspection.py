"""Look into a render: counts, shapes, compression and sizes; verify checksums and schema; draw samples."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import cv2
import h5py
import numpy as np

from feratt.errors import FerattError
from feratt.jsonfile import read_json
from feratt.manifests import catalog
from feratt.manifests.shards import IMAGE_FIELDS, SHARD_KIND, SHARD_SCHEMA_VERSION, file_sha256

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


def shard_paths(target: Path) -> list[Path]:
    """The shard files of a render folder, or the one shard given."""
    if target.is_file():
        return [target]
    if not target.is_dir():
        raise FerattError(f"not found: {target}")
    paths = sorted((target / "shards").glob("*/shard-*.h5"))
    if not paths:
        raise FerattError(f"{target} holds no shards (looked for shards/<subject>/shard-*.h5)")
    return paths


def schema_problems(path: Path) -> list[str]:
    """What is wrong with a shard's layout; empty when it follows the schema."""
    try:
        with h5py.File(path, "r") as h5:
            if h5.attrs.get("kind") != SHARD_KIND:
                return ["not a feratt shard"]
            if h5.attrs.get("schema_version") != SHARD_SCHEMA_VERSION:
                return [f"schema version {h5.attrs.get('schema_version')}, expected {SHARD_SCHEMA_VERSION}"]
            problems = []
            count = None
            for name, (dtype, tail) in SHARD_SCHEMA.items():
                if name not in h5:
                    problems.append(f"dataset {name} missing")
                    continue
                dataset = h5[name]
                count = dataset.shape[0] if count is None else count
                kind = "object" if h5py.check_string_dtype(dataset.dtype) else str(dataset.dtype)
                shape_ok = len(dataset.shape) == 1 + len(tail) and all(
                    want is None or want == got for want, got in zip(tail, dataset.shape[1:], strict=True)
                )
                if kind != dtype or not shape_ok or dataset.shape[0] != count:
                    problems.append(f"dataset {name} is {kind} {dataset.shape}")
            return problems
    except OSError as exc:
        return [f"cannot be opened: {exc}"]


def verify(target: Path) -> list[str]:
    """Recheck every shard's sha256 and schema; return one line per problem, naming the shard."""
    problems: list[str] = []
    run_file = target / catalog.RUN_FILE
    if target.is_dir() and run_file.is_file():
        run = read_json(run_file)
        listed_by_subject: dict[str, dict[str, str] | None] = {}
        for task in catalog.plan_tasks(run):
            shard = target / task.relpath
            if task.subject not in listed_by_subject:
                manifest_path = target / "manifests" / f"{task.subject}.json"
                listed_by_subject[task.subject] = (
                    {s["path"]: s["sha256"] for s in read_json(manifest_path)["shards"]}
                    if manifest_path.is_file()
                    else None
                )
            listed = listed_by_subject[task.subject]
            if not shard.is_file():
                problems.append(f"{task.relpath}: missing")
                continue
            if listed is not None:
                expected = listed.get(task.relpath)
                if expected is None:
                    problems.append(f"{task.relpath}: not in manifests/{task.subject}.json")
                elif file_sha256(shard) != expected:
                    problems.append(f"{task.relpath}: corrupted (sha256 differs from its manifest)")
                    continue
            else:
                problems.append(f"manifests/{task.subject}.json: missing")
            problems.extend(f"{task.relpath}: {p}" for p in schema_problems(shard))
        if not (target / catalog.INDEX_FILE).is_file():
            problems.append(f"{catalog.INDEX_FILE}: missing")
        return problems
    for shard in shard_paths(target):
        problems.extend(f"{shard}: {p}" for p in schema_problems(shard))
    return problems


def describe(target: Path) -> list[str]:
    """Counts per class and subject, dataset shapes, compression and sizes."""
    paths = shard_paths(target)
    per_class: Counter[str] = Counter()
    per_subject: Counter[str] = Counter()
    total_bytes = 0
    for path in paths:
        with h5py.File(path, "r") as h5:
            classes = json.loads(h5.attrs["class_names"])
            labels = h5["labels"][()]
            per_subject[str(h5.attrs["subject"])] += len(labels)
            for label, count in zip(*np.unique(labels, return_counts=True), strict=True):
                per_class[classes[label]] += int(count)
        total_bytes += path.stat().st_size
    lines = [f"{len(paths)} shards, {sum(per_subject.values())} samples, {total_bytes / 2**20:.1f} MiB"]
    lines.append("samples per class: " + ", ".join(f"{c} {per_class[c]}" for c in classes))
    lines.append(
        f"samples per subject ({len(per_subject)}): "
        + ", ".join(f"{s} {n}" for s, n in sorted(per_subject.items()))
    )
    with h5py.File(paths[0], "r") as h5:
        for name in (*IMAGE_FIELDS, "labels", "matrices", "params"):
            dataset = h5[name]
            compression = dataset.compression or "none"
            if dataset.compression_opts is not None:
                compression += f" {dataset.compression_opts}"
            lines.append(
                f"  {name:<8} {dataset.shape!s:<20} {dataset.dtype}  chunks {dataset.chunks}"
                f"  {compression}{' +shuffle' if dataset.shuffle else ''}"
            )
    return lines


def sample_sheet(target: Path, count: int, seed: int = 0) -> np.ndarray:
    """An RGB sheet of `count` samples: composite, mask, attention target, and the label above."""
    paths = shard_paths(target)
    rng = np.random.default_rng(seed)
    rows: list[np.ndarray] = []
    per_shard = np.bincount(rng.integers(len(paths), size=count), minlength=len(paths))
    for path, take in zip(paths, per_shard, strict=True):
        if take == 0:
            continue
        with h5py.File(path, "r") as h5:
            classes = json.loads(h5.attrs["class_names"])
            picks = np.sort(rng.choice(len(h5["labels"]), size=min(take, len(h5["labels"])), replace=False))
            for i in picks:
                rows.append(
                    _sample_tile(
                        h5["images"][i],
                        h5["masks"][i],
                        h5["faces"][i],
                        f"{classes[h5['labels'][i]]} {h5.attrs['subject']}",
                    )
                )
    columns = 4
    blank = np.full_like(rows[0], 255)
    rows += [blank] * (-len(rows) % columns)
    return np.concatenate(
        [np.concatenate(rows[r : r + columns], axis=1) for r in range(0, len(rows), columns)], axis=0
    )


def _sample_tile(image: np.ndarray, mask: np.ndarray, face: np.ndarray, caption: str) -> np.ndarray:
    size = image.shape[0]
    strip = np.concatenate([image, np.repeat(mask[..., None], 3, axis=2), face], axis=1)
    tile = np.full((size + 16, strip.shape[1] + 4, 3), 255, np.uint8)
    tile[16:, 2:-2] = strip
    cv2.putText(tile, caption, (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
    return tile
