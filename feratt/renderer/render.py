"""The render stage as one call: composite a face bank onto background photos into sharded HDF5.

    from feratt.config.rendering import preset_config
    from feratt.renderer.render import render

    result = render(render="synth", per_face=4, config=preset_config("train", size=64))

`render` plans the samples (which faces, in which shards), renders the shards not yet complete, and
writes the manifests and, once every shard of the plan exists, `index.json`. A render is a pure
function of its request: rerunning it keeps complete shards, and parts of one plan rendered on several
machines (`part=(i, k)`) add up to the same files as one run; `index_render` then writes the index.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from feratt.artifacts.bank import FaceBank
from feratt.artifacts.output import MARKER, check_output, claim_output
from feratt.artifacts.render import RenderSet
from feratt.artifacts.render_records import PlanSettings, RenderTotals
from feratt.artifacts.shard import COMPRESSIONS
from feratt.atomic import check_writable
from feratt.cache import cache_dir
from feratt.config.rendering import RenderConfig
from feratt.datasets.bank import ensure_demo_bank
from feratt.datasets.demo import DEMO_REVISION
from feratt.errors import FerattError
from feratt.manifests.plan import ShardTask, face_counts, make_plan, select_part
from feratt.progress import Log, Progress, no_log
from feratt.renderer import backgrounds
from feratt.renderer.backgrounds import BackgroundSet
from feratt.renderer.engine import build_run, render_tasks
from feratt.requests import check_fields, check_jobs, check_seed, request_from

__all__ = [
    "BackgroundSource",
    "IndexResult",
    "RenderRequest",
    "RenderResult",
    "RenderTotals",
    "index_render",
    "render",
]

DEMO_BANK = "builtin:demo"
BACKENDS = ("loky", "dask")
BALANCES = ("classes", "faces")
DEFAULT_PER_FACE = 10


def _require(ok: bool, message: str, field: str) -> None:
    if not ok:
        raise FerattError(message, field=field)


@dataclass(frozen=True, kw_only=True)
class BackgroundSource:
    """Where the background photos come from: COCO, a folder, or (with neither) scikit-image's photos."""

    coco_annotations: str | os.PathLike[str] | None = None  # COCO instances JSON
    coco_images: str | os.PathLike[str] | None = None  # folder of the COCO images
    folder: str | os.PathLike[str] | None = None  # a plain folder of photos instead of COCO
    exclude_categories: tuple[str, ...] = ("person",)  # COCO: leave out images showing these
    include_categories: tuple[str, ...] = ()  # COCO: keep only images showing one of these
    min_side: int = 0  # drop photos whose shorter side is smaller, in pixels

    def __post_init__(self) -> None:
        for name in ("exclude_categories", "include_categories"):  # one category may come as a string
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, (value,))
        check_fields(self)
        coco = (self.coco_annotations, self.coco_images)
        missing = "coco_images" if coco[0] else "coco_annotations"
        _require(all(coco) or not any(coco), "COCO annotations and COCO images go together", missing)
        both = all(coco) and bool(self.folder)
        _require(not both, "give COCO backgrounds or a folder of backgrounds, not both", "backgrounds")
        _require(self.min_side >= 0, f"the minimum side must be 0 or more, not {self.min_side}", "min_side")

    def load(self) -> BackgroundSet:
        """The usable backgrounds of this source, with what was left out and why."""
        if self.coco_annotations and self.coco_images:
            return backgrounds.coco_backgrounds(
                os.fspath(self.coco_annotations),
                os.fspath(self.coco_images),
                exclude_categories=self.exclude_categories,
                include_categories=self.include_categories,
                min_side=self.min_side,
            )
        if self.folder:
            return backgrounds.folder_backgrounds(os.fspath(self.folder), min_side=self.min_side)
        return backgrounds.embedded_backgrounds(str(cache_dir() / "backgrounds"))


