"""The render engine: render each shard of a plan as a pure function of the seed, write, resume, finalize."""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from feratt import __version__
from feratt.artifacts.bank import LANDMARK_SHAPE, read_faces
from feratt.artifacts.render import RenderSet
from feratt.artifacts.render_records import BackgroundsRecord, PlanSettings, RenderRun, ShardRecord
from feratt.artifacts.shard import (
    IMAGE_FIELDS,
    ChunkDeflater,
    ShardData,
    write_shard,
)
from feratt.atomic import remove_temporaries
from feratt.codec import encode
from feratt.config.rendering import RenderConfig
from feratt.errors import BadInputFile, FerattError
from feratt.locks import Locked, exclusive
from feratt.manifests.plan import ShardTask
from feratt.progress import Progress
from feratt.renderer import functional as F
from feratt.renderer.backgrounds import (
    BackgroundSet,
    apply_crop_pyramid,
    background_pyramid,
    decode_background,
    sample_crop,
)
from feratt.renderer.params import PARAM_FIELDS, params_to_vector
from feratt.renderer.sample import render_sample, sample_params
from feratt.workers import ignore_interrupts

_SHARD_STREAM = 0x5A4D  # separates the shard-level random stream from the per-sample ones


@dataclass(frozen=True)
class RenderJob:
    """Everything a worker needs to render any shard of the plan; small enough to send to a cluster."""

    out: str
    bank: str
    bank_sha256: str
    classes: tuple[str, ...]
    background_ids: tuple[str, ...]
    background_paths: tuple[str, ...]
    config: RenderConfig
    seed: int
    compression: str
    level: int
    crops_per_background: int
    config_sha256: str


@dataclass
class ShardFaces:
    """The bank faces a shard uses, by face index, and every face's label."""

    images: dict[int, np.ndarray]
    masks: dict[int, np.ndarray]
    landmarks: dict[int, np.ndarray]  # (68, 2) float32 in bank-crop pixels, NaN where the face has none
    labels: np.ndarray


def _load_faces(bank: str, indices: tuple[int, ...]) -> ShardFaces:
    """The images, masks and landmarks of the faces a shard uses, and every face's label."""
    wanted = sorted(set(indices))
    images, masks, points, labels = read_faces(bank, wanted)

    def by_index(rows: np.ndarray) -> dict[int, np.ndarray]:
        return dict(zip(wanted, rows, strict=True))

    return ShardFaces(by_index(images), by_index(masks), by_index(points), labels)


def _backgrounds_for_shard(
    job: RenderJob, count: int, rng: np.random.Generator
) -> tuple[list[tuple[str, list[np.ndarray]]], list[tuple[str, str]]]:
    """Decode `count` randomly chosen backgrounds once each, as pyramids; an undecodable one gives way."""
    chosen: list[tuple[str, list[np.ndarray]]] = []
    skipped: list[tuple[str, str]] = []
    total = len(job.background_paths)
    for pick in rng.integers(total, size=count):
        for step in range(total):
            index = (int(pick) + step) % total
            try:
                image = decode_background(job.background_paths[index])
                chosen.append((job.background_ids[index], background_pyramid(image, job.config.size)))
                break
            except BadInputFile as exc:
                skipped.append((exc.path, exc.reason))
        else:
            raise FerattError("no background image could be decoded")
    return chosen, skipped


