"""Evaluate a trained model on its fold's test subjects: rendered samples, real faces, optional noise."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from feratt.artifacts.render import RenderSet
from feratt.codec import OMIT_NONE, TRANSIENT, encode
from feratt.errors import FerattError
from feratt.jsonfile import write_json
from feratt.progress import Log, Progress, no_log
from feratt.requests import check_fields, request_from
from feratt.training.checkpoints import TrainedModel, load_trained
from feratt.training.data import (
    Batch,
    ShardStream,
    make_loader,
    normalise_batch,
    prepare_inputs,
)
from feratt.training.device import SINGLE_PROCESS, Distributed, pick_device
from feratt.training.folds import FoldSplit, make_folds, split_fold
from feratt.training.metrics import classification_metrics, confusion_matrix
from feratt.training.realtest import RealTestLoader, load_real_faces

#: What the paper's tables call F1, spelled out wherever it is reported.
F1_DEFINITION = "paper F1 = 2PR/(P+R) of macro precision P and macro recall R"


@dataclass(frozen=True)
class Noise:
    """Zero-mean white Gaussian noise of one sigma, on RGB in [0, 1] or on Lab L (sigma x 100)."""

    sigma: float
    lab_l: bool = False
    seed: int = 0


def add_noise(images: np.ndarray, noise: Noise, rng: np.random.Generator) -> np.ndarray:
    """Noisy copies of float32 N x 3 x H x W RGB images in [0, 1], clipped back to [0, 1]."""
    if not noise.lab_l:
        noisy = images + rng.standard_normal(images.shape, dtype=np.float32) * np.float32(noise.sigma)
        return np.clip(noisy, 0.0, 1.0)
    out = np.empty_like(images)
    for i, image in enumerate(images):
        lab = cv2.cvtColor(np.ascontiguousarray(image.transpose(1, 2, 0)), cv2.COLOR_RGB2Lab)
        lightness = lab[..., 0] + rng.standard_normal(lab.shape[:2], dtype=np.float32) * np.float32(
            100.0 * noise.sigma
        )
        lab[..., 0] = np.clip(lightness, 0.0, 100.0)
        out[i] = np.clip(cv2.cvtColor(lab, cv2.COLOR_Lab2RGB), 0.0, 1.0).transpose(2, 0, 1)
    return out


@dataclass(frozen=True)
class SplitMetrics:
    """A model's figures on one test split: the paper's table metrics, per-class values, the confusion."""

    accuracy: float
    precision: float
    recall: float
    f1: float
    macro_f1: float
    per_class: dict[str, list[int | float | None]]  # per-class precision, recall, F1 and support
    classes: list[str]
    confusion: list[list[int]]
    samples: int
    f1_definition: str = F1_DEFINITION
    confusion_png: str | None = field(default=None, metadata=OMIT_NONE)  # beside the results JSON

    @classmethod
    def from_confusion(cls, confusion: np.ndarray, classes: list[str]) -> SplitMetrics:
        """The metrics of a confusion matrix (rows true classes, columns predicted ones)."""
        return cls(
            **classification_metrics(confusion),
            classes=list(classes),
            confusion=confusion.tolist(),
            samples=int(confusion.sum()),
        )


@dataclass
class Outputs:
    """Everything a pass of a model over a test split gives back, in sample order."""

    logits: np.ndarray  # N x C float32
    labels: np.ndarray  # N int64
    embeddings: np.ndarray | None  # N x D, FERAtt only
    num_classes: int

    @property
    def predictions(self) -> np.ndarray:
        return self.logits.argmax(axis=1)

    def confusion(self) -> np.ndarray:
        """Rows true classes, columns predicted ones."""
        return confusion_matrix(self.labels, self.predictions, self.num_classes)

    def metrics(self, classes: list[str]) -> SplitMetrics:
        """Accuracy, macro P/R, paper F1, macro-F1, per-class figures and the confusion matrix."""
        return SplitMetrics.from_confusion(self.confusion(), classes)


@dataclass(frozen=True)
class EvaluationResult:
    """A model's figures on its fold's test subjects: rendered samples and, when asked, real faces."""

    checkpoint: Path
    method: str
    fold: int
    epoch: int
    shards: Path
    test_subjects: list[str]
    synthetic: SplitMetrics
    real: SplitMetrics | None = field(default=None, metadata=OMIT_NONE)
    notes: list[str] = field(default_factory=list)
    #: Where the results JSON was written, if it was.
    path: Path | None = field(default=None, metadata=TRANSIENT)

    @property
    def splits(self) -> dict[str, SplitMetrics]:
        """The metrics of each split evaluated, synthetic first."""
        return {"synthetic": self.synthetic, **({"real": self.real} if self.real is not None else {})}


def fold_split(trained: TrainedModel, render: RenderSet) -> FoldSplit:
    """The model's fold split, from the render's subjects and the run's fold settings."""
    config = trained.config
    folds = make_folds(sorted(render.subjects), config.fold_size, config.seed)
    return split_fold(folds, trained.fold, config.val_subjects, config.seed)


