"""Robustness to noise (the paper's figures 7-9): trained runs scored on test splits under Gaussian noise."""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from feratt import __version__
from feratt.artifacts.output import check_output, claim_output
from feratt.artifacts.render import RenderSet
from feratt.artifacts.run import MeanStd
from feratt.atomic import atomic_write_bytes
from feratt.codec import OMIT_NONE, TRANSIENT, encode, json_name
from feratt.errors import FerattError
from feratt.experiments.evaluate import (
    Noise,
    SplitMetrics,
    add_noise,
    check_render,
    fold_test_subjects,
    real_loader,
    run_model,
    synthetic_loader,
)
from feratt.experiments.figures import new_figure, save_png
from feratt.jsonfile import write_json
from feratt.locks import exclusive
from feratt.progress import Log, Progress, no_log
from feratt.requests import check_fields, check_seed, request_from
from feratt.training.checkpoints import TrainedModel, find_checkpoint, load_trained
from feratt.training.data import Batch, normalise_batch, prepare_inputs
from feratt.training.device import pick_device

#: The noise levels of the paper's figures 7-9.
PAPER_SIGMAS: tuple[float, ...] = (0.01, 0.05, 0.07, 0.09, 0.1, 0.2, 0.3)
#: The metrics averaged over folds.
SUMMARY_KEYS: tuple[str, ...] = ("accuracy", "precision", "recall", "f1", "macro_f1")
NOISE_KIND = "feratt-noise"
NOISE_SCHEMA_VERSION = 1


#: The largest noise sigma: past about 1 every pixel is clipped to 0 or 1 already; far larger ones overflow.
MAX_SIGMA = 100.0


def parse_sigmas(text: str) -> list[float]:
    """The noise levels of a comma-separated list, sorted, without repeats, with 0 (the clean reference)."""
    values = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            value = float(part)
        except ValueError:
            raise ValueError(f"{part!r} is not a number") from None
        if not math.isfinite(value) or not 0 <= value <= MAX_SIGMA:
            raise ValueError(f"a noise sigma must be a number from 0 to {MAX_SIGMA:g}, not {part}")
        values.append(value)
    if not values:
        raise ValueError("give at least one sigma, such as 0.01,0.05,0.1")
    return sorted({0.0, *values})


def fold_checkpoints(run: str | Path, fold: str = "all") -> list[Path]:
    """The best.pt of each fold of a run folder ('all') or of fold `fold`; a fold folder is one fold."""
    run = Path(run)
    if fold != "all":
        try:
            index = int(fold)
        except ValueError:
            raise FerattError(f"a fold is an index or 'all', not {fold!r}", field="fold") from None
        return [find_checkpoint(run, index)]
    if run.is_dir():
        found = [
            p / "best.pt" for p in run.glob("fold-*") if p.name[5:].isdigit() and (p / "best.pt").is_file()
        ]
        if found:
            return sorted(found, key=lambda p: int(p.parent.name[5:]))
    # A fold folder or a checkpoint file; anything else raises find_checkpoint's one-line error.
    return [find_checkpoint(run)]


@dataclass(frozen=True)
class SigmaScore:
    """A split's figures at one noise level."""

    sigma: float
    metrics: SplitMetrics


@dataclass(frozen=True)
class NoiseFold:
    """One fold's figures under noise: per split, the metrics at each sigma (sigma order)."""

    checkpoint: Path
    epoch: int
    test_subjects: list[str]
    synthetic: list[SigmaScore]
    real: list[SigmaScore] | None = field(default=None, metadata=OMIT_NONE)  # with a real test
    fold: int = field(default=0, metadata=TRANSIENT)  # the fold folder names it in noise.json

    def scores(self, split: str) -> list[SigmaScore]:
        """The figures of split `split` ("synthetic" or "real") at each sigma."""
        return self.real or [] if split == "real" else self.synthetic


@dataclass(frozen=True)
class SigmaSummary:
    """A split's figures at one noise level, as mean and spread over the folds."""

    sigma: float
    folds: int
    accuracy: MeanStd
    precision: MeanStd
    recall: MeanStd
    f1: MeanStd
    macro_f1: MeanStd