def render_shard_data(job: RenderJob, task: ShardTask) -> tuple[ShardData, list[tuple[str, str]]]:
    """Render one shard's samples; the content depends only on the seed and the shard's place in the plan."""
    config = job.config
    faces = _load_faces(job.bank, task.faces)
    shard_rng = np.random.default_rng([job.seed, _SHARD_STREAM, task.first_sample])
    n = len(task)
    backgrounds, skipped = _backgrounds_for_shard(job, math.ceil(n / job.crops_per_background), shard_rng)
    size = config.size
    data = ShardData(
        images=np.empty((n, size, size, 3), np.uint8),
        masks=np.empty((n, size, size), np.uint8),
        faces=np.empty((n, size, size, 3), np.uint8),
        labels=np.empty(n, np.int16),
        face_index=np.asarray(task.faces, np.int32),
        sample_index=np.arange(task.first_sample, task.first_sample + n, dtype=np.int64),
        background_ids=[],
        matrices=np.empty((n, 3, 3), np.float64),
        crops=np.empty((n, 3), np.float32),
        luminance_ratio=np.empty(n, np.float32),
        params=np.empty((n, len(PARAM_FIELDS)), np.float32),
        landmarks=np.empty((n, *LANDMARK_SHAPE), np.float32),
        deflated=ChunkDeflater(job.level) if job.compression == "gzip" else None,
    )
    for i, face_index in enumerate(task.faces):
        rng = np.random.default_rng([job.seed, task.first_sample + i])
        background_id, pyramid = backgrounds[i // job.crops_per_background]
        height, width = pyramid[0].shape[:2]
        crop = sample_crop(height, width, config.background_scale, rng)
        params = sample_params(config, rng)
        background = apply_crop_pyramid(pyramid, crop, size)
        sample = render_sample(faces.images[face_index], faces.masks[face_index], background, params, config)
        data.images[i] = sample.image
        data.masks[i] = sample.mask
        data.faces[i] = sample.face
        data.labels[i] = faces.labels[face_index]
        data.background_ids.append(background_id)
        data.matrices[i] = sample.matrix
        data.landmarks[i] = F.place_landmarks(
            faces.landmarks[face_index], sample.matrix, params.geometry.flip
        )
        data.crops[i] = (crop.x, crop.y, crop.side)
        data.luminance_ratio[i] = sample.luminance_ratio
        data.params[i] = params_to_vector(params)
        if data.deflated is not None:
            for name in IMAGE_FIELDS:
                data.deflated.submit(name, getattr(data, name)[i])
    return data, skipped


def render_shard(job: RenderJob, task: ShardTask) -> ShardRecord | None:
    """Render and write one shard, then its record; return the record, or None if another writes it.

    The shard's own lock lets parts of one plan share a folder: whoever holds it writes the shard and
    may remove the shard's temporaries, left by a killed writer; the lock file goes once the shard is done.
    """
    shard_path = RenderSet(job.out).shard_path(task)
    shard_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with exclusive(shard_path) as lock:
            for written in (shard_path, shard_path.with_suffix(".json")):
                remove_temporaries(written)
            record = _render_and_write(job, task)
            lock.unlink(missing_ok=True)
            return record
    except Locked:
        return None


def _render_and_write(job: RenderJob, task: ShardTask) -> ShardRecord:
    """Render and write one shard, then its record; return the record."""
    data, skipped = render_shard_data(job, task)
    subject = task.subject
    data.attrs = {
        "feratt_version": __version__,
        "subject": subject,
        "shard": task.index,
        "first_sample": task.first_sample,
        "class_names": _json(list(job.classes)),
        "render_config": _json(encode(job.config)),
        "param_fields": _json(list(PARAM_FIELDS)),
        "seed": job.seed,
        "bank_sha256": job.bank_sha256,
        "config_sha256": job.config_sha256,
    }
    out = Path(job.out)
    shard_path = RenderSet(out).shard_path(task)
    sha256 = write_shard(shard_path, data, job.compression, job.level)
    counts = np.bincount(data.labels, minlength=len(job.classes))
    record = ShardRecord(
        key=task.key,
        path=task.relpath,
        subject=subject,
        samples=len(task),
        bytes=shard_path.stat().st_size,
        sha256=sha256,
        class_counts={name: int(c) for name, c in zip(job.classes, counts, strict=True)},
        config_sha256=job.config_sha256,
        skipped_backgrounds=tuple((path, reason) for path, reason in skipped),
    )
    RenderSet(out).write_record(task, record)
    return record


def _json(value: object) -> str:
    return json.dumps(value, sort_keys=True)


def _sized(job: RenderJob, task: ShardTask) -> tuple[int, ShardRecord | None]:
    """The shard's sample count, for the progress, and its record (None: another process writes it)."""
    return len(task), render_shard(job, task)


def run_tasks(
    job: RenderJob,
    tasks: list[ShardTask],
    jobs: int,
    backend: str = "loky",
    scheduler: str | None = None,
    progress: Progress | None = None,
) -> Iterator[ShardRecord]:
    """Render `tasks` in parallel with joblib (loky or Dask), yielding each shard's record as it lands.

    A shard that another process is writing (another part of the plan) is left to it and not yielded.

    `progress(done, total)` counts the samples of `tasks` rendered so far.
    """
    from joblib import Parallel, delayed, parallel_config

    if not tasks:
        return
    if backend == "dask":
        try:
            from dask.distributed import Client
        except ImportError:
            message = "the dask backend needs Dask: pip install 'feratt[dask]'"
            raise FerattError(message, field="backend") from None
        client = Client(scheduler)
        context = parallel_config(backend="dask")
    else:
        client = None
        context = parallel_config(backend=backend, n_jobs=jobs, initializer=ignore_interrupts)
    total = sum(len(task) for task in tasks)
    done = 0
    try:
        with context:
            calls = (delayed(_sized)(job, task) for task in tasks)
            for samples, record in Parallel(n_jobs=jobs, return_as="generator_unordered", batch_size=1)(
                calls
            ):
                done += samples
                if progress is not None:
                    progress(done, total)
                if record is not None:
                    yield record
    finally:
        if client is not None:
            client.close()


@dataclass
class RenderSummary:
    """What a render run did."""

    planned_shards: int
    reused_shards: int
    rendered_shards: int
    rendered_samples: int
    seconds: float
    missing: list[ShardTask]

    @property
    def samples_per_second(self) -> float:
        return self.rendered_samples / self.seconds if self.seconds > 0 else float("nan")


def render_tasks(
    job: RenderJob,
    run: RenderRun,
    tasks: list[ShardTask],
    *,
    jobs: int,
    backend: str = "loky",
    scheduler: str | None = None,
    progress: Progress | None = None,
) -> RenderSummary:
    """Render the shards of `tasks` not yet complete; write manifests, and the index once all are done."""
    folder = RenderSet(job.out)
    known: dict[str, ShardRecord] = {}
    todo: list[ShardTask] = []
    for task in tasks:
        record = folder.finished_record(task, job.config_sha256)
        if record is None:
            todo.append(task)
        else:
            known[task.key] = record
    reused = len(known)
    started = time.perf_counter()
    rendered_samples = 0
    for record in run_tasks(job, todo, jobs, backend, scheduler, progress):
        known[record.key] = record
        rendered_samples += record.samples
    seconds = time.perf_counter() - started
    missing = folder.finalize(run, known)
    return RenderSummary(len(tasks), reused, len(known) - reused, rendered_samples, seconds, missing)


def build_run(
    *,
    out: Path,
    bank_path: str,
    bank_sha256: str,
    classes: tuple[str, ...],
    tasks: list[ShardTask],
    backgrounds: BackgroundSet,
    config: RenderConfig,
    seed: int,
    plan: PlanSettings,
    compression: str,
    level: int,
    crops_per_background: int,
) -> tuple[RenderJob, RenderRun]:
    """The worker job and the run file of one render configuration."""
    ids = [b.id for b in backgrounds.backgrounds]
    run = RenderRun(
        bank=str(bank_path),
        bank_sha256=bank_sha256,
        classes=tuple(classes),
        config=config,
        seed=seed,
        plan=plan,
        compression=compression,
        compression_level=level,
        crops_per_background=crops_per_background,
        backgrounds=BackgroundsRecord(
            kind=backgrounds.kind,
            source=backgrounds.source,
            count=len(ids),
            ids_sha256=hashlib.sha256("\n".join(ids).encode()).hexdigest(),
        ),
        skipped_backgrounds=tuple((path, reason) for path, reason in backgrounds.skipped),
        shards=tuple(tasks),
    ).sealed()
    job = RenderJob(
        out=str(out),
        bank=str(bank_path),
        bank_sha256=bank_sha256,
        classes=classes,
        background_ids=tuple(ids),
        background_paths=tuple(b.path for b in backgrounds.backgrounds),
        config=config,
        seed=seed,
        compression=compression,
        level=level,
        crops_per_background=crops_per_background,
        config_sha256=run.config_sha256,
    )
    return job, run
