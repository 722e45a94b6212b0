"""What a training configuration builds: its method's network and its loss settings."""

from __future__ import annotations

import dataclasses

from torch import nn

from feratt.config.methods import get_method
from feratt.config.training import TrainConfig
from feratt.training.losses import LossConfig, LossWeights
from feratt.training.models import create_model, model_entry

#: The training options; a network gets those its constructor names (in_size, width, FERAtt's options).
_CONFIG_FIELDS = frozenset(field.name for field in dataclasses.fields(TrainConfig))


def build_model(config: TrainConfig, num_classes: int) -> nn.Module:
    """The network of `config.method`, at the configured size (`config` resolved)."""
    name = get_method(config.method).model
    options: dict[str, object] = {
        option: getattr(config, option) for option in model_entry(name).options if option in _CONFIG_FIELDS
    }
    return create_model(name, num_classes=num_classes, **options)


def loss_config(config: TrainConfig) -> LossConfig:
    """The loss settings of `config`."""
    return LossConfig(
        attention_kind=config.attention_loss,
        classification_kind=config.classification_loss,
        sigma=config.sigma,
        class_means=config.class_means,
        weights=LossWeights(
            attention=config.attention_weight,
            representation=config.representation_weight,
            classification=config.classification_weight,
        ),
    )