def fold_test_subjects(trained: TrainedModel, render: RenderSet) -> list[str]:
    """The test subjects of the model's fold."""
    return fold_split(trained, render).test


def check_render(trained: TrainedModel, render: RenderSet) -> None:
    """Refuse a render whose classes differ from the model's."""
    if list(render.classes) != trained.classes:
        raise FerattError(
            f"{render.path} has classes {', '.join(render.classes)}; "
            f"the model was trained on {', '.join(trained.classes)}"
        )


def synthetic_loader(
    render: RenderSet | str | os.PathLike[str],
    subjects: list[str],
    batch_size: int,
    workers: int,
    verify: bool,
    place: Distributed = SINGLE_PROCESS,
):
    """The rendered samples of `subjects`, in a fixed order: all of them, or this rank's part of them."""
    stream = ShardStream(
        RenderSet.open(render).shards(subjects),
        shuffle=False,
        verify=verify,
        rank=place.rank,
        world_size=place.world_size,
        even=False,  # every sample scored exactly once, by one rank
    )
    return make_loader(stream, batch_size, workers)


def real_loader(bank: Path, subjects: list[str], render: RenderSet, batch_size: int):
    """The face bank's faces of `subjects`, framed like the render's; and notes about the bank."""
    faces, notes = load_real_faces(bank, subjects, render)
    return RealTestLoader(faces, batch_size), notes


def _sample_count(batches: Iterable[Batch]) -> int | None:
    """How many samples a shard loader gives (this rank's part of them); None for other batches."""
    samples = getattr(getattr(batches, "dataset", None), "samples_per_rank", None)
    return samples if isinstance(samples, int) else None


@torch.no_grad()
def run_model(
    trained: TrainedModel,
    batches: Iterable[Batch],
    device: torch.device | str = "cpu",
    noise: Noise | None = None,
    *,
    progress: Progress | None = None,
    allow_empty: bool = False,
) -> Outputs:
    """Logits (and embeddings) of the model on every batch; noise, if any, is seeded per batch.

    No batches at all is an error, unless `allow_empty` (a rank's part of a small split may be empty).
    """
    model, config = trained.model, trained.config
    model.eval()
    logits, labels, embeddings = [], [], []
    total, done = _sample_count(batches), 0
    for step, raw in enumerate(batches):
        if noise is not None:
            rng = np.random.default_rng([noise.seed, step, 0x401CE])
            images = np.asarray(raw["image"], dtype=np.float32) / np.float32(255.0)
            noisy = torch.from_numpy(add_noise(images, noise, rng))
            raw = {**raw, "image": noisy, "clean_image": raw["image"]}  # the attention target stays clean
        batch = normalise_batch(raw, device)
        inputs, target = prepare_inputs(batch, config)
        output = model(inputs, target=target)
        logits.append(output.logits.float().cpu().numpy())
        labels.append(batch["label"].cpu().numpy().astype(np.int64))
        if output.embedding is not None:
            embeddings.append(output.embedding.float().cpu().numpy())
        if progress is not None:
            done += len(labels[-1])
            progress(done, total)
    if not logits and not allow_empty:
        raise FerattError("the test split is empty: no samples of the fold's test subjects")
    if not logits:
        logits, labels = [np.zeros((0, len(trained.classes)), np.float32)], [np.zeros(0, np.int64)]
    return Outputs(
        logits=np.concatenate(logits),
        labels=np.concatenate(labels),
        embeddings=np.concatenate(embeddings) if embeddings else None,
        num_classes=len(trained.classes),
    )


