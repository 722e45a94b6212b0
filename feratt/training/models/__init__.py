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
    "MODEL_PRESETS",
    "Baseline",
    "FERAtt",
    "ModelOutput",
    "PreActResNet",
    "ResNet34Encoder",
    "create_model",
    "list_models",
    "load_resnet34_weights",
    "preact_resnet18",
    "preset_kwargs",
]

_MODELS: dict[str, type[nn.Module]] = {"baseline": Baseline, "feratt": FERAtt}

#: Size presets: the paper's network, and a narrow one that trains on a CPU.
MODEL_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"in_size": 128, "width": 1.0},
    "cpu-small": {"in_size": 64, "width": 0.25},
}


def list_models() -> list[str]:
    """The names `create_model` knows, sorted."""
    return sorted(_MODELS)


def preset_kwargs(preset: str) -> dict[str, Any]:
    """A copy of the keyword arguments of size preset `preset`; FerattError for an unknown one."""
    if preset not in MODEL_PRESETS:
        raise FerattError(f"unknown model preset {preset!r}; known presets: {', '.join(MODEL_PRESETS)}")
    return dict(MODEL_PRESETS[preset])


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
