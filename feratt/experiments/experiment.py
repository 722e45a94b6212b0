"""Experiments: train and evaluate several methods on every fold, then tables, tests and a report."""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from feratt import __version__
from feratt.artifacts.output import check_output, claim_output
from feratt.artifacts.render import RenderSet
from feratt.artifacts.run import RunFolder
from feratt.atomic import atomic_write_bytes
from feratt.codec import OMIT_NONE, TRANSIENT, JSONObject, decode, encode
from feratt.config.methods import CONTROL_METHOD, METHODS
from feratt.config.training import PER_RUN_OPTIONS, TrainConfig
from feratt.errors import FerattError
from feratt.experiments.evaluate import EvaluationResult, evaluate_model
from feratt.experiments.report import write_report
from feratt.experiments.tables import SplitTable, Table, summarise, table_csv, table_markdown
from feratt.jsonfile import read_json, write_json
from feratt.locks import exclusive
from feratt.progress import Log, Progress, no_log
from feratt.requests import check_fields, request_from
from feratt.training.checkpoints import find_checkpoint, load_trained
from feratt.training.device import SINGLE_PROCESS, Distributed, distributed_job, pick_device
from feratt.training.folds import render_folds, resolve_folds
from feratt.training.train import train

EXPERIMENT_FILE = "experiment.json"
EXPERIMENT_KIND = "feratt-experiment"


@dataclass(frozen=True)
class ExperimentRequest:
    """An experiment: `methods` trained and tested on the `folds` of `render`, into `out`.

    Test samples come from `eval_render` when given (a render of the same bank, such as one with the
    authors' evaluation geometry), else from the training render's test subjects; `config.real_test`
    adds the test subjects' real faces.
    """

    render: Path
    out: Path
    methods: tuple[str, ...] = tuple(METHODS)
    folds: str | int = "all"
    config: TrainConfig = field(default_factory=TrainConfig)
    eval_render: Path | None = None
    overwrite: bool = False  # write into a folder that holds files feratt did not write

    def __post_init__(self) -> None:
        check_fields(self)  # paths become Paths
        object.__setattr__(self, "methods", tuple(dict.fromkeys(self.methods)))
        if not self.methods:
            raise FerattError("name at least one method", field="methods")
        unknown = [method for method in self.methods if method not in METHODS]
        if unknown:
            raise FerattError(
                f"unknown method {unknown[0]!r}; valid methods: {', '.join(METHODS)}", field="methods"
            )


@dataclass(frozen=True)
class DataChecksums:
    """Checksums that identify a render: its bank and configuration, and its index itself."""

    bank_sha256: str
    config_sha256: str
    index_sha256: str
    samples: int

    @classmethod
    def of(cls, render: str | os.PathLike[str] | RenderSet) -> DataChecksums:
        """The checksums of `render`, from its index.json."""
        render = RenderSet.open(render)
        index = render.index
        return cls(index.bank_sha256, index.config_sha256, render.index_sha256(), index.totals.samples)


@dataclass(frozen=True)
class ExperimentSettings:
    """What an experiment folder is bound to (experiment.json): a rerun with other settings is refused."""

    shards: str
    data: DataChecksums
    methods: list[str]
    folds: list[int]
    training: JSONObject  # the training options the runs share (not the per-run ones)
    real_test: str | None
    eval_shards: str | None = field(default=None, metadata=OMIT_NONE)
    eval_data: DataChecksums | None = field(default=None, metadata=OMIT_NONE)
    kind: str = EXPERIMENT_KIND


@dataclass(frozen=True)
class ExperimentResult:
    """What an experiment wrote (EXP/results.json): per split its table and tests; the report and tables."""

    settings: ExperimentSettings
    splits: dict[str, SplitTable]
    out: Path = field(metadata=TRANSIENT)
    evaluations: dict[str, list[EvaluationResult]] = field(metadata=TRANSIENT)
    report: Path = field(metadata=TRANSIENT)
    tables: dict[str, list[Path]] = field(metadata=TRANSIENT)
    feratt_version: str = __version__


def _training_settings(config: TrainConfig) -> JSONObject:
    """The training options an experiment shares across its runs (not the per-run ones)."""
    training = encode(config)
    assert isinstance(training, dict)
    for per_run in ("method", *PER_RUN_OPTIONS):
        training.pop(per_run, None)
    return training


def _settings(request: ExperimentRequest, folds: list[int], config: TrainConfig) -> ExperimentSettings:
    """What an experiment folder is bound to; a rerun with other settings is refused."""
    evaluated = request.eval_render
    return ExperimentSettings(
        shards=str(request.render),
        data=DataChecksums.of(request.render),
        methods=list(request.methods),
        folds=folds,
        training=_training_settings(config),
        real_test=config.real_test,
        eval_shards=str(evaluated) if evaluated is not None else None,
        eval_data=DataChecksums.of(evaluated) if evaluated is not None else None,
    )


