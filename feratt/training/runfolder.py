"""A run folder's ownership: config.json and folds.json bind it to one configuration and one render,
and each fold folder has one writer at a time.

`claim_run` refuses a folder of another configuration, and a fold trained already, unless the caller
resumes or overwrites; it then holds each chosen fold's lock for the whole training, so folds of one run
may train side by side (one process each) while a second writer of the same fold is refused.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from feratt.config.training import (
    EXTENSIONS_KEY,
    PER_RUN_OPTIONS,
    TrainConfig,
    config_changes,
    describe_changes,
    read_run_config,
)
from feratt.errors import FerattError
from feratt.jsonfile import read_json, write_json
from feratt.locks import exclusive
from feratt.training.checkpoints import BEST, LAST, METRICS_FILE, read_metrics

RUN_CONFIG = "config.json"
FOLDS_FILE = "folds.json"
#: What training writes into a fold folder, and what overwrite removes.
FOLD_FILES = (BEST, LAST, METRICS_FILE, "tensorboard")
#: How long to wait for another process's short hold of the run-level lock.
RUN_LOCK_WAIT_S = 30.0


def fold_folder(run_dir: Path, fold: int) -> Path:
    """The folder of fold `fold` in a run folder."""
    return run_dir / f"fold-{fold}"


@contextlib.contextmanager
def _run_lock(run_dir: Path) -> Iterator[None]:
    """The run folder's lock, held only briefly around config.json and folds.json: wait for it."""
    deadline = time.monotonic() + RUN_LOCK_WAIT_S
    while True:
        stack = contextlib.ExitStack()
        try:
            stack.enter_context(exclusive(run_dir, f"run folder {run_dir}"))
        except FerattError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
            continue
        with stack:
            yield
        return


def saved_config(run_dir: Path) -> TrainConfig | None:
    """The configuration a run folder's config.json holds, or None when it has none."""
    path = run_dir / RUN_CONFIG
    return read_run_config(path) if path.is_file() else None


@dataclass(frozen=True)
class Extension:
    """A resumed run given more epochs than it was configured for: `before`, then `after`."""

    before: int
    after: int


def _folds_text(chosen: list[int]) -> str:
    return "the files of " + ("fold " if len(chosen) == 1 else "folds ") + ", ".join(map(str, chosen))


def _check_config(
    run_dir: Path,
    config: TrainConfig,
    folds: dict[str, Any],
    chosen: list[int],
    *,
    resume: bool,
    overwrite: bool,
) -> Extension | None:
    """Refuse a run folder of other settings (resume may raise epochs); the extension resume makes, if any."""
    if (run_dir / FOLDS_FILE).is_file() and read_json(run_dir / FOLDS_FILE) != folds and not overwrite:
        raise FerattError(
            f"{run_dir} holds a run of another render or fold split; use another run folder, "
            f"or overwrite {_folds_text(chosen)}",
            field="shards",
        )
    saved = saved_config(run_dir)
    changes = [] if saved is None or overwrite else config_changes(config, saved)
    if saved is None or not changes:
        return None
    if resume and "epochs" in changes and config.epochs < saved.epochs:
        raise FerattError(
            f"{run_dir} trains for {saved.epochs} epochs; resume continues up to that number or "
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
            f"{run_dir} was trained with other settings ({described}); resume continues a run with its "
            f"own settings, except for more epochs and the options {', '.join(PER_RUN_OPTIONS)}",
            field=changes[0],
        )
    raise FerattError(
        f"{run_dir} holds a run of other settings ({described}); resume continues it with its own "
        f"settings, overwrite replaces {_folds_text(chosen)}, or use another run folder",
        field="run_dir",
    )


def _fold_state(fold_dir: Path, epochs: int) -> str | None:
    """What an earlier run left in a fold folder, or None when it holds no training files."""
    if not any((fold_dir / name).exists() for name in FOLD_FILES):
        return None
    done = _epochs_done(fold_dir)
    if (fold_dir / BEST).is_file() and done >= epochs:
        return f"is trained already ({done} epochs)"
    if (fold_dir / LAST).is_file():
        return f"holds a partial run ({done} of {epochs} epochs)"
    return "holds the files of an earlier run"


