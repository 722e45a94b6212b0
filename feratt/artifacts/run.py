"""A run folder: one method's training on one render, fold by fold.

    RUN/config.json             the TrainConfig, and under `extensions` each time a resume added epochs
    RUN/folds.json              FoldsRecord: each fold's test subjects, the seed and the fold size
    RUN/summary.json            RunSummary: each finished fold's test figures and their mean over folds
    RUN/fold-K/metrics.jsonl    one JSON line per epoch (MetricsLog)
    RUN/fold-K/pretrain.jsonl   one line per attention pre-training epoch
    RUN/fold-K/last.pt          the state after the latest epoch, optimizer included (artifacts/checkpoint.py)
    RUN/fold-K/best.pt          the model of the epoch that did best on validation
    RUN/fold-K/attention-strip.npz, RUN/fold-K/tensorboard/

`RunFolder` owns this layout, and `claim` binds a folder to one configuration and one render: it refuses
another configuration, and a fold trained already, unless the caller resumes or overwrites, and holds
each chosen fold's lock while it trains, so that folds of one run may train side by side.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from feratt.artifacts.output import check_output, claim_output
from feratt.atomic import atomic_path
from feratt.codec import OMIT_NONE, TRANSIENT, JSONObject, decode, encode
from feratt.config.training import PER_RUN_OPTIONS, TrainConfig, config_changes, describe_changes
from feratt.errors import FerattError
from feratt.jsonfile import read_json, write_json
from feratt.locks import exclusive
from feratt.names import inside

RUN_CONFIG = "config.json"
FOLDS_FILE = "folds.json"
SUMMARY_FILE = "summary.json"
METRICS_FILE = "metrics.jsonl"
PRETRAIN_FILE = "pretrain.jsonl"
STRIP_FILE = "attention-strip.npz"
BEST = "best.pt"
LAST = "last.pt"
TENSORBOARD = "tensorboard"
#: What training writes into a fold folder, and what overwrite removes.
FOLD_FILES = (BEST, LAST, METRICS_FILE, TENSORBOARD)
#: The key of config.json that records each time a resumed run was given more epochs.
EXTENSIONS_KEY = "extensions"
FOLDS_KIND = "feratt-folds"
FOLDS_SCHEMA_VERSION = 1
#: How long to wait for another process's short hold of the run-level lock.
RUN_LOCK_WAIT_S = 30.0

#: One epoch's record in metrics.jsonl: the epoch, the rate, and a part's figures under its name.
EpochRecord = JSONObject


# ------------------------------------------------------------------------------------------------ records


@dataclass(frozen=True)
class FoldEntry:
    """One fold's test subjects, as folds.json lists them."""

    fold: int
    test: list[str]


@dataclass(frozen=True)
class FoldsRecord:
    """folds.json: each fold's test subjects, the seed and the fold size."""

    seed: int
    fold_size: int
    folds: list[FoldEntry]
    kind: str = FOLDS_KIND
    schema_version: int = FOLDS_SCHEMA_VERSION

    @classmethod
    def of(cls, folds: Sequence[Sequence[str]], seed: int, fold_size: int) -> FoldsRecord:
        """The record of `folds`' test subjects."""
        return cls(seed, fold_size, [FoldEntry(i, sorted(f)) for i, f in enumerate(folds)])

    def test_folds(self) -> list[list[str]]:
        """Each fold's test subjects, fold 0 first."""
        return [list(entry.test) for entry in sorted(self.folds, key=lambda entry: entry.fold)]

    def __post_init__(self) -> None:
        if self.kind != FOLDS_KIND:
            raise FerattError("not a feratt folds file")
        if sorted(entry.fold for entry in self.folds) != list(range(len(self.folds))):
            raise FerattError("its folds are not numbered 0 to n-1")


@dataclass(frozen=True)
class Extension:
    """A resumed run given more epochs than it was configured for: `before`, then `after`."""

    before: int
    after: int