@dataclass(frozen=True)
class NoiseRun:
    """One run (one method) under noise: its folds, and per split the mean and std over folds."""

    run: str
    method: str
    folds: dict[str, NoiseFold]
    aggregate: dict[str, list[SigmaSummary]]
    #: Its name in plots and tables: the method, with the folder where two runs share a method.
    label: str = ""


@dataclass(frozen=True)
class FigureColumn:
    """One noise level of figure 7: the class the model gives the noisy sample, and its probability."""

    sigma: float
    predicted: str = field(metadata=json_name("class"))
    probability: float
    noisy_input: np.ndarray = field(metadata=TRANSIENT)  # H x W x 3 in [0, 1]
    attention: np.ndarray = field(metadata=TRANSIENT)  # I_att, H x W x 3 in [0, 1]


@dataclass(frozen=True)
class AttentionFigure:
    """Figure 7: one test sample of one FERAtt fold, its noisy inputs and I_att at each sigma."""

    run: str
    fold: int
    image_index: int
    true_class: str
    columns: list[FigureColumn]


@dataclass(frozen=True)
class NoiseResult:
    """Every run's accuracy under noise (figures 8-9), figure 7, and the files written (noise.json)."""

    shards: Path
    real_test: str | None
    noise: str  # what the noise is, in words
    lab_l: bool
    seed: int
    batch_size: int
    sigmas: list[float]
    splits: list[str]
    methods: list[NoiseRun]
    figure7: AttentionFigure | None = None
    kind: str = NOISE_KIND
    schema_version: int = NOISE_SCHEMA_VERSION
    feratt_version: str = __version__
    written: list[Path] = field(default_factory=list, metadata=TRANSIENT)


def _evaluate(
    trained: TrainedModel,
    loader: Iterable[Batch],
    sigmas: Sequence[float],
    noise: Noise,
    device: torch.device | str,
    progress: Progress | None = None,
) -> list[SigmaScore]:
    """Metrics at each sigma; sigma 0 goes through the noise path too, so the reference is like-for-like."""
    return [
        SigmaScore(
            sigma,
            run_model(
                trained, loader, device, Noise(sigma, noise.lab_l, noise.seed), progress=progress
            ).metrics(trained.classes),
        )
        for sigma in sigmas
    ]


def aggregate_folds(folds: Sequence[NoiseFold], split: str, sigmas: Sequence[float]) -> list[SigmaSummary]:
    """Mean and (population) standard deviation over folds of each summary metric, per sigma."""
    rows = []
    for i, sigma in enumerate(sigmas):
        figures = {}
        for key in SUMMARY_KEYS:
            values = [getattr(fold.scores(split)[i].metrics, key) for fold in folds]
            figures[key] = MeanStd(float(np.mean(values)), float(np.std(values)))
        rows.append(SigmaSummary(sigma=sigma, folds=len(folds), **figures))
    return rows


def _test_sample(loader: Iterable[Batch], index: int) -> dict[str, np.ndarray]:
    """Sample `index` of a split in loader order, as a batch of one."""
    seen = 0
    for raw in loader:
        count = len(raw["label"])
        if index < seen + count:
            row = index - seen
            return {key: np.asarray(value[row : row + 1]) for key, value in raw.items()}
        seen += count
    raise FerattError(
        f"test sample {index} is past the end of the test split ({seen} samples)", field="image_index"
    )


@torch.no_grad()
def attention_panels(
    trained: TrainedModel,
    sample: dict[str, np.ndarray],
    sigmas: Sequence[float],
    noise: Noise,
    device: torch.device | str,
    index: int = 0,
) -> list[FigureColumn]:
    """For each sigma: the noisy model input, I_att, and the top class with its softmax probability."""
    if "attention_image" not in trained.outputs:
        raise FerattError(f"{trained.checkpoint} is a {trained.method} model: it has no attention image")
    clean = sample["image"].astype(np.float32) / np.float32(255.0)
    panels = []
    for sigma in sigmas:
        # The same draws at every sigma, so the columns differ only by the noise's strength.
        rng = np.random.default_rng([noise.seed, index, 0xF167])
        noisy = add_noise(clean, Noise(sigma, noise.lab_l, noise.seed), rng)
        noisy_sample = {**sample, "image": torch.from_numpy(noisy), "clean_image": sample["image"]}
        batch = normalise_batch(noisy_sample, device)
        inputs, target = prepare_inputs(batch, trained.config)
        output = trained.model(inputs, target=target)
        probabilities = torch.softmax(output.logits.float(), dim=1)[0]
        top = int(probabilities.argmax())
        panels.append(
            FigureColumn(
                sigma=sigma,
                predicted=trained.classes[top],
                probability=float(probabilities[top]),
                noisy_input=inputs[0].clamp(0, 1).permute(1, 2, 0).cpu().numpy(),
                attention=output.attention_image[0].float().clamp(0, 1).permute(1, 2, 0).cpu().numpy(),
            )
        )
    return panels