def _epochs_done(fold_dir: Path) -> int:
    records = read_metrics(fold_dir)
    return records[-1]["epoch"] + 1 if records else 0


def _check_folds(run_dir: Path, chosen: list[int], epochs: int, resume: bool, overwrite: bool) -> None:
    if resume or overwrite:
        return
    for fold in chosen:
        state = _fold_state(fold_folder(run_dir, fold), epochs)
        if state is not None:
            raise FerattError(
                f"fold {fold} of {run_dir} {state}; resume to continue it (with more epochs to extend "
                "it), overwrite to train it again, or use another run folder",
                field="run_dir",
            )


def _config_payload(
    run_dir: Path, config: TrainConfig, extension: Extension | None, chosen: list[int]
) -> Any:
    """config.json's content: the configuration, and the record of every extension so far."""
    path = run_dir / RUN_CONFIG
    history = list(read_json(path).get(EXTENSIONS_KEY, [])) if path.is_file() else []
    if extension is None:
        return {**config.to_dict(), **({EXTENSIONS_KEY: history} if history else {})}
    saved = read_run_config(path)
    record = {
        "epochs_before": extension.before,
        "epochs": extension.after,
        "epochs_done": {str(fold): _epochs_done(fold_folder(run_dir, fold)) for fold in chosen},
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    return {
        **dataclasses.replace(saved, epochs=extension.after).to_dict(),
        EXTENSIONS_KEY: [*history, record],
    }


def _bind(
    run_dir: Path,
    config: TrainConfig,
    folds: dict[str, Any],
    chosen: list[int],
    *,
    resume: bool,
    overwrite: bool,
) -> None:
    """Write config.json and folds.json where absent, extended, or changed by overwrite (under the lock)."""
    with _run_lock(run_dir):
        # Again: another run may have bound the folder since the first look.
        extension = _check_config(run_dir, config, folds, chosen, resume=resume, overwrite=overwrite)
        saved = saved_config(run_dir)
        if saved is None or extension is not None or (overwrite and config_changes(config, saved)):
            write_json(run_dir / RUN_CONFIG, _config_payload(run_dir, config, extension, chosen))
        path = run_dir / FOLDS_FILE
        if not path.is_file() or (overwrite and read_json(path) != folds):
            write_json(path, folds)


def clear_fold(fold_dir: Path) -> None:
    """Remove the training files of a fold folder (its checkpoints, metrics and logs), nothing else."""
    for name in FOLD_FILES:
        path = fold_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


@contextlib.contextmanager
def claim_run(
    run_dir: Path,
    config: TrainConfig,
    folds: dict[str, Any],
    chosen: list[int],
    *,
    resume: bool = False,
    overwrite: bool = False,
) -> Iterator[None]:
    """Check and bind `run_dir` to this run, and hold the locks of the `chosen` folds for the block.

    `folds` is folds.json's content. Refuses (before writing anything) a folder of another configuration
    or a chosen fold trained already, unless `resume` (same configuration) or `overwrite` (replace the
    chosen folds' files) says what to do. `resume` with more epochs than the run's extends it: config.json
    then holds the new number and a record of the extension.
    """
    if resume and overwrite:
        raise FerattError(
            "resume continues a run and overwrite starts it again: choose one", field="overwrite"
        )
    if run_dir.is_dir():  # a first look, before writing anything (the files are replaced atomically)
        _check_config(run_dir, config, folds, chosen, resume=resume, overwrite=overwrite)
        _check_folds(run_dir, chosen, config.epochs, resume, overwrite)
    with contextlib.ExitStack() as stack:
        for fold in chosen:
            fold_dir = fold_folder(run_dir, fold)
            fold_dir.mkdir(parents=True, exist_ok=True)
            stack.enter_context(exclusive(fold_dir, f"fold {fold} of {run_dir}"))
        _check_folds(run_dir, chosen, config.epochs, resume, overwrite)  # again, now that no one else writes
        _bind(run_dir, config, folds, chosen, resume=resume, overwrite=overwrite)
        if overwrite:
            for fold in chosen:
                clear_fold(fold_folder(run_dir, fold))
        yield
