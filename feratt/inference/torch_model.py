"""Class probabilities and attention images of a trained torch model on face images.

`feratt.inference.predict.predict` finds and frames the faces of photos and videos; this module runs
a loaded checkpoint on faces already cut out.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from feratt.errors import FerattError
from feratt.inference.inputs import (
    expand_image_paths,
    list_images,
    make_folder,
    prepare_image,
    read_rgb,
    unique_stems,
    write_png,
)
from feratt.training.checkpoints import TrainedModel

__all__ = [
    "Predictions",
    "expand_image_paths",
    "list_images",
    "predict_images",
    "prepare_image",
    "read_rgb",
    "unique_stems",
    "write_attention",
]


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


def write_attention(
    predictions: Predictions, paths: Sequence[str | os.PathLike[str]], folder: str | os.PathLike[str]
) -> list[Path]:
    """Write each image's model input and I_att as `<stem>-input.png` and `<stem>-attention.png`."""
    if predictions.attention is None:
        raise FerattError("this model produces no attention image (the baseline has none)")
    folder = make_folder(folder)
    written = []
    for stem, image, attention in zip(
        unique_stems(paths), predictions.inputs, predictions.attention, strict=True
    ):
        written.append(write_png(folder / f"{stem}-input.png", image))
        written.append(write_png(folder / f"{stem}-attention.png", attention))
    return written