def plot_attention_grid(panels: Sequence[FigureColumn], title: str, path: Path) -> None:
    """Figure 7: noisy inputs over their I_att, one column per noise level, top class as column title."""
    columns = len(panels)
    figure = new_figure(figsize=(1.7 * columns + 0.6, 4.2), layout="constrained")
    axes = figure.subplots(2, columns, squeeze=False)
    for column, panel in enumerate(panels):
        axes[0, column].set_title(
            f"σ = {panel.sigma:g}\n{panel.predicted} {panel.probability:.2f}", fontsize=9
        )
        for row, image in enumerate((panel.noisy_input, panel.attention)):
            axes[row, column].imshow(image, vmin=0.0, vmax=1.0, interpolation="nearest")
            axes[row, column].set_xticks([])
            axes[row, column].set_yticks([])
    axes[0, 0].set_ylabel("noisy input")
    axes[1, 0].set_ylabel("$I_{att}$")
    figure.suptitle(title, fontsize=10)
    save_png(figure, path)


def plot_noise_curves(methods: Sequence[NoiseRun], split: str, path: Path, title: str) -> None:
    """Figures 8/9: accuracy (%) against sigma, one curve per method, mean over folds with std bars."""
    figure = new_figure(figsize=(6.4, 4.2), layout="constrained")
    axis = figure.subplots()
    sigmas = [row.sigma for row in methods[0].aggregate[split]]
    # Evenly spaced positions: the paper's levels crowd below 0.1.
    positions = np.arange(len(sigmas))
    for method in methods:
        rows = method.aggregate[split]
        axis.errorbar(
            positions,
            [100.0 * row.accuracy.mean for row in rows],
            yerr=[100.0 * row.accuracy.std for row in rows],
            marker="o",
            capsize=3,
            label=method.label,
        )
    axis.set_xticks(positions, [f"{s:g}" for s in sigmas])
    axis.set_xlabel("noise σ")
    axis.set_ylabel("accuracy (%)")
    axis.grid(True, alpha=0.3)
    axis.legend()
    axis.set_title(title)
    save_png(figure, path)


def noise_csv(methods: Sequence[NoiseRun], splits: Sequence[str]) -> str:
    """One row per method, split and sigma: the accuracy's mean and std over folds."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["method", "split", "sigma", "accuracy_mean", "accuracy_std", "folds"])
    for method in methods:
        for split in splits:
            for row in method.aggregate[split]:
                writer.writerow(
                    [
                        method.label,
                        split,
                        f"{row.sigma:g}",
                        f"{row.accuracy.mean:.6f}",
                        f"{row.accuracy.std:.6f}",
                        row.folds,
                    ]
                )
    return buffer.getvalue()


def _labels(methods: Sequence[NoiseRun]) -> list[str]:
    """Each run's name in plots and tables: its method, with the folder where two runs share a method."""
    names = [m.method for m in methods]
    labels = [
        n if names.count(n) == 1 else f"{n} ({Path(m.run).name})" for n, m in zip(names, methods, strict=True)
    ]
    return [
        label if labels.count(label) == 1 else f"{m.method} ({m.run})"
        for label, m in zip(labels, methods, strict=True)
    ]


