"""A run folder's ownership: config.json and folds.json bind it to one configuration and one render,
and each fold folder has one writer at a time.

`claim_run` refuses a folder of another configuration, and a fold trained already, unless the caller
resumes or overwrites; it then holds each chosen fold's lock for the whole training, so folds of one run
may train side by side (one process each) while a second writer of the same fold is refused.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from feratt.errors import FerattError
from feratt.jsonfile import read_json, write_json
from feratt.locks import exclusive
from feratt.training.checkpoints import BEST, LAST, METRICS_FILE, read_metrics
from feratt.training.config import TrainConfig, config_changes, read_run_config

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


def _run_changes(run_dir: Path, config: TrainConfig, folds: dict[str, Any]) -> list[str]:
    """What in the run folder's config.json and folds.json differs from this run's."""
    changes: list[str] = []
    if (run_dir / RUN_CONFIG).is_file():
        changes += config_changes(config, read_run_config(run_dir / RUN_CONFIG))
    if (run_dir / FOLDS_FILE).is_file() and read_json(run_dir / FOLDS_FILE) != folds:
        changes.append("the folds of its render")
    return changes


def _folds_text(chosen: list[int]) -> str:
    return "the files of " + ("fold " if len(chosen) == 1 else "folds ") + ", ".join(map(str, chosen))


def _check_config(
    run_dir: Path, config: TrainConfig, folds: dict[str, Any], chosen: list[int], overwrite: bool
) -> None:
    changes = _run_changes(run_dir, config, folds)
    if changes and not overwrite:
        raise FerattError(
            f"{run_dir} holds a run of another configuration (differs in {', '.join(changes)}); "
            f"resume it with its own settings, overwrite {_folds_text(chosen)}, or use another run folder",
            field="overwrite",
        )


def _fold_state(fold_dir: Path, epochs: int) -> str | None:
    """What an earlier run left in a fold folder, or None when it holds no training files."""
    if not any((fold_dir / name).exists() for name in FOLD_FILES):
        return None
    records = read_metrics(fold_dir)
    done = records[-1]["epoch"] + 1 if records else 0
    if (fold_dir / BEST).is_file() and done >= epochs:
        return f"is trained already ({done} epochs)"
    if (fold_dir / LAST).is_file():
        return f"holds a partial run ({done} of {epochs} epochs)"
    return "holds the files of an earlier run"


def _check_folds(run_dir: Path, chosen: list[int], epochs: int, resume: bool, overwrite: bool) -> None:
    if resume or overwrite:
        return
    for fold in chosen:
        state = _fold_state(fold_folder(run_dir, fold), epochs)
        if state is not None:
            raise FerattError(
                f"fold {fold} of {run_dir} {state}; resume to continue it, overwrite to train it again, "
                "or use another run folder",
                field="overwrite",
            )


def _bind(
    run_dir: Path, config: TrainConfig, folds: dict[str, Any], chosen: list[int], overwrite: bool
) -> None:
    """Write config.json and folds.json where absent (or, with overwrite, different), under the run lock."""
    with _run_lock(run_dir):
        _check_config(run_dir, config, folds, chosen, overwrite)  # again: another run may have bound it
        for name, payload in ((RUN_CONFIG, config.to_dict()), (FOLDS_FILE, folds)):
            path = run_dir / name
            if not path.is_file() or (overwrite and read_json(path) != payload):
                write_json(path, payload)


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
    chosen folds' files) says what to do.
    """
    if resume and overwrite:
        raise FerattError(
            "resume continues a run and overwrite starts it again: choose one", field="overwrite"
        )
    if run_dir.is_dir():  # a first look, before writing anything (the files are replaced atomically)
        _check_config(run_dir, config, folds, chosen, overwrite)
        _check_folds(run_dir, chosen, config.epochs, resume, overwrite)
    with contextlib.ExitStack() as stack:
        for fold in chosen:
            fold_dir = fold_folder(run_dir, fold)
            fold_dir.mkdir(parents=True, exist_ok=True)
            stack.enter_context(exclusive(fold_dir, f"fold {fold} of {run_dir}"))
        _check_folds(run_dir, chosen, config.epochs, resume, overwrite)  # again, now that no one else writes
        _bind(run_dir, config, folds, chosen, overwrite)
        if overwrite:
            for fold in chosen:
                clear_fold(fold_folder(run_dir, fold))
        yield
