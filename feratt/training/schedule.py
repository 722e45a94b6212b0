"""What changes from epoch to epoch: the learning rate and the weights of the loss terms.

Both are pure functions of the configuration and the epoch, so a resumed run continues them exactly.

Learning rate, set at the start of each epoch (`lr` is the peak rate):
  - "constant": `lr`, after a linear warm-up of `warmup_epochs` epochs (lr * (e + 1) / (W + 1)) if any;
  - "cosine": the same warm-up, then a cosine from `lr` towards 0 over the remaining R epochs:
    epoch W + k trains at lr * (1 + cos(pi * k / R)) / 2;
  - "onecycle": a linear rise from lr / 25 to `lr` over `warmup_epochs` (30% of the epochs when 0), then
    a cosine down to lr / 250000 at the last epoch (torch's OneCycleLR defaults, stepped per epoch).

Loss weights: the first `attention_only_epochs` epochs train the attention loss alone (classification
and representation weights 0); over the next `ramp_epochs` R epochs those two weights grow linearly,
epoch k of the ramp (from 0) using (k + 1) / (R + 1) of their value; afterwards their full value.
Methods without an attention loss (the baseline) are not affected. The representation (manifold) weight
may also ramp on its own: over `representation_ramp_epochs` R epochs from the first epoch that trains
classification, epoch k of that ramp (from 0) uses k / R of it, so it starts at 0.

Attention pre-training (`pretrain_attention` P epochs, numbered -P to -1 before epoch 0) trains the
attention loss alone at the constant rate `lr`, G_rep frozen.
"""

from __future__ import annotations

import dataclasses
import math

from feratt.config.methods import get_method
from feratt.config.training import TrainConfig

#: OneCycleLR's defaults: the starting rate is lr / DIV, the final one lr / (DIV * FINAL_DIV).
ONECYCLE_DIV = 25.0
ONECYCLE_FINAL_DIV = 1e4


def _cosine(start: float, end: float, fraction: float) -> float:
    return end + (start - end) * (1.0 + math.cos(math.pi * fraction)) / 2.0


def epoch_lr(config: TrainConfig, epoch: int) -> float:
    """The learning rate of main training epoch `epoch` (from 0)."""
    lr, warmup, epochs = config.lr, config.warmup_epochs, config.epochs
    if epoch < 0:  # attention pre-training
        return lr
    if config.lr_schedule == "onecycle":
        rise = warmup or max(1, round(0.3 * epochs))
        low = lr / ONECYCLE_DIV
        if epoch < rise:
            return low + (lr - low) * epoch / rise
        return _cosine(lr, low / ONECYCLE_FINAL_DIV, (epoch - rise) / max(1, epochs - 1 - rise))
    if epoch < warmup:
        return lr * (epoch + 1) / (warmup + 1)
    if config.lr_schedule == "cosine":
        return _cosine(lr, 0.0, (epoch - warmup) / max(1, epochs - warmup))
    return lr


def weight_factor(config: TrainConfig, epoch: int) -> float:
    """The share of their value the classification and representation weights have in `epoch`."""
    step = epoch - config.attention_only_epochs
    if step < 0:
        return 0.0
    if step < config.ramp_epochs:
        return (step + 1) / (config.ramp_epochs + 1)
    return 1.0


def representation_factor(config: TrainConfig, epoch: int) -> float:
    """The share of its value the representation weight's own ramp gives it in `epoch`."""
    step, ramp = epoch - config.attention_only_epochs, config.representation_ramp_epochs
    return max(0, step) / ramp if ramp and step < ramp else 1.0


def epoch_config(config: TrainConfig, epoch: int, has_attention: bool = True) -> TrainConfig:
    """`config` with the loss weights that training epoch `epoch` uses (unchanged when at full weight)."""
    factor = weight_factor(config, epoch) if has_attention else 1.0
    representation = factor * (representation_factor(config, epoch) if has_attention else 1.0)
    if factor == 1.0 and representation == 1.0:
        return config
    return dataclasses.replace(
        config,
        classification_weight=config.classification_weight * factor,
        representation_weight=config.representation_weight * representation,
    )


def pretrain_epochs(config: TrainConfig) -> int:
    """The attention pre-training epochs before the first epoch (none for a method without attention)."""
    return config.pretrain_attention if get_method(config.method).attention else 0