def _differing(mine: JSONObject, theirs: JSONObject, ignored: tuple[str, ...] = ()) -> list[str]:
    """The keys, sorted, whose values differ between two settings (ignoring `ignored`)."""
    keys = (set(mine) | set(theirs)) - set(ignored)
    return sorted(k for k in keys if mine.get(k) != theirs.get(k))


def bind_folder(out: Path, bound: ExperimentSettings) -> None:
    """Create EXP/experiment.json, or check that the one there has the same settings."""
    path = out / EXPERIMENT_FILE
    settings = encode(bound)
    assert isinstance(settings, dict)
    if not path.exists():
        out.mkdir(parents=True, exist_ok=True)
        write_json(path, {**settings, "feratt_version": __version__})
        return
    theirs = read_json(path)
    if isinstance(theirs.get("training"), dict):
        # Through TrainConfig, so a folder made before an option existed reads as that option's default.
        saved = decode(TrainConfig, theirs["training"], f"{path} (its training settings)")
        theirs["training"] = _training_settings(saved)
    changed = _differing(settings, theirs, ignored=("feratt_version",))
    if changed:
        raise FerattError(
            f"{out} holds an experiment of another configuration (differs in {', '.join(changed)}); "
            "use another output folder",
            field="out",
        )


def evaluate_fold(
    run_dir: Path,
    fold: int,
    shards: Path,
    real_test: str | None,
    config: TrainConfig,
    device: torch.device,
    progress: Progress | None = None,
    place: Distributed = SINGLE_PROCESS,
) -> EvaluationResult:
    """Test metrics of a fold's best-on-validation model on rendered (and real) test faces.

    Under torchrun each rank scores its part of the test faces (`config.batch_size` a rank at a time).
    """
    trained = load_trained(run_dir, fold=fold, which="best", device=device)
    return evaluate_model(
        trained,
        shards,
        real_test=real_test,
        batch_size=config.batch_size,
        workers=config.workers,
        device=device,
        progress=progress,
        place=place,
    )


def significance(
    table: Table, out: Path, split: str, alpha: float = 0.05, draw: bool = True
) -> dict[str, Any]:
    """Friedman, Nemenyi and Bonferroni-Dunn (against the baseline) on per-fold accuracy; a CD diagram
    (`out`/cd-SPLIT.png, drawn unless `draw` is False: a torchrun rank other than 0 only names it)."""
    from feratt.experiments.figures import cd_diagram
    from feratt.experiments.stats import bonferroni_dunn_test, friedman_test, nemenyi_test

    methods = list(table)
    if len(methods) < 2:
        return {"note": "one method: nothing to compare"}
    scores = np.array([table[m]["accuracy"].folds for m in methods]).T  # folds x methods
    if scores.shape[0] < 2:
        return {"note": "one fold: the tests need at least two"}
    control = CONTROL_METHOD if CONTROL_METHOD in methods else methods[0]
    friedman = friedman_test(scores)
    nemenyi = nemenyi_test(scores, methods, alpha=alpha)
    dunn = bonferroni_dunn_test(scores, methods, control=control, alpha=alpha)
    figure = out / f"cd-{split}.png"
    title = f"Nemenyi critical difference, alpha {alpha} ({split}, accuracy over {scores.shape[0]} folds)"
    if draw:
        ranks = dict(zip(methods, (float(r) for r in friedman.ranks), strict=True))
        figure = cd_diagram(ranks, nemenyi.cd, figure, title=title)
    return {
        "metric": "accuracy",
        "alpha": alpha,
        "friedman": encode(friedman),
        "nemenyi": encode(nemenyi),
        "bonferroni_dunn": encode(dunn),
        "figure": figure.name,
    }


def _experiment_folds(request: ExperimentRequest, config: TrainConfig) -> list[int]:
    """The fold indices the request names, among the folds of its render."""
    count = len(render_folds(request.render, config.fold_size, config.seed))
    try:
        return resolve_folds(request.folds, count)
    except FerattError as exc:
        raise FerattError(str(exc), field="folds") from None


def _cached_evaluation(path: Path, checkpoint: Path) -> EvaluationResult | None:
    """The evaluation saved at `path`, if it was made of the checkpoint as it is now."""
    if not path.is_file():
        return None
    saved = read_json(path)
    if saved.get("checkpoint_mtime_ns") != checkpoint.stat().st_mtime_ns:
        return None
    return decode(EvaluationResult, saved, str(path), ignore=("checkpoint_mtime_ns",))