@dataclass(frozen=True, kw_only=True)
class RenderRequest:
    """What `render` composites (a face bank onto backgrounds), how many samples, where and how."""

    render: str | os.PathLike[str]  # the render folder to write
    bank: str | os.PathLike[str] = DEMO_BANK  # a face bank file, or builtin:demo (built once, cached)
    backgrounds: BackgroundSource = field(default_factory=BackgroundSource)  # or a folder path
    config: RenderConfig = field(default_factory=RenderConfig)
    per_face: int | None = None  # samples per face; with neither this nor `total`, 10
    total: int | None = None  # samples in all, spread over the faces by `balance`
    balance: str | None = None  # with `total`: equal samples per class or per face; None: config's
    shard_size: int = 1000  # samples per shard at most
    seed: int = 0
    jobs: int = -1  # parallel workers; -1: every core
    backend: str = "loky"  # or "dask", with `scheduler`
    scheduler: str | None = None  # the Dask scheduler's address
    part: tuple[int, int] | None = None  # (i, k): render only part i of k of the plan
    overwrite: bool = False  # replace a render of another configuration in `render`
    compression: str = "gzip"
    compression_level: int = 1  # gzip level
    crops_per_background: int = 16  # samples that share one decoded background photo

    def __post_init__(self) -> None:
        if isinstance(self.backgrounds, str | os.PathLike):  # a folder of photos
            object.__setattr__(self, "backgrounds", BackgroundSource(folder=self.backgrounds))
        check_fields(self)
        check_jobs(self.jobs)
        check_seed(self.seed)
        for holds, message, name in self._rules():
            _require(holds, message, name)

    def _rules(self) -> list[tuple[bool, str, str]]:
        """(whether it holds, the message when not, the field) for every rule of a request."""
        part, parts = self.part or (1, 1)
        level = self.compression_level
        return [
            (
                self.per_face is None or self.total is None,
                "give samples per face or a total, not both",
                "total",
            ),
            (self.per_face is None or self.per_face >= 1, "samples per face must be at least 1", "per_face"),
            (self.total is None or self.total >= 1, "the total must be at least 1 sample", "total"),
            (
                self.balance is None or self.balance in BALANCES,
                f"unknown balance {self.balance!r}; valid: {', '.join(BALANCES)}",
                "balance",
            ),
            (self.shard_size >= 1, "the shard size must be at least 1", "shard_size"),
            (
                self.crops_per_background >= 1,
                "crops per background must be at least 1",
                "crops_per_background",
            ),
            (
                self.backend in BACKENDS,
                f"unknown backend {self.backend!r}; valid: {', '.join(BACKENDS)}",
                "backend",
            ),
            (
                self.backend != "dask" or bool(self.scheduler),
                "the dask backend needs a scheduler address",
                "scheduler",
            ),
            (
                self.compression in COMPRESSIONS,
                f"unknown compression {self.compression!r}; valid: {', '.join(COMPRESSIONS)}",
                "compression",
            ),
            (1 <= level <= 9, f"the gzip level must lie between 1 and 9, not {level}", "compression_level"),
            (1 <= part <= parts, f"part {part} of {parts}: the part must lie between 1 and {parts}", "part"),
        ]

    def bank_path(self) -> Path:
        """The face bank file: the given one, or the cached demo bank (built on first use)."""
        if os.fspath(self.bank) == DEMO_BANK:
            cached = cache_dir() / f"demo-bank-r{DEMO_REVISION}-{self.seed}.h5"
            return ensure_demo_bank(cached, seed=self.seed)
        path = Path(self.bank)
        if not path.is_file():
            raise FerattError(f"face bank not found: {os.fspath(self.bank)}")
        return path


@dataclass(frozen=True)
class RenderResult:
    """What `render` planned and did; the totals once every shard of the plan is complete."""

    render: Path  # the render folder
    planned_samples: int
    planned_shards: int
    planned_faces: int
    planned_subjects: int
    part: tuple[int, int] | None  # the part of the plan this call rendered; None: all of it
    part_shards: int  # shards of that part
    rendered_samples: int
    rendered_shards: int
    reused_shards: int  # complete shards kept from an earlier run
    samples_per_second: float
    missing_shards: tuple[str, ...]  # shards of the plan not rendered yet (other parts), relative paths
    index: Path | None  # index.json, once the render is complete
    totals: RenderTotals | None

    @property
    def complete(self) -> bool:
        """Whether every shard of the plan exists, so that the index is written."""
        return self.index is not None


@dataclass(frozen=True)
class IndexResult:
    """The index of a finished render, written by `index_render`."""

    index: Path
    totals: RenderTotals


def _writable_folder(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        check_writable(out / ".feratt-check")
    except OSError as exc:
        raise FerattError(f"cannot write to {out}: {exc}", field="render") from None


def _read_bank(request: RenderRequest) -> tuple[Path, FaceBank]:
    path = request.bank_path()
    bank = FaceBank.open(path)
    if len(bank) == 0:
        raise FerattError(f"face bank {path} holds no faces")
    return path, bank


def _plan(request: RenderRequest, bank: FaceBank, balance: str) -> tuple[int, list[ShardTask], PlanSettings]:
    """The number of samples, the shard tasks, and the plan settings recorded in the run file."""
    per_face = request.per_face if request.per_face or request.total else DEFAULT_PER_FACE
    counts = face_counts(
        bank.labels,
        len(bank.classes),
        per_face=per_face,
        total=request.total,
        balance=balance,
        seed=request.seed,
    )
    tasks = make_plan(bank.subjects, counts, request.shard_size)
    settings = PlanSettings(per_face, request.total, balance, request.shard_size)
    return int(counts.sum()), tasks, settings


def render(
    request: RenderRequest | None = None,
    /,
    *,
    progress: Progress | None = None,
    log: Log | None = None,
    **fields: Any,
) -> RenderResult:
    """Render the request's plan (or its part) into its render folder; the fields are RenderRequest's.

    The whole render holds the lock of the folder, so a second writer is refused with the holder named; the
    parts of one plan hold it shared, and each shard's own lock, so that they run side by side. A write
    error keeps the complete shards, for a rerun to resume; a folder this call created and left empty goes.
    """
    request = request_from(RenderRequest, request, fields)
    out = Path(request.render)
    created = not out.exists()
    check_output(out, "render", overwrite=request.overwrite, field="render")
    _writable_folder(out)
    part = request.part is not None
    folder = RenderSet(out)
    with folder.lock(shared=part) as lock:
        try:
            claim_output(out, "render", overwrite=request.overwrite, field="render")
            if not part:
                folder.remove_stale_files()
            return _render_locked(request, folder, progress, log or no_log)
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt) and not part:
                folder.remove_stale_files()  # what workers stopped in mid-shard left
            if created:
                _remove_if_empty(out, lock)
            if isinstance(exc, OSError):
                raise _write_error(exc, out) from exc
            raise


