"""Networks by name, timm-style: `create_model("feratt" | "baseline", num_classes=..., **kwargs)`.

Every model's forward is `model(x, target=None) -> ModelOutput`. Pretrained weights come only from a
local file the user names (`attention_weights=` for FERAtt's ResNet34 encoder); nothing is downloaded.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from feratt.errors import FerattError
from feratt.training.models.blocks import ModelOutput
from feratt.training.models.feratt import FERAtt
from feratt.training.models.preact_resnet import Baseline, PreActResNet, preact_resnet18
from feratt.training.models.resnet34 import ResNet34Encoder, load_resnet34_weights

__all__ = [
    "Baseline",
    "FERAtt",
    "ModelOutput",
    "PreActResNet",
    "ResNet34Encoder",
    "create_model",
    "list_models",
    "load_resnet34_weights",
    "preact_resnet18",
]

_MODELS: dict[str, type[nn.Module]] = {"baseline": Baseline, "feratt": FERAtt}


def list_models() -> list[str]:
    """The names `create_model` knows, sorted."""
    return sorted(_MODELS)


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build model `name` with `kwargs` (num_classes is required); FerattError for unknown names/options."""
    if name not in _MODELS:
        raise FerattError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    cls = _MODELS[name]
    parameters = inspect.signature(cls.__init__).parameters
    valid = [p for p in parameters if p != "self"]
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise FerattError(f"model {name!r} has no option(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
    if "num_classes" not in kwargs:
        raise FerattError(f"model {name!r} needs num_classes")
    return cls(**kwargs)
