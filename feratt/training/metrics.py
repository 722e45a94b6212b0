"""Evaluation metrics as the paper reports them: accuracy, macro precision and recall, its "F1", and k-NN.

Macro means run over the classes that appear in the truth or the predictions, as scikit-learn does; a
class with neither (e.g. one absent from a test fold and never predicted) is left out rather than
counted as 0. Within the included classes an undefined 0/0 ratio counts as 0 (scikit-learn's
zero_division=0): a class never predicted has precision 0, a predicted class with no true samples
has recall 0.
"""

from __future__ import annotations

from typing import Any, TypedDict

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor


def _numpy(values: Any) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def confusion_matrix(labels: Any, predictions: Any, num_classes: int) -> np.ndarray:
    """Counts of (true, predicted) pairs: rows are true classes, columns predicted ones."""
    truth = _numpy(labels).astype(np.int64).ravel()
    guess = _numpy(predictions).astype(np.int64).ravel()
    if truth.shape != guess.shape:
        raise ValueError(f"{truth.size} labels but {guess.size} predictions")
    for name, values in (("label", truth), ("prediction", guess)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(f"a {name} lies outside [0, {num_classes})")
    counts = np.bincount(truth * num_classes + guess, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def paper_f1(precision: float, recall: float) -> float:
    """The paper's "F1": the harmonic mean of the macro precision and the macro recall."""
    return 2.0 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    return np.divide(numerator, denominator, out=np.zeros(len(numerator)), where=denominator > 0)


class PerClassMetrics(TypedDict):
    """Lists indexed by class: precision, recall, F1 (None for a class left out of the means), support."""

    precision: list[float | None]
    recall: list[float | None]
    f1: list[float | None]
    support: list[int]


class ClassificationMetrics(TypedDict):
    """classification_metrics' figures, a dict as metrics.jsonl and the evaluation JSON hold them."""

    accuracy: float
    precision: float
    recall: float
    f1: float
    macro_f1: float
    per_class: PerClassMetrics


def classification_metrics(confusion: Any) -> ClassificationMetrics:
    """Accuracy, macro precision/recall, the paper's F1, macro-F1 and per-class values of a confusion matrix.

    `per_class` holds lists indexed by class; entries of classes left out of the macro means are None.
    An empty matrix gives NaN for every summary value.
    """
    matrix = _numpy(confusion).astype(np.float64)
    correct = np.diag(matrix)
    support = matrix.sum(1)
    predicted = matrix.sum(0)
    total = matrix.sum()
    included = (support > 0) | (predicted > 0)
    precision = _ratio(correct, predicted)
    recall = _ratio(correct, support)
    f1 = _ratio(2.0 * precision * recall, precision + recall)
    accuracy = macro_p = macro_r = paper = macro_f1 = float("nan")
    if included.any():
        macro_p, macro_r = float(precision[included].mean()), float(recall[included].mean())
        accuracy, paper = float(correct.sum() / total), paper_f1(macro_p, macro_r)
        macro_f1 = float(f1[included].mean())

    def listed(values: np.ndarray) -> list[float | None]:
        return [float(v) if keep else None for v, keep in zip(values, included, strict=True)]

    per_class = PerClassMetrics(
        precision=listed(precision), recall=listed(recall), f1=listed(f1), support=[int(s) for s in support]
    )
    return ClassificationMetrics(
        accuracy=accuracy, precision=macro_p, recall=macro_r, f1=paper, macro_f1=macro_f1, per_class=per_class
    )


def knn_accuracy(
    train_embeddings: Any, train_labels: Any, test_embeddings: Any, test_labels: Any, k: int = 11
) -> float:
    """Accuracy of a k-NN classifier (Euclidean, majority vote) fitted on the training embeddings.

    k is capped at the number of training embeddings; no test embeddings gives NaN.
    """
    train_x = _numpy(train_embeddings).reshape(len(train_embeddings), -1)
    test_x = _numpy(test_embeddings).reshape(len(test_embeddings), -1)
    if len(train_x) == 0:
        raise ValueError("k-NN needs at least one training embedding")
    if len(test_x) == 0:
        return float("nan")
    from sklearn.neighbors import KNeighborsClassifier  # here: training itself needs no scikit-learn

    classifier = KNeighborsClassifier(n_neighbors=min(k, len(train_x)))
    classifier.fit(train_x, _numpy(train_labels).ravel())
    return float(classifier.score(test_x, _numpy(test_labels).ravel()))


class MetricAccumulator:
    """Accumulates a confusion matrix (and optionally embeddings) batch by batch, mergeable across ranks."""

    def __init__(
        self, num_classes: int, device: torch.device | str = "cpu", keep_embeddings: bool = False
    ) -> None:
        self.num_classes = num_classes
        self.keep_embeddings = keep_embeddings
        self._confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
        self._embeddings: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []

    @classmethod
    def from_confusion(cls, confusion: Any, keep_embeddings: bool = False) -> MetricAccumulator:
        """An accumulator holding `confusion` (e.g. a state() summed over ranks)."""
        matrix = confusion if isinstance(confusion, torch.Tensor) else torch.as_tensor(np.asarray(confusion))
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"a confusion matrix is square, not {tuple(matrix.shape)}")
        result = cls(matrix.shape[0], device=matrix.device, keep_embeddings=keep_embeddings)
        result._confusion += matrix.to(torch.int64)
        return result

    def update(self, labels: Tensor, predictions: Tensor, embeddings: Tensor | None = None) -> None:
        """Add one batch; `predictions` may be class indices or (N, C) logits (argmax taken)."""
        if predictions.ndim == 2:
            predictions = predictions.argmax(dim=1)
        device = self._confusion.device
        labels = labels.detach().to(device, torch.int64)
        index = labels * self.num_classes + predictions.detach().to(device, torch.int64)
        self._confusion += torch.bincount(index, minlength=self.num_classes**2).view_as(self._confusion)
        if self.keep_embeddings and embeddings is not None:
            self._embeddings.append(embeddings.detach().float().flatten(1).cpu().numpy())
            self._labels.append(labels.cpu().numpy())

    def merge(self, other: MetricAccumulator) -> MetricAccumulator:
        """Add another accumulator's counts (and embeddings) into this one; returns self."""
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge {other.num_classes} classes into {self.num_classes}")
        self._confusion += other._confusion.to(self._confusion.device)
        self._embeddings.extend(other._embeddings)
        self._labels.extend(other._labels)
        return self

    def state(self) -> Tensor:
        """A copy of the confusion matrix as an int64 tensor, for the caller to all_reduce."""
        return self._confusion.clone()

    def reduce(self) -> MetricAccumulator:
        """Sum the counts (and gather the embeddings) over all ranks when torch.distributed is running."""
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(self._confusion)
            if self.keep_embeddings:
                gathered: list[Any] = [None] * dist.get_world_size()
                dist.all_gather_object(gathered, (self._embeddings, self._labels))
                self._embeddings = [e for part in gathered for e in part[0]]
                self._labels = [y for part in gathered for y in part[1]]
        return self

    @property
    def count(self) -> int:
        """The number of samples seen."""
        return int(self._confusion.sum().item())

    def confusion(self) -> np.ndarray:
        """The confusion matrix (rows true, columns predicted)."""
        return self._confusion.cpu().numpy()

    def metrics(self) -> ClassificationMetrics:
        """classification_metrics of the accumulated confusion matrix."""
        return classification_metrics(self.confusion())

    def embeddings(self) -> tuple[np.ndarray, np.ndarray]:
        """The kept embeddings (N, D) and their labels (N,), in arrival order."""
        if not self._embeddings:
            return np.zeros((0, 0), dtype=np.float32), np.zeros(0, dtype=np.int64)
        return np.concatenate(self._embeddings), np.concatenate(self._labels)