@dataclass(frozen=True)
class ExtensionRecord:
    """One extension as config.json records it: the epochs before and after, and each fold's progress."""

    epochs_before: int
    epochs: int
    epochs_done: dict[str, int]
    time: str


@dataclass(frozen=True)
class Scores:
    """A model's headline test figures (and the epoch it was picked at, for the best-on-validation one)."""

    accuracy: float
    precision: float
    recall: float
    f1: float
    confusion: list[list[int]]
    epoch: int | None = field(default=None, metadata=OMIT_NONE)

    @classmethod
    def of(cls, metrics: Mapping[str, Any], epoch: int | None = None) -> Scores:
        """The headline figures of a part's metrics record."""
        return cls(
            metrics["accuracy"],
            metrics["precision"],
            metrics["recall"],
            metrics["f1"],
            metrics["confusion"],
            epoch,
        )


@dataclass(frozen=True)
class FoldResult:
    """One fold's subjects and the test figures of its final model and its best-on-validation model."""

    fold: int
    test_subjects: list[str]
    validation_subjects: list[str]
    final: Scores | None = field(default=None, metadata=OMIT_NONE)
    best_on_validation: Scores | None = field(default=None, metadata=OMIT_NONE)
    real_final: Scores | None = field(default=None, metadata=OMIT_NONE)  # the test subjects' real faces
    real_best_on_validation: Scores | None = field(default=None, metadata=OMIT_NONE)


@dataclass(frozen=True)
class MeanStd:
    """A figure's mean and standard deviation over folds."""

    mean: float
    std: float


@dataclass(frozen=True)
class RunSummary:
    """summary.json: each finished fold's test figures and their mean and spread over the folds."""

    method: str
    classes: list[str]
    folds: list[FoldResult]
    render: str
    feratt_version: str
    aggregate: dict[str, dict[str, MeanStd]]
    run_dir: Path = field(default=Path(), metadata=TRANSIENT)


# ------------------------------------------------------------------------------------------- metrics log


def _records(path: Path) -> list[EpochRecord]:
    if not path.exists():
        return []
    try:
        records = [json.loads(line) for line in path.read_text().splitlines()]
    except (UnicodeDecodeError, ValueError) as exc:
        raise FerattError(f"{path} is not a feratt metrics log: {exc}") from None
    if not all(isinstance(r, dict) and isinstance(r.get("epoch"), int) for r in records):
        raise FerattError(f"{path} is not a feratt metrics log: a line is not an epoch's record")
    return records


class MetricsLog:
    """One JSON line per epoch (written by rank 0 only)."""

    def __init__(self, path: Path, enabled: bool = True) -> None:
        self.path = path
        self.enabled = enabled

    def records(self) -> list[EpochRecord]:
        """The epoch records, oldest first ([] when there is no log)."""
        return _records(self.path)

    def write(self, record: EpochRecord) -> None:
        """Append one epoch's record."""
        if not self.enabled:
            return
        size = self.path.stat().st_size if self.path.exists() else 0
        try:
            with open(self.path, "a") as handle:
                handle.write(json.dumps(record, sort_keys=True) + "\n")
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.truncate(self.path, size)  # no half line for a resume to trip on
            raise OSError(exc.errno, exc.strerror or str(exc), str(self.path)) from exc

    def truncate_after(self, epoch: int) -> None:
        """Drop lines of epochs after `epoch`, left by a run killed before its checkpoint landed."""
        if not self.enabled or not self.path.exists():
            return
        kept = [record for record in _records(self.path) if record["epoch"] <= epoch]
        with atomic_path(self.path) as tmp:
            tmp.write_text("".join(json.dumps(record, sort_keys=True) + "\n" for record in kept))

    def clear(self) -> None:
        """Remove the log of an earlier run, when a fold starts over."""
        if self.enabled and self.path.exists():
            self.path.unlink()


# ------------------------------------------------------------------------------------------- fold folder