@dataclass
class _Scoring:
    """What every fold of every run is scored with: the test render, the noise and the loader settings."""

    render: RenderSet
    sigmas: list[float]
    noise: Noise
    real_test: Path | None
    batch_size: int
    workers: int
    device: torch.device
    image_index: int
    progress: Progress | None
    log: Log
    notes_seen: set[str] = field(default_factory=set)

    @property
    def splits(self) -> list[str]:
        return ["synthetic", *(["real"] if self.real_test is not None else [])]

    def loaders(self, subjects: list[str]) -> dict[str, Iterable[Batch]]:
        """The test loaders of `subjects`, synthetic first; each new note about the bank is logged once."""
        loaders: dict[str, Iterable[Batch]] = {
            "synthetic": synthetic_loader(self.render, subjects, self.batch_size, self.workers, verify=True)
        }
        if self.real_test is not None:
            loaders["real"], notes = real_loader(self.real_test, subjects, self.render, self.batch_size)
            for note in notes:
                if note not in self.notes_seen:
                    self.notes_seen.add(note)
                    self.log(f"note: {note}")
        return loaders


def _attention_figure(
    trained: TrainedModel, run: str | Path, loader: Iterable[Batch], scoring: _Scoring
) -> AttentionFigure:
    """Figure 7 from the chosen test sample of a FERAtt fold."""
    sample = _test_sample(loader, scoring.image_index)
    panels = attention_panels(
        trained, sample, scoring.sigmas, scoring.noise, scoring.device, scoring.image_index
    )
    return AttentionFigure(
        run=str(run),
        fold=trained.fold,
        image_index=scoring.image_index,
        true_class=trained.classes[int(sample["label"][0])],
        columns=panels,
    )


def _score_fold(
    trained: TrainedModel, subjects: list[str], scoring: _Scoring, loaders: dict[str, Iterable[Batch]]
) -> NoiseFold:
    """One fold's metrics at every sigma on every split, logged as a line of accuracies per split."""
    scores: dict[str, list[SigmaScore]] = {}
    for split, loader in loaders.items():
        scores[split] = _evaluate(
            trained, loader, scoring.sigmas, scoring.noise, scoring.device, scoring.progress
        )
        accuracies = " ".join(f"{row.sigma:g}:{row.metrics.accuracy:.3f}" for row in scores[split])
        scoring.log(f"{trained.method} fold {trained.fold} {split} accuracy at sigma {accuracies}")
    return NoiseFold(
        checkpoint=trained.checkpoint,
        epoch=trained.epoch,
        test_subjects=subjects,
        synthetic=scores["synthetic"],
        real=scores.get("real"),
        fold=trained.fold,
    )


def _score_run(
    run: str | Path, checkpoints: list[Path], scoring: _Scoring, figure: AttentionFigure | None
) -> tuple[NoiseRun, AttentionFigure | None]:
    """Every fold of one run under noise; figure 7 from its first fold when none is made yet and it can."""
    folds: dict[str, NoiseFold] = {}
    method: str | None = None
    for path in checkpoints:
        trained = load_trained(path, device=scoring.device)
        if method is not None and trained.method != method:
            raise FerattError(f"run {run} mixes methods ({method} and {trained.method} in {path})")
        method = trained.method
        check_render(trained, scoring.render)
        subjects = fold_test_subjects(trained, scoring.render)
        loaders = scoring.loaders(subjects)
        if figure is None and "attention_image" in trained.outputs:
            figure = _attention_figure(trained, run, loaders["synthetic"], scoring)
        folds[str(trained.fold)] = _score_fold(trained, subjects, scoring, loaders)
        del trained, loaders
    ordered = [folds[k] for k in sorted(folds, key=int)]
    aggregate = {split: aggregate_folds(ordered, split, scoring.sigmas) for split in scoring.splits}
    return NoiseRun(run=str(run), method=str(method), folds=folds, aggregate=aggregate), figure


def _write_outputs(result: NoiseResult, out: Path, log: Log) -> NoiseResult:
    """The curves of each split, figure 7 (if any), noise.json and noise.csv; the result with their paths."""
    written = [out / "noise.json", out / "noise.csv"]
    for split in result.splits:
        what = "real faces" if split == "real" else "synthetic test samples"
        path = out / f"noise-{split}.png"
        plot_noise_curves(result.methods, split, path, f"Accuracy under noise, {what}")
        written.append(path)
    figure = result.figure7
    if figure is None:
        log("note: no FERAtt run given: figure 7 (I_att under noise) skipped")
    else:
        title = (
            f"{Path(figure.run).name} fold {figure.fold}, "
            f"test sample {figure.image_index} ({figure.true_class})"
        )
        plot_attention_grid(figure.columns, title, out / "figure7.png")
        written.append(out / "figure7.png")
    write_json(out / "noise.json", encode(result))
    atomic_write_bytes(out / "noise.csv", noise_csv(result.methods, result.splits).encode())
    return dataclasses.replace(result, written=written)


