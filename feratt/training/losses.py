"""FERAtt's losses (paper section 3.2-3.3): attention, structured Gaussian manifold, classification.

Where the paper and the authors' code disagree, the paper is the default and the code is an option:
  - classification: BCE on one-hot targets (paper) or cross-entropy ("ce", the authors' code);
  - attention: pixel-wise MSE clamped at 30 (paper time) or mean(tanh(3|t - I_att|)) ("tanh", later code).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from feratt.errors import FerattError

ATTENTION_KINDS: tuple[str, ...] = ("mse", "tanh")
CLASSIFICATION_KINDS: tuple[str, ...] = ("bce", "ce")
#: How L_rep's class means treat the sample being scored: included (the authors' code) or left out.
CLASS_MEANS: tuple[str, ...] = ("batch", "leave-one-out")
#: The terms of the total loss (eq. 1); a method optimises some of them (feratt.config.methods).
LOSS_TERMS: tuple[str, ...] = ("attention", "representation", "classification")


def _full(values: Tensor) -> Tensor:
    """`values` in at least single precision (autocast may hand over half-precision tensors)."""
    return values if values.dtype in (torch.float32, torch.float64) else values.float()


def _check_kind(kind: str, known: tuple[str, ...], what: str) -> None:
    if kind not in known:
        raise FerattError(f"unknown {what} {kind!r}; valid: {', '.join(known)}")


def attention_loss(attention_image: Tensor, target: Tensor, kind: str = "mse", clamp: float = 30.0) -> Tensor:
    """L_att between the attention image and its target, both normalised the same way by the caller."""
    _check_kind(kind, ATTENTION_KINDS, "attention loss")
    if attention_image.shape != target.shape:
        raise ValueError(
            f"attention image {tuple(attention_image.shape)} and target {tuple(target.shape)} differ"
        )
    difference = _full(target) - _full(attention_image)
    if kind == "tanh":
        # The authors' later robust variant; bounded by 1, so no clamp.
        return torch.tanh(3.0 * difference.abs()).mean()
    # Paper time clamped the (unweighted) MSE at 30; above it the term gives no gradient.
    return difference.square().mean().clamp(max=clamp)


def classification_loss(logits: Tensor, labels: Tensor, kind: str = "bce") -> Tensor:
    """L_cls: BCE-with-logits on one-hot targets ("bce", the paper) or cross-entropy ("ce", their code)."""
    _check_kind(kind, CLASSIFICATION_KINDS, "classification loss")
    logits = _full(logits)
    if kind == "ce":
        return F.cross_entropy(logits, labels)
    classes = torch.arange(logits.shape[1], device=labels.device)
    targets = (labels[:, None] == classes[None, :]).to(logits.dtype)
    return F.binary_cross_entropy_with_logits(logits, targets)


def gaussian_manifold_loss(
    embedding: Tensor, labels: Tensor, num_classes: int, sigma: float = 1.0, class_means: str = "batch"
) -> Tensor:
    """L_rep (eqs. 2-5): squared error between the Gaussian class posterior of each z and its one-hot label.

    mu_j is the mean of the batch's embeddings of class j, recomputed every batch and differentiated through.
    The posterior uses isotropic Gaussians with a shared sigma and uniform priors over the classes present in
    the batch, so the normalising constants cancel and it is a softmax of -||z - mu_j||^2 / (2 sigma^2);
    absent classes are skipped. Unlike the authors' exp-then-normalise code, the softmax cannot underflow to
    0/0 for far-apart points. An empty batch gives a 0 still connected to `embedding` so backward works.

    `class_means="batch"` (the authors' code) counts each sample in its own class mean. With few samples per
    class, even label-independent embeddings then lie nearest their own class mean, more so as z grows, so
    the loss can fall without the classes separating. "leave-one-out" scores each sample against its own
    class mean computed without it; a sample alone in its class has no such mean and is not scored.
    """
    if sigma <= 0:
        raise FerattError(f"sigma must be positive, not {sigma}")
    _check_kind(class_means, CLASS_MEANS, "kind of class means")
    z = _full(embedding.flatten(1))
    if z.shape[0] == 0:
        return z.sum() * 0.0
    # Element-wise operations only: no sync with the device and no autocast down-casting to half precision.
    classes = torch.arange(num_classes, device=labels.device)
    onehot = (labels[:, None] == classes[None, :]).to(z.dtype)
    counts = onehot.sum(0)
    means = torch.zeros(num_classes, z.shape[1], device=z.device, dtype=z.dtype).index_add(0, labels, z)
    means = means / counts.clamp(min=1.0)[:, None]
    distances = (z[:, None, :] - means[None, :, :]).square().sum(-1)
    weights = torch.ones_like(counts[labels])
    if class_means == "leave-one-out":
        # z - (n mu - z) / (n - 1) = n / (n - 1) (z - mu): the own-class distance grows by (n / (n - 1))^2.
        own_counts = counts[labels]
        weights = (own_counts > 1).to(z.dtype)
        scale = (own_counts / (own_counts - 1.0).clamp(min=1.0)).square()
        distances = distances * torch.where(onehot.bool(), scale[:, None], torch.ones_like(distances))
    scores = (-distances / (2.0 * sigma**2)).masked_fill(counts[None, :] == 0, float("-inf"))
    posterior = torch.softmax(scores, dim=1)
    errors = (posterior - onehot).square().sum(1)
    return (errors * weights).sum() / weights.sum().clamp(min=1.0)


@dataclass
class LossWeights:
    """The weight of each loss term in the total (the paper-time code used 10 for attention)."""

    attention: float = 10.0
    representation: float = 1.0
    classification: float = 1.0


@dataclass
class LossConfig:
    """How each loss term is computed and weighted."""

    attention_kind: str = "mse"
    classification_kind: str = "bce"
    sigma: float = 1.0
    class_means: str = "batch"
    weights: LossWeights = field(default_factory=LossWeights)
    attention_clamp: float = 30.0

    def __post_init__(self) -> None:
        _check_kind(self.attention_kind, ATTENTION_KINDS, "attention loss")
        _check_kind(self.classification_kind, CLASSIFICATION_KINDS, "classification loss")
        _check_kind(self.class_means, CLASS_MEANS, "kind of class means")
        if self.sigma <= 0:
            raise FerattError(f"sigma must be positive, not {self.sigma}")


def _required(output: Any, name: str, term: str) -> Tensor:
    value = getattr(output, name, None)
    if value is None:
        raise FerattError(
            f"the {term} loss needs the model's {name.replace('_', ' ')}, which it did not give"
        )
    return value


def compute_losses(
    terms: Sequence[str],
    output: Any,
    target_image: Tensor | None,
    labels: Tensor,
    num_classes: int,
    config: LossConfig,
) -> dict[str, Tensor]:
    """The unweighted loss `terms` by name, and "total", their weighted sum.

    `output` is duck-typed: it needs `logits`, plus `attention_image` or `embedding` for terms using them.
    """
    unknown = [term for term in terms if term not in LOSS_TERMS]
    if unknown or not terms:
        raise FerattError(f"unknown loss terms {list(terms)!r}; valid terms: {', '.join(LOSS_TERMS)}")
    losses: dict[str, Tensor] = {}
    if "attention" in terms:
        if target_image is None:
            raise FerattError("the attention loss needs an attention target image")
        losses["attention"] = attention_loss(
            _required(output, "attention_image", "attention"),
            target_image,
            kind=config.attention_kind,
            clamp=config.attention_clamp,
        )
    if "representation" in terms:
        losses["representation"] = gaussian_manifold_loss(
            _required(output, "embedding", "representation"),
            labels,
            num_classes,
            sigma=config.sigma,
            class_means=config.class_means,
        )
    if "classification" in terms:
        losses["classification"] = classification_loss(
            _required(output, "logits", "classification"), labels, kind=config.classification_kind
        )
    losses["total"] = torch.stack([getattr(config.weights, name) * losses[name] for name in terms]).sum()
    return losses
