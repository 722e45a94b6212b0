"""The training stage as one call: train a method on a render, fold by fold, into a run folder."""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from feratt import __version__
from feratt.artifacts.render import RenderSet
from feratt.artifacts.run import FoldResult, FoldsRecord, MeanStd, RunFolder, RunSummary
from feratt.config.methods import get_method
from feratt.config.training import TrainConfig
from feratt.errors import FerattError
from feratt.progress import Log, Progress
from feratt.requests import check_fields, request_from
from feratt.training.accelerator import amp_dtype
from feratt.training.device import distributed_job, pick_device
from feratt.training.folds import FoldSplit, render_folds, resolve_folds, split_fold
from feratt.training.loop import train_fold

__all__ = ["TrainRequest", "TrainResult", "train"]


@dataclass(frozen=True, kw_only=True)
class TrainRequest:
    """What `train` trains (a method on a render), which folds, into which run folder, and how."""

    render: str | os.PathLike[str] | RenderSet  # the render folder to train on
    run: str | os.PathLike[str] | RunFolder  # the run folder to write
    config: TrainConfig = field(default_factory=TrainConfig)
    folds: str | int = "0"  # a fold index, or "all"
    resume: bool = False  # continue the chosen folds from their last.pt (more epochs extend the run)
    overwrite: bool = False  # replace the chosen folds' files
    device: str | torch.device = "auto"

    def __post_init__(self) -> None:
        check_fields(self)
        if self.resume and self.overwrite:
            raise FerattError(
                "resume continues a run and overwrite starts it again: choose one", field="overwrite"
            )


@dataclass(frozen=True)
class TrainResult(RunSummary):
    """What a training run wrote: each fold's test figures and their aggregate (its summary.json)."""


def aggregate(folds: list[FoldResult]) -> dict[str, dict[str, MeanStd]]:
    """Mean and standard deviation over folds of each test figure, for the final and best models."""
    result: dict[str, dict[str, MeanStd]] = {}
    for which in ("final", "best_on_validation", "real_final", "real_best_on_validation"):
        rows = [getattr(fold, which) for fold in folds if getattr(fold, which) is not None]
        if rows:
            result[which] = {
                key: MeanStd(
                    float(np.mean([getattr(row, key) for row in rows])),
                    float(np.std([getattr(row, key) for row in rows])),
                )
                for key in ("accuracy", "precision", "recall", "f1")
            }
    return result


def check_fits(config: TrainConfig, split: FoldSplit, samples: Mapping[str, int]) -> None:
    """Refuse a batch or an epoch larger than the fold's training subjects hold (what would size buffers
    and loops from a number alone); a process of a distributed run may get less than a batch."""
    training = sum(samples[subject] for subject in split.train)
    asked = (
        ("batch_size", config.batch_size, f"a batch of {config.batch_size}"),
        ("samples_per_epoch", config.samples_per_epoch, f"an epoch of {config.samples_per_epoch} samples"),
    )
    for name, value, what in asked:
        if value is not None and value > training:
            raise FerattError(
                f"{what} is more than the {training} training samples of fold {split.fold}; "
                f"use {training} or fewer",
                field=name,
            )


def _with_other_finished_folds(
    results: list[FoldResult], run: RunFolder, test_folds: list[list[str]], config: TrainConfig
) -> list[FoldResult]:
    """`results` and the figures of the run's other folds that finished all epochs, in fold order."""
    done = {result.fold: result for result in results}
    for fold in range(len(test_folds)):
        folder = run.fold(fold)
        if fold not in done and folder.finished(config.epochs):
            split = split_fold(test_folds, fold, config.val_subjects, config.seed)
            done[fold] = folder.summary(fold, split.test, split.validation)
    return [done[fold] for fold in sorted(done)]


def _set_determinism(config: TrainConfig, device: torch.device) -> None:
    if config.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def _request(request: TrainRequest | None, fields: dict[str, object]) -> TrainRequest:
    """The request with `fields` applied: TrainRequest's own, or TrainConfig's, which replace the config's."""
    names = {f.name for f in dataclasses.fields(TrainRequest)}
    config_fields = {k: v for k, v in fields.items() if k not in names}
    request = request_from(TrainRequest, request, {k: v for k, v in fields.items() if k in names})
    config = request_from(TrainConfig, request.config, config_fields) if config_fields else request.config
    return dataclasses.replace(request, config=config.resolved())


def train(
    request: TrainRequest | None = None,
    /,
    *,
    progress: Progress | None = None,
    log: Log | None = None,
    **fields: Any,
) -> TrainResult:
    """Train the request's method on its render, fold `folds` (an index, or 'all'), into its run folder.

    `fields` are TrainRequest's, or TrainConfig's (they replace fields of the request's config). With
    `resume`, each fold continues from its last.pt. Writes folds.json, config.json, a folder per fold and
    summary.json. A folder of another configuration, or a fold trained already, is refused unless `resume`
    continues it or `overwrite` replaces the chosen folds' files; each fold is locked while it trains.
    """
    request = _request(request, fields)
    config, folds, resume, overwrite = request.config, request.folds, request.resume, request.overwrite
    get_method(config.method)
    run_dir = RunFolder(request.run).path if not isinstance(request.run, RunFolder) else request.run.path
    target = pick_device(request.device)
    # Under torchrun every rank trains; an experiment that joined the job already keeps it afterwards.
    with distributed_job(target) as place, contextlib.ExitStack() as held:
        target = place.device_for(target)
        amp_dtype(config.amp, target)  # an AMP mode the device lacks fails before anything is written
        render = RenderSet.open(request.render)
        held.enter_context(render.reading())
        classes = list(render.classes)
        test_folds = render_folds(render, config.fold_size, config.seed)
        chosen = resolve_folds(folds, len(test_folds))
        payload = FoldsRecord.of(test_folds, config.seed, config.fold_size)
        # Everything a fold needs is checked before the run folder is written, so a refusal leaves nothing.
        RunFolder(run_dir).check(config, payload, chosen, resume=resume, overwrite=overwrite)
        splits = [split_fold(test_folds, fold, config.val_subjects, config.seed) for fold in chosen]
        for split in splits:
            check_fits(config, split, render.subjects)
        _set_determinism(config, target)

        def claim() -> None:  # rank 0 checks, binds and locks the run folder for every rank
            held.enter_context(
                RunFolder(run_dir).claim(config, payload, chosen, resume=resume, overwrite=overwrite)
            )

        place.on_main(claim, target)
        options = {"resume": resume, "device": target, "place": place, "progress": progress, "log": log}
        results = [train_fold(render, run_dir, split, classes, config, **options) for split in splits]
        place.barrier()
        results = _with_other_finished_folds(results, RunFolder(run_dir), test_folds, config)
        result = TrainResult(
            method=config.method,
            classes=classes,
            folds=results,
            render=str(render.path),
            feratt_version=__version__,
            aggregate=aggregate(results),
            run_dir=run_dir,
        )
        if place.main:
            RunFolder(run_dir).write_summary(result)
    return result