@dataclass(frozen=True, kw_only=True)
class NoiseRequest:
    """Which runs `noise_robustness` scores under Gaussian noise, on which render, at which sigmas."""

    runs: tuple[str | os.PathLike[str], ...]  # run folders (or fold folders, or checkpoints)
    render: str | os.PathLike[str] | RenderSet
    sigmas: tuple[float, ...]  # noise sigmas as fractions of the full range; 0 is always scored
    out: str | os.PathLike[str] | None = None  # default: the first run's noise/ folder
    overwrite: bool = False  # replace an earlier run's results, or write into a folder of other files
    real_test: str | os.PathLike[str] | None = None
    lab_l: bool = False  # noise on Lab lightness rather than on RGB
    fold: str = "all"
    seed: int = 0
    image_index: int = 0  # the test sample of figure 7
    batch_size: int = 100
    workers: int = 0
    device: str | torch.device = "auto"

    def __post_init__(self) -> None:
        if isinstance(self.runs, str | os.PathLike):  # one run
            object.__setattr__(self, "runs", (self.runs,))
        check_fields(self)
        check_seed(self.seed)
        if not self.runs:
            raise FerattError("give at least one run", field="runs")
        if self.image_index < 0:
            raise FerattError(
                f"the image index must be 0 or more, not {self.image_index}", field="image_index"
            )
        for sigma in self.sigmas:
            if not 0 <= sigma <= MAX_SIGMA:
                raise FerattError(
                    f"a noise sigma must be a number from 0 to {MAX_SIGMA:g}, not {sigma}", field="sigmas"
                )


def noise_robustness(
    request: NoiseRequest | None = None,
    /,
    *,
    progress: Progress | None = None,
    log: Log | None = None,
    **fields: Any,
) -> NoiseResult:
    """Score every fold of every run at each sigma; write noise.json, noise.csv and the figures.

    The fields are NoiseRequest's. Sigma 0, the clean reference, is always scored.
    """
    request = request_from(NoiseRequest, request, fields)
    real_test, lab_l, seed, batch_size = request.real_test, request.lab_l, request.seed, request.batch_size
    render = RenderSet.open(request.render)
    runs, shards = [Path(run) for run in request.runs], render.path
    out = Path(request.out) if request.out is not None else runs[0] / "noise"
    scoring = _Scoring(
        render=render,
        sigmas=sorted({0.0, *(float(s) for s in request.sigmas)}),
        noise=Noise(0.0, lab_l, seed),
        real_test=Path(real_test) if real_test is not None else None,
        batch_size=batch_size,
        workers=request.workers,
        device=pick_device(request.device),
        image_index=request.image_index,
        progress=progress,
        log=log or no_log,
    )
    # Every run's checkpoints are found first, so that a bad RUN fails before any evaluation.
    checkpoints = [fold_checkpoints(run, request.fold) for run in runs]
    check_output(out, "noise", overwrite=request.overwrite)
    out.mkdir(parents=True, exist_ok=True)
    with exclusive(out, what=f"the noise output folder {out}"), render.reading():
        claim_output(out, "noise", overwrite=request.overwrite)
        methods: list[NoiseRun] = []
        figure: AttentionFigure | None = None
        for run, paths in zip(runs, checkpoints, strict=True):
            method, figure = _score_run(run, paths, scoring, figure)
            methods.append(method)
        methods = [
            dataclasses.replace(m, label=label) for m, label in zip(methods, _labels(methods), strict=True)
        ]
        result = NoiseResult(
            shards=shards,
            real_test=str(real_test) if real_test is not None else None,
            noise="zero-mean Gaussian on " + ("Lab L, sigma x 100" if lab_l else "RGB in [0, 1]"),
            lab_l=lab_l,
            seed=seed,
            batch_size=batch_size,
            sigmas=scoring.sigmas,
            splits=scoring.splits,
            methods=methods,
            figure7=figure,
        )
        return _write_outputs(result, out, scoring.log)
