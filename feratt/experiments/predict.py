"""Class probabilities and attention images of a trained model on image files."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from feratt.atomic import atomic_path
from feratt.datasets.imageio import IMAGE_EXTENSIONS, is_image_file, read_image
from feratt.errors import BadInputFile, FerattError
from feratt.experiments.evaluate import checkpoint_fields
from feratt.training.checkpoints import TrainedModel, load_trained
from feratt.training.device import pick_device


@dataclass
class Predictions:
    """Softmax probabilities (N, C) with their classes, the model inputs and I_att (FERAtt only)."""

    classes: list[str]
    probabilities: np.ndarray
    inputs: np.ndarray
    attention: np.ndarray | None

    @property
    def labels(self) -> list[str]:
        """The most probable class name of each image."""
        return [self.classes[i] for i in self.probabilities.argmax(axis=1)]


def prepare_image(image: np.ndarray, size: int) -> np.ndarray:
    """An RGB (or grey) uint8 image centre-cropped to a square, then area-resized to `size` x `size` RGB."""
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an HxW or HxWx3 image, got shape {image.shape}")
    height, width = image.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = np.ascontiguousarray(image[top : top + side, left : left + side], dtype=np.uint8)
    if side == size:
        return square
    return cv2.resize(square, (size, size), interpolation=cv2.INTER_AREA)


def read_rgb(path: str | os.PathLike[str]) -> np.ndarray:
    """An image file as RGB uint8 HxWx3; a FerattError naming the file when it cannot be read."""
    try:
        image, _ = read_image(path)
    except BadInputFile as exc:
        raise FerattError(str(exc)) from None
    return image if image.ndim == 3 else np.repeat(image[:, :, None], 3, axis=2)


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """The image files directly inside `folder` (common extensions, no hidden files), sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and is_image_file(p))


def expand_image_paths(paths: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Each path that is a file, and the images of each that is a folder; a FerattError for an empty one."""
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            images = list_images(path)
            if not images:
                extensions = ", ".join(sorted(e[1:] for e in IMAGE_EXTENSIONS))
                raise FerattError(f"folder {path} holds no images ({extensions})")
            found.extend(images)
        elif path.exists():
            found.append(path)
        else:
            raise FerattError(f"{path} does not exist")
    return found


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    scaled = images.detach().float().clamp(0.0, 1.0).mul(255.0).round()
    return scaled.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def predict_images(trained: TrainedModel, images: Sequence[np.ndarray], batch_size: int = 32) -> Predictions:
    """Run the model on RGB uint8 images (prepared with prepare_image when not already at its size)."""
    size = int(trained.config.in_size)
    prepared = [prepare_image(image, size) for image in images]
    inputs = np.stack(prepared) if prepared else np.zeros((0, size, size, 3), np.uint8)
    model = trained.model
    device = next(model.parameters()).device
    probabilities, attention = [], []
    with torch.inference_mode():
        for start in range(0, len(inputs), batch_size):
            batch = torch.from_numpy(inputs[start : start + batch_size]).to(device)
            x = batch.permute(0, 3, 1, 2).float().div_(255.0)
            output = model(x)
            probabilities.append(torch.softmax(output.logits.double(), dim=1).cpu().numpy())
            if output.attention_image is not None:
                attention.append(_to_uint8(output.attention_image))
    classes = list(trained.classes)
    return Predictions(
        classes=classes,
        probabilities=np.concatenate(probabilities) if probabilities else np.zeros((0, len(classes))),
        inputs=inputs,
        attention=np.concatenate(attention) if attention else None,
    )


def unique_stems(paths: Sequence[str | os.PathLike[str]]) -> list[str]:
    """The file stems of `paths`, with -1, -2, ... added where two would be the same."""
    used: set[str] = set()
    stems = []
    for path in paths:
        stem = candidate = Path(path).stem
        number = 0
        while candidate in used:
            number += 1
            candidate = f"{stem}-{number}"
        used.add(candidate)
        stems.append(candidate)
    return stems


def write_attention(
    predictions: Predictions, paths: Sequence[str | os.PathLike[str]], folder: str | os.PathLike[str]
) -> list[Path]:
    """Write each image's model input and I_att as `<stem>-input.png` and `<stem>-attention.png`."""
    from feratt.datasets.preview import encode_png

    if predictions.attention is None:
        raise FerattError("this model produces no attention image (the baseline has none)")
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FerattError(f"cannot create {folder}: {exc}") from None
    written = []
    for stem, image, attention in zip(
        unique_stems(paths), predictions.inputs, predictions.attention, strict=True
    ):
        for suffix, picture in (("input", image), ("attention", attention)):
            target = folder / f"{stem}-{suffix}.png"
            try:
                with atomic_path(target) as tmp:
                    tmp.write_bytes(encode_png(picture))
            except OSError as exc:
                raise FerattError(f"cannot write {target}: {exc}") from None
            written.append(target)
    return written


@dataclass
class Prediction:
    """One image's class probabilities (in the model's class order) and its most probable class."""

    path: Path
    probabilities: dict[str, float]
    label: str

    @property
    def probability(self) -> float:
        """The probability of the predicted class."""
        return self.probabilities[self.label]

    def ranked(self) -> list[tuple[str, float]]:
        """(class, probability) pairs, most probable first."""
        return sorted(self.probabilities.items(), key=lambda item: -item[1])

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "probabilities": dict(self.probabilities), "prediction": self.label}


@dataclass
class PredictionResult:
    """The predictions of one trained model on a list of images, and the attention images written."""

    checkpoint: Path
    method: str
    fold: int
    epoch: int
    classes: list[str]
    predictions: list[Prediction]
    attention_written: list[Path] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document of `feratt predict --json` (key order as printed)."""
        return {
            **checkpoint_fields(self),
            "classes": self.classes,
            "predictions": [prediction.to_dict() for prediction in self.predictions],
        }


def predict(
    checkpoint: str | os.PathLike[str],
    images: Sequence[str | os.PathLike[str]],
    *,
    fold: int | None = None,
    device: str | torch.device = "auto",
    save_attention: str | os.PathLike[str] | None = None,
) -> PredictionResult:
    """Classify image files (and the images of folders) with a run folder, fold folder or checkpoint.

    With `save_attention`, each model input and its I_att are written as PNGs into that folder.
    """
    trained = load_trained(checkpoint, fold=fold, device=pick_device(device))
    if save_attention is not None and not trained.is_feratt:
        raise FerattError(
            f"saving attention images needs a FERAtt model; {trained.checkpoint} is {trained.method}, "
            "which has no attention image",
            field="save_attention",
        )
    paths = expand_image_paths(images)
    size = int(trained.config.in_size)
    outputs = predict_images(trained, [prepare_image(read_rgb(path), size) for path in paths])
    predictions = [
        Prediction(path, dict(zip(outputs.classes, map(float, row), strict=True)), label)
        for path, row, label in zip(paths, outputs.probabilities, outputs.labels, strict=True)
    ]
    return PredictionResult(
        checkpoint=trained.checkpoint,
        method=trained.method,
        fold=trained.fold,
        epoch=trained.epoch,
        classes=outputs.classes,
        predictions=predictions,
        attention_written=write_attention(outputs, paths, save_attention)
        if save_attention is not None
        else [],
    )