def evaluate_model(
    trained: TrainedModel,
    render: RenderSet | str | os.PathLike[str],
    *,
    real_test: str | Path | None = None,
    batch_size: int = 100,
    workers: int = 0,
    verify: bool = True,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
    place: Distributed = SINGLE_PROCESS,
) -> EvaluationResult:
    """Metrics of a model on its fold's test subjects in `render` (and their real faces), with notes.

    Under torchrun (`place`), each rank scores its part of every split and all get the summed metrics.
    """
    render = RenderSet.open(render)
    check_render(trained, render)
    subjects = fold_test_subjects(trained, render)
    loader = synthetic_loader(render, subjects, batch_size, workers, verify, place)
    synthetic = split_metrics(trained, loader, device, place, progress)
    real, notes = None, []
    if real_test:
        faces, notes = load_real_faces(Path(real_test), subjects, render)
        batches = RealTestLoader(faces.part(place.rank, place.world_size), batch_size)
        real = split_metrics(trained, batches, device, place, progress)
    return EvaluationResult(
        checkpoint=trained.checkpoint,
        method=trained.method,
        fold=trained.fold,
        epoch=trained.epoch,
        shards=render.path,
        test_subjects=subjects,
        synthetic=synthetic,
        real=real,
        notes=notes,
    )


def split_metrics(
    trained: TrainedModel,
    batches: Iterable[Batch],
    device: torch.device | str,
    place: Distributed = SINGLE_PROCESS,
    progress: Progress | None = None,
) -> SplitMetrics:
    """The metrics of a test split: `batches` are this rank's part, and the confusion sums every rank's."""
    if place.world_size == 1:
        return run_model(trained, batches, device, progress=progress).metrics(trained.classes)
    outputs = run_model(trained, batches, device, progress=progress, allow_empty=True)
    confusion = place.sum(torch.as_tensor(outputs.confusion(), dtype=torch.int64, device=device))
    if int(confusion.sum()) == 0:
        raise FerattError("the test split is empty: no samples of the fold's test subjects")
    return SplitMetrics.from_confusion(confusion.cpu().numpy(), trained.classes)


def write_evaluation(result: EvaluationResult, out_file: Path, classes: list[str]) -> EvaluationResult:
    """Write a confusion-matrix PNG per split beside `out_file`, then the results JSON; the written result."""
    from feratt.experiments.figures import confusion_figure

    out_file.parent.mkdir(parents=True, exist_ok=True)
    figures: dict[str, SplitMetrics] = {}
    for split, metrics in result.splits.items():
        figure = out_file.with_name(f"{out_file.stem}-confusion-{split}.png")
        confusion_figure(
            np.asarray(metrics.confusion),
            classes,
            figure,
            title=f"{result.method}, fold {result.fold}, {split} test",
        )
        figures["real" if split == "real" else "synthetic"] = dataclasses.replace(
            metrics, confusion_png=figure.name
        )
    result = dataclasses.replace(result, **figures, path=out_file)
    write_json(out_file, encode(result))
    return result


@dataclass(frozen=True, kw_only=True)
class EvaluateRequest:
    """Which model `evaluate` scores (a run folder, fold folder or checkpoint), on which render, and how."""

    run: str | os.PathLike[str]  # a run folder, a fold folder or a checkpoint file
    render: str | os.PathLike[str] | RenderSet  # the render whose test subjects it is scored on
    fold: int | None = None  # the fold, for a run folder of several
    which: str = "best"  # "best" (on validation) or "last"
    real_test: str | os.PathLike[str] | None = None  # a face bank: also score the test subjects' real faces
    out_file: str | os.PathLike[str] | None = None  # the results JSON; default: beside the checkpoint
    batch_size: int = 100
    workers: int = 0
    device: str | torch.device = "auto"

    def __post_init__(self) -> None:
        check_fields(self)
        if self.which not in ("best", "last"):
            raise FerattError(f"which checkpoint: 'best' or 'last', not {self.which!r}", field="which")


def evaluate(
    request: EvaluateRequest | None = None,
    /,
    *,
    progress: Progress | None = None,
    log: Log | None = None,
    **fields: Any,
) -> EvaluationResult:
    """Evaluate the model a run folder, fold folder or checkpoint names on its fold's test subjects.

    Writes the results JSON (`out_file`, by default beside the checkpoint) and a confusion-matrix
    PNG per split beside it. The fields are EvaluateRequest's.
    """
    request = request_from(EvaluateRequest, request, fields)
    target = pick_device(request.device)
    trained = load_trained(request.run, fold=request.fold, which=request.which, device=target)
    render = RenderSet.open(request.render)
    with render.reading():
        result = evaluate_model(
            trained,
            render,
            real_test=request.real_test,
            batch_size=request.batch_size,
            workers=request.workers,
            device=target,
            progress=progress,
        )
    for note in result.notes:
        (log or no_log)(f"note: {note}")
    default = trained.checkpoint.parent / f"evaluation-{trained.checkpoint.stem}.json"
    out_file = Path(request.out_file) if request.out_file is not None else default
    return write_evaluation(result, out_file, trained.classes)
