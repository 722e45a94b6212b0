"""Networks by name, timm-style: `create_model("feratt" | "baseline", num_classes=..., **kwargs)`.

Every model's forward is `model(x, target=None) -> ModelOutput`, and each class declares the output
fields it fills (`outputs`) and the multiple its input side must be (`input_multiple`); see `registry`.
Pretrained weights come only from a local file the user names (`attention_weights=` for FERAtt's
ResNet34 encoder); nothing is downloaded.
"""

from __future__ import annotations

# Importing the model modules registers their networks.
from feratt.training.models.blocks import ModelOutput
from feratt.training.models.feratt import FERAtt
from feratt.training.models.preact_resnet import Baseline, PreActResNet, preact_resnet18
from feratt.training.models.registry import (
    ModelEntry,
    create_model,
    list_models,
    model_entry,
    model_outputs,
    register_model,
)
from feratt.training.models.resnet34 import ResNet34Encoder, load_resnet34_weights

__all__ = [
    "Baseline",
    "FERAtt",
    "ModelEntry",
    "ModelOutput",
    "PreActResNet",
    "ResNet34Encoder",
    "create_model",
    "list_models",
    "load_resnet34_weights",
    "model_entry",
    "model_outputs",
    "preact_resnet18",
    "register_model",
]