def _remove_if_empty(out: Path, lock: Path) -> None:
    """Remove the folder `out` if it holds nothing but its lock file and marker."""
    with contextlib.suppress(OSError):
        if {path.name for path in out.iterdir()} <= {lock.name, MARKER}:
            (out / MARKER).unlink(missing_ok=True)
            lock.unlink()
            out.rmdir()


def _write_error(exc: OSError, out: Path) -> FerattError:
    """One line for a failed read or write during a render: the file, the reason, and what was kept."""
    kept = len(list(out.glob("shards/*/shard-*.json")))
    reason = " ".join((exc.strerror or str(exc)).split())  # HDF5's reports run over several lines
    message = f"{exc.filename or out}: {reason}"
    if kept:
        message += f"; the {kept} complete shards in {out} are kept: rerun the same command to resume"
    else:
        message += f"; {out} holds no complete shard yet: rerun the same command to render them"
    return FerattError(message)


def _render_locked(
    request: RenderRequest, folder: RenderSet, progress: Progress | None, log: Log
) -> RenderResult:
    """`render`, once the lock of the render folder is held."""
    out = folder.path
    bank_path, bank = _read_bank(request)
    background_set = request.backgrounds.load()
    for line in background_set.report_lines():
        log(line)
    balance = request.balance or request.config.balance
    samples, tasks, settings = _plan(request, bank, balance)
    job, run = build_run(
        out=out,
        bank_path=str(bank_path),
        bank_sha256=bank.checksum,
        classes=bank.classes,
        tasks=tasks,
        backgrounds=background_set,
        config=replace(request.config, balance=balance),
        seed=request.seed,
        plan=settings,
        compression=request.compression,
        level=request.compression_level,
        crops_per_background=request.crops_per_background,
    )
    folder.bind(run, overwrite=request.overwrite, part=request.part is not None)
    part, parts = request.part or (1, 1)
    mine = select_part(tasks, part, parts)
    subjects = len(set(bank.subjects))
    log(
        f"plan: {samples} samples of {len(bank)} faces in {len(tasks)} shards, {subjects} subjects"
        + (f"; part {part}/{parts}: {len(mine)} shards" if parts > 1 else "")
    )
    summary = render_tasks(
        job,
        run,
        mine,
        jobs=request.jobs,
        backend=request.backend,
        scheduler=request.scheduler,
        progress=progress,
    )
    complete = not summary.missing
    return RenderResult(
        render=out,
        planned_samples=samples,
        planned_shards=len(tasks),
        planned_faces=len(bank),
        planned_subjects=subjects,
        part=request.part,
        part_shards=len(mine),
        rendered_samples=summary.rendered_samples,
        rendered_shards=summary.rendered_shards,
        reused_shards=summary.reused_shards,
        samples_per_second=summary.samples_per_second,
        missing_shards=tuple(task.relpath for task in summary.missing),
        index=folder.index_file if complete else None,
        totals=RenderSet(out).totals if complete else None,
    )


def index_render(
    render: str | os.PathLike[str], *, progress: Progress | None = None, log: Log | None = None
) -> IndexResult:
    """Write the manifests and index.json of a render whose parts have all finished.

    Every shard's checksum is streamed again first (`progress` counts the shards).
    """
    folder = RenderSet(render)
    if not folder.path.is_dir():
        raise FerattError(f"{folder.path} is not a render folder")
    with folder.lock():
        run = folder.read_run()
        folder.remove_stale_files()
        (log or no_log)(f"checking the {len(run.shards)} shards of the plan in {folder.path}")
        missing = folder.finalize(run, progress=progress)
    if missing:
        names = ", ".join(task.relpath for task in missing[:5])
        raise FerattError(f"{len(missing)} shards are missing or incomplete, such as {names}")
    return IndexResult(index=folder.index_file, totals=RenderSet(render).totals)
