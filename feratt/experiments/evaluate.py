"""Evaluate a trained model on its fold's test subjects: rendered samples, real faces, optional noise."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
import torch

from feratt.artifacts.render import RenderSet
from feratt.errors import FerattError
from feratt.jsonfile import write_json
from feratt.progress import Log, Progress, no_log
from feratt.training.checkpoints import TrainedModel, load_trained
from feratt.training.data import (
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


@dataclass
class SplitMetrics:
    """A model's figures on one test split: the paper's table metrics, per-class values, the confusion."""

    accuracy: float
    precision: float
    recall: float
    f1: float
    macro_f1: float
    per_class: dict[str, list[Any]]
    classes: list[str]
    confusion: list[list[int]]
    samples: int
    f1_definition: str = F1_DEFINITION
    confusion_png: str | None = None

    @classmethod
    def from_confusion(cls, confusion: np.ndarray, classes: list[str]) -> SplitMetrics:
        """The metrics of a confusion matrix (rows true classes, columns predicted ones)."""
        return cls(
            **classification_metrics(confusion),
            classes=list(classes),
            confusion=confusion.tolist(),
            samples=int(confusion.sum()),
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SplitMetrics:
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if self.confusion_png is None:
            del data["confusion_png"]
        return data


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


class FromCheckpoint(Protocol):
    """A result about one trained model, named by its checkpoint."""

    checkpoint: Path
    method: str
    fold: int
    epoch: int


def checkpoint_fields(result: FromCheckpoint) -> dict[str, Any]:
    """The JSON fields that say which model a result is of."""
    return {
        "checkpoint": str(result.checkpoint),
        "method": result.method,
        "fold": result.fold,
        "epoch": result.epoch,
    }


@dataclass
class EvaluationResult:
    """A model's figures on its fold's test subjects: rendered samples and, when asked, real faces."""

    checkpoint: Path
    method: str
    fold: int
    epoch: int
    shards: Path
    test_subjects: list[str]
    synthetic: SplitMetrics
    real: SplitMetrics | None = None
    notes: list[str] = field(default_factory=list)
    #: Where the results JSON was written, if it was.
    path: Path | None = None

    @property
    def splits(self) -> dict[str, SplitMetrics]:
        """The metrics of each split evaluated, synthetic first."""
        return {"synthetic": self.synthetic, **({"real": self.real} if self.real is not None else {})}

    def to_dict(self) -> dict[str, Any]:
        """The results JSON."""
        return {
            **checkpoint_fields(self),
            "shards": str(self.shards),
            "test_subjects": list(self.test_subjects),
            "notes": list(self.notes),
            **{split: metrics.to_dict() for split, metrics in self.splits.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvaluationResult:
        """A results JSON read back (keys it does not know, such as a cache's stamp, are ignored)."""
        return cls(
            checkpoint=Path(data["checkpoint"]),
            method=data["method"],
            fold=data["fold"],
            epoch=data["epoch"],
            shards=Path(data["shards"]),
            test_subjects=list(data["test_subjects"]),
            synthetic=SplitMetrics.from_dict(data["synthetic"]),
            real=SplitMetrics.from_dict(data["real"]) if "real" in data else None,
            notes=list(data["notes"]),
        )


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
    render: RenderSet,
    subjects: list[str],
    batch_size: int,
    workers: int,
    verify: bool,
    place: Distributed = SINGLE_PROCESS,
):
    """The rendered samples of `subjects`, in a fixed order: all of them, or this rank's part of them."""
    stream = ShardStream(
        render.shards(subjects),
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


def _sample_count(batches: Iterable[dict[str, Any]]) -> int | None:
    """How many samples a shard loader gives (this rank's part of them); None for other batches."""
    samples = getattr(getattr(batches, "dataset", None), "samples_per_rank", None)
    return samples if isinstance(samples, int) else None


@torch.no_grad()
def run_model(
    trained: TrainedModel,
    batches: Iterable[dict[str, Any]],
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
    shards: Path,
    *,
    real_test: str | Path | None = None,
    batch_size: int = 100,
    workers: int = 0,
    verify: bool = True,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
    place: Distributed = SINGLE_PROCESS,
) -> EvaluationResult:
    """Metrics of a model on its fold's test subjects in `shards` (and their real faces), with notes.

    Under torchrun (`place`), each rank scores its part of every split and all get the summed metrics.
    """
    render = RenderSet.open(shards)
    check_render(trained, render)
    subjects = fold_test_subjects(trained, render)
    loader = synthetic_loader(render, subjects, batch_size, workers, verify, place)
    result = EvaluationResult(
        checkpoint=trained.checkpoint,
        method=trained.method,
        fold=trained.fold,
        epoch=trained.epoch,
        shards=shards,
        test_subjects=subjects,
        synthetic=split_metrics(trained, loader, device, place, progress),
    )
    if real_test:
        faces, result.notes = load_real_faces(Path(real_test), subjects, render)
        batches = RealTestLoader(faces.part(place.rank, place.world_size), batch_size)
        result.real = split_metrics(trained, batches, device, place, progress)
    return result


def split_metrics(
    trained: TrainedModel,
    batches: Iterable[dict[str, Any]],
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


def write_evaluation(result: EvaluationResult, out_file: Path, classes: list[str]) -> None:
    """Write a confusion-matrix PNG per split beside `out_file`, then the results JSON itself."""
    from feratt.experiments.figures import confusion_figure

    out_file.parent.mkdir(parents=True, exist_ok=True)
    for split, metrics in result.splits.items():
        figure = out_file.with_name(f"{out_file.stem}-confusion-{split}.png")
        confusion_figure(
            np.asarray(metrics.confusion),
            classes,
            figure,
            title=f"{result.method}, fold {result.fold}, {split} test",
        )
        metrics.confusion_png = figure.name
    write_json(out_file, result.to_dict())
    result.path = out_file


def evaluate(
    run_or_checkpoint: str | Path,
    shards: str | Path,
    *,
    fold: int | None = None,
    which: str = "best",
    real_test: str | Path | None = None,
    out_file: str | Path | None = None,
    batch_size: int = 100,
    workers: int = 0,
    device: str | torch.device = "auto",
    progress: Progress | None = None,
    log: Log | None = None,
) -> EvaluationResult:
    """Evaluate the model a run folder, fold folder or checkpoint names on its fold's test subjects.

    Writes the results JSON (`out_file`, by default beside the checkpoint) and a confusion-matrix
    PNG per split beside it.
    """
    target = pick_device(device)
    trained = load_trained(run_or_checkpoint, fold=fold, which=which, device=target)
    result = evaluate_model(
        trained,
        Path(shards),
        real_test=real_test,
        batch_size=batch_size,
        workers=workers,
        device=target,
        progress=progress,
    )
    for note in result.notes:
        (log or no_log)(f"note: {note}")
    default = trained.checkpoint.parent / f"evaluation-{trained.checkpoint.stem}.json"
    write_evaluation(result, Path(out_file) if out_file is not None else default, trained.classes)
    return result
