"""Evaluate a trained model on its fold's test subjects: rendered samples, real faces, optional noise."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from feratt.errors import FerattError
from feratt.experiments.runs import TrainedModel
from feratt.manifests.folds import FoldSplit, make_folds, split_fold
from feratt.training.data import (
    ShardStream,
    make_loader,
    normalise_batch,
    read_render_index,
    shards_for_subjects,
)
from feratt.training.metrics import classification_metrics
from feratt.training.realtest import RealTestLoader, load_real_faces
from feratt.training.trainer import model_name, prepare_inputs

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
        index = self.labels * self.num_classes + self.predictions
        return np.bincount(index, minlength=self.num_classes**2).reshape(self.num_classes, self.num_classes)

    def metrics(self, classes: list[str]) -> dict[str, Any]:
        """Accuracy, macro P/R, paper F1, macro-F1, per-class figures and the confusion matrix."""
        confusion = self.confusion()
        result = classification_metrics(confusion)
        result["f1_definition"] = F1_DEFINITION
        result["classes"] = list(classes)
        result["confusion"] = confusion.tolist()
        result["samples"] = len(self.labels)
        return result


def fold_split(trained: TrainedModel, render_index: dict[str, Any]) -> FoldSplit:
    """The model's fold split, from the render's subjects and the run's fold settings."""
    config = trained.config
    folds = make_folds(sorted(render_index["subjects"]), config.fold_size, config.seed)
    return split_fold(folds, trained.fold, config.val_subjects, config.seed)


def fold_test_subjects(trained: TrainedModel, render_index: dict[str, Any]) -> list[str]:
    """The test subjects of the model's fold."""
    return fold_split(trained, render_index).test


def check_render(trained: TrainedModel, render_index: dict[str, Any], shards: Path) -> None:
    """Refuse a render whose classes differ from the model's."""
    if list(render_index["classes"]) != trained.classes:
        raise FerattError(
            f"{shards} has classes {', '.join(render_index['classes'])}; "
            f"the model was trained on {', '.join(trained.classes)}"
        )


def synthetic_loader(shards: Path, subjects: list[str], batch_size: int, workers: int, verify: bool):
    """The rendered samples of `subjects`, in a fixed order."""
    stream = ShardStream(shards_for_subjects(shards, subjects), shuffle=False, verify=verify)
    return make_loader(stream, batch_size, workers)


def real_loader(bank: Path, subjects: list[str], render_index: dict[str, Any], batch_size: int):
    """The face bank's faces of `subjects`, framed like the render's; and notes about the bank."""
    faces, notes = load_real_faces(bank, subjects, render_index)
    return RealTestLoader(faces, batch_size), notes


@torch.no_grad()
def run_model(
    trained: TrainedModel,
    batches: Iterable[dict[str, Any]],
    device: torch.device | str = "cpu",
    noise: Noise | None = None,
) -> Outputs:
    """Logits (and embeddings) of the model on every batch; noise, if any, is seeded per batch."""
    model, config = trained.model, trained.config
    model.eval()
    logits, labels, embeddings = [], [], []
    feratt = model_name(config.method) == "feratt"
    for step, raw in enumerate(batches):
        if noise is not None:
            rng = np.random.default_rng([noise.seed, step, 0x401CE])
            images = np.asarray(raw["image"], dtype=np.float32) / np.float32(255.0)
            raw = {**raw, "image": torch.from_numpy(add_noise(images, noise, rng))}
        batch = normalise_batch(raw, device)
        inputs, target = prepare_inputs(batch, config)
        output = model(inputs, target=target) if feratt else model(inputs)
        logits.append(output.logits.float().cpu().numpy())
        labels.append(batch["label"].cpu().numpy().astype(np.int64))
        if output.embedding is not None:
            embeddings.append(output.embedding.float().cpu().numpy())
    if not logits:
        raise FerattError("the test split is empty: no samples of the fold's test subjects")
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
    real_test: str | None = None,
    batch_size: int = 100,
    workers: int = 0,
    verify: bool = True,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Metrics of a model on its fold's test subjects in `shards` (and their real faces), with notes."""
    index = read_render_index(shards)
    check_render(trained, index, shards)
    subjects = fold_test_subjects(trained, index)
    results: dict[str, Any] = {
        "checkpoint": str(trained.checkpoint),
        "method": trained.method,
        "fold": trained.fold,
        "epoch": trained.epoch,
        "shards": str(shards),
        "test_subjects": subjects,
        "notes": [],
    }
    loader = synthetic_loader(shards, subjects, batch_size, workers, verify=verify)
    results["synthetic"] = run_model(trained, loader, device).metrics(trained.classes)
    if real_test:
        batches, results["notes"] = real_loader(Path(real_test), subjects, index, batch_size)
        results["real"] = run_model(trained, batches, device).metrics(trained.classes)
    return results


def evaluate_to_files(
    run_path: Path,
    shards: Path,
    *,
    fold: int | None = None,
    which: str = "best",
    real_test: str | None = None,
    out_file: Path | None = None,
    batch_size: int = 100,
    workers: int = 0,
    device: torch.device | str = "cpu",
) -> tuple[Path, dict[str, Any]]:
    """Evaluate the model `run_path` names; write the results JSON and confusion PNGs; return both."""
    import json

    from feratt.atomic import atomic_write_bytes
    from feratt.experiments.figures import confusion_figure
    from feratt.experiments.runs import load_trained

    trained = load_trained(run_path, fold=fold, which=which, device=device)
    results = evaluate_model(
        trained, shards, real_test=real_test, batch_size=batch_size, workers=workers, device=device
    )
    out_file = out_file or trained.checkpoint.parent / f"evaluation-{trained.checkpoint.stem}.json"
    out_file.parent.mkdir(parents=True, exist_ok=True)
    for split in ("synthetic", "real"):
        if split in results:
            figure = out_file.with_name(f"{out_file.stem}-confusion-{split}.png")
            confusion_figure(
                np.asarray(results[split]["confusion"]),
                trained.classes,
                figure,
                title=f"{trained.method}, fold {trained.fold}, {split} test",
            )
            results[split]["confusion_png"] = figure.name
    atomic_write_bytes(out_file, (json.dumps(results, indent=2, sort_keys=True) + "\n").encode())
    return out_file, results