def _run_fold(
    request: ExperimentRequest,
    method: str,
    fold: int,
    config: TrainConfig,
    device: torch.device,
    progress: Progress | None,
    log: Log,
    place: Distributed = SINGLE_PROCESS,
) -> EvaluationResult:
    """Train a method's fold unless it is finished, then evaluate it unless that is saved already.

    `config` is the method's training configuration; the real test faces are the request's. Under
    torchrun every rank trains and scores its part, as rank 0 decides; rank 0 alone writes.
    """
    run_dir = request.out / "runs" / method
    fold_dir = RunFolder(run_dir).fold(fold)
    if place.agree(fold_dir.finished(config.epochs), device):
        log(f"{method} fold {fold}: trained already, reused")
    else:
        log(f"{method} fold {fold}: training")
        train(
            render=request.render,
            run=run_dir,
            config=config,
            folds=fold,
            resume=True,
            device=device,
            progress=progress,
            log=log,
        )
    checkpoint = find_checkpoint(fold_dir.path)
    cached = request.out / "evaluations" / f"{method}-fold-{fold}.json"
    found = _cached_evaluation(cached, checkpoint)
    if place.agree(found is not None, device):
        evaluation = found or decode(
            EvaluationResult, read_json(cached), str(cached), ignore=("checkpoint_mtime_ns",)
        )
    else:
        test_shards = request.eval_render or request.render
        real_test = request.config.real_test
        evaluation = evaluate_fold(run_dir, fold, test_shards, real_test, config, device, progress, place)
        if place.main:
            cached.parent.mkdir(parents=True, exist_ok=True)
            stamp = {"checkpoint_mtime_ns": checkpoint.stat().st_mtime_ns}
            write_json(cached, {**encode(evaluation), **stamp})
    real = f", real {evaluation.real.accuracy:.3f}" if evaluation.real is not None else ""
    log(f"{method} fold {fold}: test accuracy {evaluation.synthetic.accuracy:.3f}{real}")
    return evaluation


def _write_split(
    out: Path, split: str, evaluations: dict[str, list[EvaluationResult]], write: bool = True
) -> SplitTable:
    """Summarise one split over folds; write its table as markdown and CSV, and its CD diagram (unless
    not `write`: a torchrun rank other than 0 computes the same and writes nothing)."""
    per_fold = {m: [e.splits[split] for e in runs if split in e.splits] for m, runs in evaluations.items()}
    table = summarise(per_fold)
    markdown = table_markdown(table)
    if write:
        atomic_write_bytes(out / f"table-{split}.md", markdown.encode())
        atomic_write_bytes(out / f"table-{split}.csv", table_csv(table).encode())
    tests = significance(table, out, split, draw=write)
    return SplitTable(table=table, tests=tests, markdown=markdown)


@contextlib.contextmanager
def _kept_on_write_error(out: Path) -> Iterator[None]:
    """A failed read or write (a full disk, say) as one line: the file, the reason, and what is kept."""
    try:
        yield
    except OSError as exc:
        reason = " ".join((exc.strerror or str(exc)).split())
        raise FerattError(
            f"{exc.filename or out}: {reason}; the finished folds and evaluations in {out} are kept: "
            "rerun the same command to continue"
        ) from None


def run_experiment(
    request: ExperimentRequest | None = None,
    /,
    *,
    device: str | torch.device = "auto",
    progress: Progress | None = None,
    log: Log | None = None,
    **fields: Any,
) -> ExperimentResult:
    """Train (or reuse) and evaluate every method on every chosen fold; write tables and report.md.

    Under `torchrun --nproc_per_node N -m feratt experiment`, each method and fold trains with DDP on
    every rank and each rank scores its part of the test faces; rank 0 alone logs and writes files.
    Every rank returns the same result.
    """
    request = request_from(ExperimentRequest, request, fields)
    config = request.config.resolved()
    target = pick_device(device)
    folds = _experiment_folds(request, config)
    settings = _settings(request, folds, config)
    with _kept_on_write_error(request.out), distributed_job(target) as place, contextlib.ExitStack() as held:
        target = place.device_for(target)
        log = (log or no_log) if place.main else no_log
        progress = progress if place.main else None

        def claim() -> None:  # rank 0 locks and binds the folder for every rank
            check_output(request.out, "experiment", overwrite=request.overwrite)
            request.out.mkdir(parents=True, exist_ok=True)
            held.enter_context(exclusive(request.out, what=f"the experiment folder {request.out}"))
            claim_output(request.out, "experiment", overwrite=request.overwrite)
            bind_folder(request.out, settings)
            held.enter_context(RenderSet.open(request.render).reading())

        place.on_main(claim, target)
        evaluations: dict[str, list[EvaluationResult]] = {}
        for method in request.methods:
            method_config = dataclasses.replace(config, method=method, real_test=None)
            RunFolder(request.out / "runs" / method).check_same_config(method_config)
            evaluations[method] = [
                _run_fold(request, method, fold, method_config, target, progress, log, place)
                for fold in folds
            ]
        splits = {
            split: _write_split(request.out, split, evaluations, write=place.main)
            for split in (("synthetic", "real") if config.real_test else ("synthetic",))
        }
        result = ExperimentResult(
            out=request.out,
            settings=settings,
            evaluations=evaluations,
            splits=splits,
            report=request.out / "report.md",
            tables={
                split: [request.out / f"table-{split}.{ext}" for ext in ("md", "csv")] for split in splits
            },
        )
        if place.main:
            write_json(request.out / "results.json", encode(result))
            write_report(request.out, encode(settings), splits, evaluations)
        return result
