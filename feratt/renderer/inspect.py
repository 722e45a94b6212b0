"""The inspect stage: look into a render (counts, shapes, compression, sizes), verify it, draw samples."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

from feratt.artifacts.render import RenderSet
from feratt.artifacts.render_checks import verify_shard_file
from feratt.artifacts.shard import IMAGE_FIELDS, open_shard, shard_error
from feratt.atomic import atomic_write_bytes
from feratt.datasets.preview import encode_png
from feratt.errors import FerattError
from feratt.progress import Log, Progress, no_log

__all__ = ["inspect_render", "save_sample_sheet", "verify_render"]


def shard_paths(target: Path) -> list[Path]:
    """The shard files of a render folder, or the one shard given."""
    if target.is_file():
        return [target]
    if not target.is_dir():
        raise FerattError(f"not found: {target}")
    return RenderSet(target).shard_files()


def inspect_render(render: str | os.PathLike[str]) -> list[str]:
    """Lines describing a render folder or one shard: counts per class and subject, datasets, sizes."""
    return describe(Path(render))


def verify_render(
    render: str | os.PathLike[str], *, progress: Progress | None = None, log: Log | None = None
) -> list[str]:
    """Every problem of a render folder or shard (checksums, schema, missing files); empty when sound.

    `progress` counts the shards checked; each problem is also logged.
    """
    render = Path(render)
    problems = verify_shard_file(render) if render.is_file() else RenderSet(render).verify(progress)
    for problem in problems:
        (log or no_log)(f"problem: {problem}")
    return problems


def save_sample_sheet(
    render: str | os.PathLike[str], path: str | os.PathLike[str], samples: int = 24, seed: int = 0
) -> Path:
    """Write a PNG sheet of `samples` random samples of a render (composite, mask, target) to `path`."""
    atomic_write_bytes(path, encode_png(sample_sheet(Path(render), samples, seed)))
    return Path(path)


def describe(target: Path) -> list[str]:
    """Counts per class and subject, dataset shapes, compression and sizes."""
    paths = shard_paths(target)
    per_class: Counter[str] = Counter()
    per_subject: Counter[str] = Counter()
    total_bytes = 0
    for path in paths:
        try:
            with open_shard(path) as h5:
                classes = json.loads(h5.attrs["class_names"])
                labels = h5["labels"][()]
                per_subject[str(h5.attrs["subject"])] += len(labels)
                for label, count in zip(*np.unique(labels, return_counts=True), strict=True):
                    per_class[classes[label]] += int(count)
        except (OSError, KeyError, TypeError, ValueError, IndexError) as exc:
            raise shard_error(path, exc) from None
        total_bytes += path.stat().st_size
    lines = [f"{len(paths)} shards, {sum(per_subject.values())} samples, {total_bytes / 2**20:.1f} MiB"]
    lines.append("samples per class: " + ", ".join(f"{c} {per_class[c]}" for c in classes))
    lines.append(
        f"samples per subject ({len(per_subject)}): "
        + ", ".join(f"{s} {n}" for s, n in sorted(per_subject.items()))
    )
    with open_shard(paths[0]) as h5:
        for name in (*IMAGE_FIELDS, "labels", "matrices", "params", "landmarks"):
            if name not in h5:  # landmarks: shards written before them
                continue
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
        with open_shard(path) as h5:
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