class FoldFolder:
    """One fold's folder in a run folder: its checkpoints, logs and attention strip."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"FoldFolder({str(self.path)!r})"

    @property
    def best(self) -> Path:
        """best.pt."""
        return self.path / BEST

    @property
    def last(self) -> Path:
        """last.pt."""
        return self.path / LAST

    @property
    def strip(self) -> Path:
        """attention-strip.npz."""
        return self.path / STRIP_FILE

    @property
    def tensorboard(self) -> Path:
        """The TensorBoard log folder."""
        return self.path / TENSORBOARD

    def checkpoint(self, which: str = "best") -> Path:
        """The path of checkpoint `which` ("best" or "last")."""
        return self.path / f"{which}.pt"

    def metrics(self, enabled: bool = True) -> MetricsLog:
        """The metrics log."""
        return MetricsLog(self.path / METRICS_FILE, enabled)

    def pretrain_log(self, enabled: bool = True) -> MetricsLog:
        """The attention pre-training log."""
        return MetricsLog(self.path / PRETRAIN_FILE, enabled)

    def records(self) -> list[EpochRecord]:
        """The epoch records of metrics.jsonl, oldest first."""
        return self.metrics().records()

    def epochs_done(self) -> int:
        """How many epochs the metrics log holds."""
        records = self.records()
        return records[-1]["epoch"] + 1 if records else 0

    def finished(self, epochs: int) -> bool:
        """Whether training ran all `epochs` (its metrics reach the last one and best.pt exists)."""
        records = self.records() if self.best.is_file() else []
        return bool(records) and records[-1]["epoch"] == epochs - 1

    def state(self, epochs: int) -> str | None:
        """What an earlier run left here, in words; None when the folder holds no training files."""
        if not any((self.path / name).exists() for name in FOLD_FILES):
            return None
        done = self.epochs_done()
        if self.best.is_file() and done >= epochs:
            return f"is trained already ({done} epochs)"
        if self.last.is_file():
            return f"holds a partial run ({done} of {epochs} epochs)"
        return "holds the files of an earlier run"

    def clear(self) -> None:
        """Remove the training files (checkpoints, metrics, logs), nothing else."""
        for name in FOLD_FILES:
            path = self.path / name
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)

    def summary(self, fold: int, test: list[str], validation: list[str]) -> FoldResult:
        """Test figures of the final model and of the one that did best on validation, from the metrics."""
        records = self.records()
        scores: dict[str, Scores] = {}
        if records:
            last = records[-1]
            key = "validation" if "validation" in last else "train"
            best = max(records, key=lambda record: record[key]["accuracy"])
            for part, prefix in (("test", ""), ("real_test", "real_")):
                if part in last:
                    scores[f"{prefix}final"] = Scores.of(last[part])
                    scores[f"{prefix}best_on_validation"] = Scores.of(best[part], best["epoch"])
        return FoldResult(fold, test, validation, **scores)


# -------------------------------------------------------------------------------------------- run folder


class RunFolder:
    """A run folder (see the module's description): its layout, files, locks and claim."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    def fold(self, index: int) -> FoldFolder:
        """The folder of fold `index` (checked to stay inside the run folder, links resolved)."""
        return FoldFolder(inside(self.path, self.path / f"fold-{index}", f"fold {index}"))

    def folds_present(self, which: str = "best") -> list[int]:
        """The folds whose folder holds checkpoint `which`, in order."""
        folders = [
            p for p in self.path.glob("fold-*") if p.name[5:].isdigit() and (p / f"{which}.pt").is_file()
        ]
        return sorted(int(p.name[5:]) for p in folders)

    # ------------------------------------------------------------------------------------ config.json

    @property
    def config_file(self) -> Path:
        """config.json."""
        return inside(self.path, self.path / RUN_CONFIG, RUN_CONFIG)

    def config(self) -> TrainConfig | None:
        """The configuration config.json holds, or None when there is none; an option added since reads
        as its default."""
        data = self._config_data()
        if data is None:
            return None
        return decode(TrainConfig, data, str(self.config_file), ignore=(EXTENSIONS_KEY,))

    def extensions(self) -> list[ExtensionRecord]:
        """Each extension config.json records, oldest first."""
        data = self._config_data() or {}
        return [decode(ExtensionRecord, e, str(self.config_file)) for e in data.get(EXTENSIONS_KEY, [])]

    def check_same_config(self, config: TrainConfig) -> None:
        """Refuse a run folder trained with other settings than `config` (per-run options aside)."""
        saved = self.config()
        changed = [] if saved is None else config_changes(config, saved)
        if changed:
            raise FerattError(
                f"{self.path} was trained with other settings ({', '.join(changed)}); "
                "use another output folder",
                field="out",
            )

    def _config_data(self) -> JSONObject | None:
        if not self.config_file.is_file():
            return None
        data = read_json(self.config_file)
        if not isinstance(data, dict):
            raise FerattError(f"{self.config_file} is not a feratt training configuration")
        return data

    def _write_config(self, config: TrainConfig, history: list[ExtensionRecord]) -> None:
        payload = encode(config)
        assert isinstance(payload, dict)
        if history:
            payload[EXTENSIONS_KEY] = encode(history)
        write_json(self.config_file, payload)

    # ------------------------------------------------------------------------ folds.json, summary.json

    @property
    def folds_file(self) -> Path:
        """folds.json."""
        return inside(self.path, self.path / FOLDS_FILE, FOLDS_FILE)

    def folds(self) -> FoldsRecord:
        """folds.json."""
        data = read_json(self.folds_file)
        if not isinstance(data, dict) or data.get("kind") != FOLDS_KIND:
            raise FerattError(f"{self.folds_file} is not a feratt folds file")
        return decode(FoldsRecord, data, str(self.folds_file))

    @property
    def summary_file(self) -> Path:
        """summary.json."""
        return inside(self.path, self.path / SUMMARY_FILE, SUMMARY_FILE)

    def summary(self) -> RunSummary:
        """summary.json."""
        summary = decode(RunSummary, read_json(self.summary_file), str(self.summary_file))
        return dataclasses.replace(summary, run_dir=self.path)

    def write_summary(self, summary: RunSummary) -> None:
        """Write summary.json atomically."""
        write_json(self.summary_file, encode(summary))

    # ------------------------------------------------------------------------------------------- claim

    @contextlib.contextmanager
    def _run_lock(self) -> Iterator[None]:
        """The run folder's lock, held only briefly around config.json and folds.json: wait for it."""
        deadline = time.monotonic() + RUN_LOCK_WAIT_S
        while True:
            stack = contextlib.ExitStack()
            try:
                stack.enter_context(exclusive(self.path, f"run folder {self.path}"))
            except FerattError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
                continue
            with stack:
                yield
            return

    def check(
        self, config: TrainConfig, folds: FoldsRecord, chosen: list[int], *, resume: bool, overwrite: bool
    ) -> None:
        """Refuse, writing nothing, what `claim` refuses: another configuration, or a chosen fold trained
        already that neither `resume` nor `overwrite` says what to do with."""
        if resume and overwrite:
            raise FerattError(
                "resume continues a run and overwrite starts it again: choose one", field="overwrite"
            )
        check_output(self.path, "run", overwrite=overwrite, field="run")
        if self.path.is_dir():  # a first look (claim looks again under the locks)
            self._check_config(config, folds, chosen, resume=resume, overwrite=overwrite)
            self._check_folds(chosen, config.epochs, resume, overwrite)

    @contextlib.contextmanager
    def claim(
        self,
        config: TrainConfig,
        folds: FoldsRecord,
        chosen: list[int],
        *,
        resume: bool = False,
        overwrite: bool = False,
    ) -> Iterator[None]:
        """Check and bind the folder to this run, and hold the locks of the `chosen` folds for the block.

        Refuses (before writing anything) a folder of another configuration or a chosen fold trained
        already, unless `resume` (same configuration) or `overwrite` (replace the chosen folds' files)
        says what to do. `resume` with more epochs than the run's extends it: config.json then holds the
        new number and a record of the extension.
        """
        self.check(config, folds, chosen, resume=resume, overwrite=overwrite)
        claim_output(self.path, "run", overwrite=overwrite, field="run")
        with contextlib.ExitStack() as stack:
            for index in chosen:
                fold = self.fold(index)
                fold.path.mkdir(parents=True, exist_ok=True)
                stack.enter_context(exclusive(fold.path, f"fold {index} of {self.path}"))
            self._check_folds(chosen, config.epochs, resume, overwrite)  # again, now that no one else writes
            self._bind(config, folds, chosen, resume=resume, overwrite=overwrite)
            if overwrite:
                for index in chosen:
                    self.fold(index).clear()
            yield

    def _check_config(
        self, config: TrainConfig, folds: FoldsRecord, chosen: list[int], *, resume: bool, overwrite: bool
    ) -> Extension | None:
        """Refuse a folder of other settings (resume may raise epochs); the extension resume makes, if any."""
        if self.folds_file.is_file() and read_json(self.folds_file) != encode(folds):
            raise FerattError(
                f"{self.path} holds a run of another render or fold split; use another run folder",
                field="render",
            )
        saved = self.config()
        changes = [] if saved is None else config_changes(config, saved)
        if saved is None or not changes:
            return None
        if resume and "epochs" in changes and config.epochs < saved.epochs:
            raise FerattError(
                f"{self.path} trains for {saved.epochs} epochs; resume continues up to that number or "
                f"extends it, but {config.epochs} is fewer",
                field="epochs",
            )
        extension = Extension(saved.epochs, config.epochs) if resume and "epochs" in changes else None
        changes = [name for name in changes if not (extension and name == "epochs")]
        if not changes:
            return extension
        described = describe_changes(changes, config, saved)
        if resume:
            raise FerattError(
                f"{self.path} was trained with other settings ({described}); resume continues a run with "
                f"its own settings, except for more epochs and the options {', '.join(PER_RUN_OPTIONS)}",
                field=changes[0],
            )
        if overwrite:
            raise FerattError(
                f"{self.path} was trained with other settings ({described}); overwrite trains its folds "
                "again with the run's own settings and never changes them: use another run folder",
                field=changes[0],
            )
        raise FerattError(
            f"{self.path} holds a run of other settings ({described}); resume continues it with its own "
            f"settings, overwrite trains {_folds_text(chosen)} again, or use another run folder",
            field="run",
        )

    def _check_folds(self, chosen: list[int], epochs: int, resume: bool, overwrite: bool) -> None:
        if resume or overwrite:
            return
        for index in chosen:
            state = self.fold(index).state(epochs)
            if state is not None:
                raise FerattError(
                    f"fold {index} of {self.path} {state}; resume to continue it (with more epochs to "
                    "extend it), overwrite to train it again, or use another run folder",
                    field="run",
                )

    def _bind(
        self, config: TrainConfig, folds: FoldsRecord, chosen: list[int], *, resume: bool, overwrite: bool
    ) -> None:
        """Write config.json and folds.json where absent, extended, or changed by overwrite."""
        with self._run_lock():
            # Again: another run may have bound the folder since the first look.
            extension = self._check_config(config, folds, chosen, resume=resume, overwrite=overwrite)
            saved = self.config()
            history = self.extensions()
            if extension is not None and saved is not None:
                record = ExtensionRecord(
                    epochs_before=extension.before,
                    epochs=extension.after,
                    epochs_done={str(index): self.fold(index).epochs_done() for index in chosen},
                    time=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                )
                self._write_config(dataclasses.replace(saved, epochs=extension.after), [*history, record])
            elif saved is None:
                self._write_config(config, history)
            if not self.folds_file.is_file():
                write_json(self.folds_file, encode(folds))


def _folds_text(chosen: list[int]) -> str:
    return "the files of " + ("fold " if len(chosen) == 1 else "folds ") + ", ".join(map(str, chosen))
