"""A render folder: the plan and settings, the shards with their records, per-subject manifests, the index.

    RENDER/render.json                       RenderRun: the configuration and the plan, every shard in it
    RENDER/shards/SUBJECT/shard-NNNNN.h5     a shard (artifacts/shard.py)
    RENDER/shards/SUBJECT/shard-NNNNN.json   ShardRecord: written once its shard is complete
    RENDER/manifests/SUBJECT.json            SubjectManifest: once every shard of the subject is complete
    RENDER/index.json                        RenderIndex: once every shard of the plan is complete

`RenderSet` owns this layout: it writes each file atomically, reads each one through the codec (a file
that does not follow its schema is a FerattError naming it), and is what the stages take and return.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

from feratt import __version__
from feratt.artifacts.bank import FaceBank
from feratt.artifacts.render_checks import verify_folder
from feratt.artifacts.render_records import (
    INDEX_FILE,
    INDEX_SCHEMA_VERSION,
    MANIFESTS,
    RUN_FILE,
    SHARDS,
    IndexFraming,
    ManifestShard,
    RenderIndex,
    RenderRun,
    RenderTotals,
    ShardRecord,
    ShardRef,
    SkippedBackground,
    SubjectManifest,
    manifest_relpath,
    record_relpath,
)
from feratt.artifacts.shard import file_sha256
from feratt.codec import decode, encode
from feratt.config.framing import DEFAULT_BANK_MARGIN, DEFAULT_BANK_SIZE, Framing
from feratt.config.rendering import RenderConfig
from feratt.errors import FerattError
from feratt.jsonfile import dumps, read_json, write_json
from feratt.locks import exclusive, reading
from feratt.manifests.plan import ShardTask
from feratt.names import inside
from feratt.progress import Progress, no_progress


def _create_once(path: Path, text: str) -> bool:
    """Write `path` unless it exists, atomically even against another process; whether this call did."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(name, 0o666 & ~mask)
        os.link(name, path)
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS):
            raise
        # No hard links on this file system: the check and the write are then two steps.
        if path.exists():
            return False
        os.replace(name, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)
    return True


def _framing_of(config: RenderConfig, bank: str | None) -> IndexFraming:
    """The framing of a render of `bank` with `config`; a bank that cannot be read leaves its defaults."""
    found = FaceBank.framing(bank) if bank else None
    bank_size, bank_margin, forehead, aligned = found or (DEFAULT_BANK_SIZE, DEFAULT_BANK_MARGIN, 0.0, False)
    return IndexFraming(
        bank_size=bank_size,
        bank_margin=bank_margin,
        bank_forehead=forehead,
        aligned=aligned,
        size=config.size,
        fit_mask=config.fit_mask,
        grey=config.grey,
        bank_read=found is not None,
    )


