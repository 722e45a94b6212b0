"""The training methods, in one registry: each one's name, table title, network and loss terms.

This module imports no torch at load time, so that the command line can list the methods in its help.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from feratt.config.training import TrainConfig
from feratt.errors import FerattError

if TYPE_CHECKING:
    from torch import nn

    from feratt.training.losses import LossConfig


@dataclass(frozen=True)
class Method:
    """A training method: the network it trains and the loss terms it optimises (eq. 1, some terms out)."""

    name: str
    title: str
    model: str
    terms: tuple[str, ...]

    @property
    def attention(self) -> bool:
        """Whether the method's network has FERAtt's attention module."""
        return self.model == "feratt"


METHODS: dict[str, Method] = {
    method.name: method
    for method in (
        Method("baseline", "PreActResNet18", "baseline", ("classification",)),
        Method("feratt-cls", "FERAtt+Cls", "feratt", ("attention", "classification")),
        Method(
            "feratt-rep-cls", "FERAtt+Rep+Cls", "feratt", ("attention", "representation", "classification")
        ),
    )
}


def get_method(name: str) -> Method:
    """The method called `name`."""
    if name not in METHODS:
        raise FerattError(f"unknown method {name!r}; valid methods: {', '.join(METHODS)}", field="method")
    return METHODS[name]


def build_model(config: TrainConfig, num_classes: int) -> nn.Module:
    """The network of `config.method`, at the configured size (`config` resolved)."""
    from feratt.training.models import create_model

    model = get_method(config.method).model
    options: dict[str, Any] = {"num_classes": num_classes, "in_size": config.in_size, "width": config.width}
    if model == "feratt":
        options.update(
            attention_channels=config.attention_channels,
            ft_blocks=config.ft_blocks,
            rec_concat=config.rec_concat,
            teacher_forcing=config.teacher_forcing,
            attention_weights=config.attention_weights,
            detach_attention=config.detach_attention,
            identity_init=config.identity_init,
        )
    return create_model(model, **options)


def loss_config(config: TrainConfig) -> LossConfig:
    """The loss settings of `config`."""
    from feratt.training.losses import LossConfig, LossWeights

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