class RenderSet:
    """A render folder (see the module's description): its layout, files, locks and checks."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._index: RenderIndex | None = None

    def __repr__(self) -> str:
        return f"RenderSet({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    # ------------------------------------------------------------------------------------------ layout

    @property
    def run_file(self) -> Path:
        """render.json."""
        return inside(self.path, self.path / RUN_FILE, RUN_FILE)

    @property
    def index_file(self) -> Path:
        """index.json."""
        return inside(self.path, self.path / INDEX_FILE, INDEX_FILE)

    def shard_path(self, task: ShardTask) -> Path:
        """Where the shard of `task` lies (checked to stay inside the folder, links resolved)."""
        return inside(self.path, self.path / task.relpath, f"shard {task.relpath}")

    def record_path(self, task: ShardTask) -> Path:
        """Where a finished shard's record lies: beside the shard, same name, .json."""
        return inside(self.path, self.path / record_relpath(task), f"the record of {task.relpath}")

    def manifest_path(self, subject: str) -> Path:
        """Where a subject's manifest lies (checked to stay inside the folder, links resolved)."""
        relpath = manifest_relpath(subject)
        return inside(self.path, self.path / relpath, f"the manifest {relpath}")

    def shard_files(self) -> list[Path]:
        """The shard files in the folder, sorted; a FerattError when there are none."""
        paths = sorted((self.path / SHARDS).glob("*/shard-*.h5"))
        if not paths:
            raise FerattError(f"{self.path} holds no shards (looked for shards/<subject>/shard-*.h5)")
        return paths

    @contextlib.contextmanager
    def lock(self, shared: bool = False) -> Iterator[Path]:
        """The folder's writer lock (shared by the parts of one plan); the lock file."""
        with exclusive(self.path, what=f"the render folder {self.path}", shared=shared) as lock:
            yield lock

    @contextlib.contextmanager
    def reading(self) -> Iterator[Path | None]:
        """Hold the folder's lock shared while reading it, so that no render replaces it meanwhile."""
        with reading(self.path, what=f"the render folder {self.path}") as lock:
            yield lock

    def remove_stale_files(self) -> None:
        """Remove every temporary and shard lock file a killed render left; only under the folder's lock."""
        folders = [self.path, self.path / MANIFESTS, *(self.path / SHARDS).glob("*/")]
        for folder in folders:
            for pattern in (".*.tmp*", ".feratt-write-check.*", ".shard-*.h5.lock"):
                for stale in folder.glob(pattern):
                    if stale.is_file():
                        stale.unlink(missing_ok=True)

    # ------------------------------------------------------------------------------- the finished render

    @classmethod
    def open(cls, path: str | os.PathLike[str] | RenderSet) -> RenderSet:
        """A finished render (one with its index); a FerattError when `path` holds none."""
        if isinstance(path, RenderSet):
            return path
        render = cls(path)
        render.index  # noqa: B018 - read and checked now, so that a bad folder fails here
        return render

    @property
    def index(self) -> RenderIndex:
        """The render's index.json (read once)."""
        if self._index is None:
            if not self.index_file.is_file():
                raise FerattError(
                    f"{self.path} has no index.json: is it a feratt render folder? "
                    "(run feratt render, or feratt index after the parts)"
                )
            self._index = decode(RenderIndex, read_json(self.index_file), str(self.index_file))
        return self._index

    @property
    def classes(self) -> tuple[str, ...]:
        """The class names, in label order."""
        return self.index.classes

    @property
    def subjects(self) -> dict[str, int]:
        """Samples per subject."""
        return self.index.subjects

    @property
    def config(self) -> RenderConfig:
        """The render configuration."""
        return self.index.render_config

    @property
    def framing(self) -> Framing:
        """How the render framed its faces; one made before it was recorded: from its configuration."""
        if self.index.framing is not None:
            return self.index.framing.framing()
        config = self.index.render_config
        return Framing(size=config.size, fit_mask=config.fit_mask, grey=config.grey)

    @property
    def totals(self) -> RenderTotals:
        """The totals, samples per class in class order."""
        totals = self.index.totals
        counts = {name: totals.class_counts[name] for name in self.classes}
        return replace(totals, class_counts=counts)

    def index_sha256(self) -> str:
        """The sha256 of index.json; without its framing record, so renders indexed before it still match."""
        raw = read_json(self.index_file)
        if not isinstance(raw, dict) or "framing" not in raw:
            return file_sha256(self.index_file)
        return hashlib.sha256(dumps({k: v for k, v in raw.items() if k != "framing"}).encode()).hexdigest()

    def manifest(self, subject: str) -> SubjectManifest:
        """A subject's manifest."""
        path = self.manifest_path(subject)
        return decode(SubjectManifest, read_json(path), f"the manifest of {subject} in {self.path}")

    def shards(self, subjects: Sequence[str]) -> list[ShardRef]:
        """Every shard of the subjects, in their order, from their manifests."""
        known = self.subjects
        refs: list[ShardRef] = []
        for subject in subjects:
            if subject not in known:
                listed = ", ".join(sorted(known)[:8]) + (", ..." if len(known) > 8 else "")
                raise FerattError(
                    f"subject {subject!r} is not in the render {self.path} (its subjects: {listed})"
                )
            manifest = self.manifest(subject)
            size, classes = self.config.size, len(self.classes)
            for shard in manifest.shards:
                path = inside(self.path, self.path / shard.path, f"shard {shard.path}")
                refs.append(ShardRef(str(path), shard.samples, shard.sha256, subject, size, classes))
        return refs

    # -------------------------------------------------------------------------------------- the run file

    def read_run(self) -> RenderRun:
        """render.json."""
        if not self.run_file.is_file():
            raise FerattError(f"{self.path} is not a render folder: it has no {RUN_FILE}")
        return decode(RenderRun, read_json(self.run_file), str(self.run_file))

    def bind(self, run: RenderRun, *, overwrite: bool, part: bool) -> None:
        """Make the folder ready for `run`: refuse another configuration unless asked to overwrite.

        A part of a plan shares the folder with the other parts, so it writes the run file only if none
        exists yet, and never replaces another configuration.
        """
        payload = encode(run)
        if part and _create_once(self.run_file, dumps(payload)):
            return
        if self.run_file.exists():
            previous = read_json(self.run_file)
            if not isinstance(previous, dict):
                raise FerattError(f"{self.run_file} is not a feratt render file")
            if previous.get("config_sha256") != run.config_sha256:
                self._replace_other(overwrite, part)
            elif part:
                return
        write_json(self.run_file, payload)

    def _replace_other(self, overwrite: bool, part: bool) -> None:
        if part:
            raise FerattError(
                f"{self.path} holds a render with another configuration; a part never replaces it, "
                "since other parts may be writing: remove it first, or render to another folder",
                field="part",
            )
        if not overwrite:
            raise FerattError(
                f"{self.path} holds a render with another configuration; "
                "overwrite it, or render to another folder",
                field="overwrite",
            )
        for name in (SHARDS, MANIFESTS):
            shutil.rmtree(self.path / name, ignore_errors=True)
        self.index_file.unlink(missing_ok=True)

    # --------------------------------------------------------------------------------- shards and records

    def write_record(self, task: ShardTask, record: ShardRecord) -> None:
        """Write a shard's record; it exists only once the shard itself is complete."""
        write_json(self.record_path(task), encode(record))

    def finished_record(self, task: ShardTask, config_sha256: str) -> ShardRecord | None:
        """The record of a complete shard whose bytes still match its checksum, else None."""
        path, shard = self.record_path(task), self.shard_path(task)
        if not path.is_file() or not shard.is_file():
            return None
        try:
            record = decode(ShardRecord, read_json(path), str(path))
        except FerattError:
            return None
        if record.config_sha256 != config_sha256 or record.samples != len(task):
            return None
        if shard.stat().st_size != record.bytes or file_sha256(shard) != record.sha256:
            return None
        return record

    def write_manifest(
        self, subject: str, records: Sequence[ShardRecord], classes: Sequence[str]
    ) -> SubjectManifest:
        """Write a subject's manifest: its shards with sizes and checksums, and counts per class."""
        per_class = dict.fromkeys(classes, 0)
        for record in records:
            for name, count in record.class_counts.items():
                per_class[name] += count
        manifest = SubjectManifest(
            subject=subject,
            samples=sum(r.samples for r in records),
            class_counts=per_class,
            shards=tuple(ManifestShard(r.path, r.samples, r.bytes, r.sha256) for r in records),
        )
        self.manifest_path(subject).parent.mkdir(parents=True, exist_ok=True)
        write_json(self.manifest_path(subject), encode(manifest))
        return manifest

    def finalize(
        self,
        run: RenderRun,
        known: dict[str, ShardRecord] | None = None,
        progress: Progress | None = None,
    ) -> list[ShardTask]:
        """Write the manifest of every subject whose shards are all done, and the index once all are.

        `known` holds records already verified in this run, by shard key; the others' checksums are
        streamed again (`progress(done, total)` counts the shards). Returns the shards still missing.
        """
        known = known or {}
        report, checked = progress or no_progress, 0
        by_subject: dict[str, list[ShardTask]] = {}
        for task in run.shards:
            by_subject.setdefault(task.subject, []).append(task)
        missing: list[ShardTask] = []
        manifests: dict[str, SubjectManifest] = {}
        skipped: dict[str, str] = dict(run.skipped_backgrounds)
        for subject, tasks in sorted(by_subject.items()):
            records = [known.get(task.key) or self.finished_record(task, run.config_sha256) for task in tasks]
            checked += len(tasks)
            report(checked, len(run.shards))
            done = [record for record in records if record is not None]
            if len(done) < len(tasks):
                missing.extend(t for t, r in zip(tasks, records, strict=True) if r is None)
                continue
            manifests[subject] = self.write_manifest(subject, done, run.classes)
            for record in done:
                skipped.update(dict(record.skipped_backgrounds))
        if not missing:
            self._write_index(run, manifests, skipped)
        return missing

    def _write_index(
        self, run: RenderRun, manifests: dict[str, SubjectManifest], skipped: dict[str, str]
    ) -> None:
        per_class = dict.fromkeys(run.classes, 0)
        for manifest in manifests.values():
            for name, count in manifest.class_counts.items():
                per_class[name] += count
        index = RenderIndex(
            schema_version=INDEX_SCHEMA_VERSION,
            feratt_version=__version__,
            classes=run.classes,
            subjects={s: m.samples for s, m in sorted(manifests.items())},
            totals=RenderTotals(
                samples=sum(m.samples for m in manifests.values()),
                shards=sum(len(m.shards) for m in manifests.values()),
                subjects=len(manifests),
                class_counts=per_class,
            ),
            render_config=run.config,
            framing=_framing_of(run.config, run.bank),  # how faces were framed, for inference
            seed=run.seed,
            bank=run.bank,
            bank_sha256=run.bank_sha256,
            backgrounds=run.backgrounds,
            skipped_backgrounds=tuple(SkippedBackground(p, r) for p, r in sorted(skipped.items())),
            config_sha256=run.config_sha256,
        )
        write_json(self.index_file, encode(index))
        self._index = None

    # ----------------------------------------------------------------------------------------- checking

    def verify(self, progress: Progress | None = None) -> list[str]:
        """One line per problem, naming the file: the index, the manifests, each shard and its record.

        `progress(done, total)` counts the shards checked.
        """
        return verify_folder(self.path, progress)
