"""Confusion matrices, the paper's F1, absent classes, k-NN and the batch accumulator."""

import numpy as np
import pytest
import torch
from sklearn.metrics import precision_recall_fscore_support

from feratt.training.metrics import (
    MetricAccumulator,
    classification_metrics,
    confusion_matrix,
    knn_accuracy,
    paper_f1,
)


def test_confusion_matrix_counts():
    labels = [0, 0, 1, 2, 2, 2]
    predictions = [0, 1, 1, 2, 0, 2]
    expected = np.array([[1, 1, 0], [0, 1, 0], [1, 0, 2]])
    np.testing.assert_array_equal(confusion_matrix(labels, predictions, 3), expected)
    np.testing.assert_array_equal(
        confusion_matrix(torch.tensor(labels), torch.tensor(predictions), 3), expected
    )
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix([0, 3], [0, 0], 3)


def test_accuracy_precision_recall():
    metrics = classification_metrics(confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2], 3))
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    assert metrics["precision"] == pytest.approx((1 / 2 + 1 / 2 + 1) / 3)
    assert metrics["recall"] == pytest.approx((1 / 2 + 1 + 2 / 3) / 3)
    assert metrics["per_class"]["support"] == [2, 1, 3]


def test_paper_f1_with_table_2_numbers():
    assert round(paper_f1(77.58, 75.49), 2) == 76.52
    assert round(paper_f1(0.7758, 0.7549) * 100, 2) == 76.52
    assert paper_f1(0.0, 0.0) == 0.0


def test_f1_is_the_harmonic_mean_of_macro_values_not_macro_f1():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 200)
    predictions = np.where(rng.random(200) < 0.6, labels, rng.integers(0, 5, 200))
    predictions[labels == 4] = 0  # an unbalanced error pattern so the two F1s differ
    metrics = classification_metrics(confusion_matrix(labels, predictions, 5))
    assert metrics["f1"] == pytest.approx(paper_f1(metrics["precision"], metrics["recall"]))
    p, r, f, _ = precision_recall_fscore_support(labels, predictions, average="macro", zero_division=0)
    assert (metrics["precision"], metrics["recall"], metrics["macro_f1"]) == pytest.approx((p, r, f))
    assert abs(metrics["f1"] - metrics["macro_f1"]) > 1e-3


def test_absent_classes_are_left_out_of_macro_means():
    labels = [0, 0, 1, 1, 2, 2]
    predictions = [0, 1, 1, 1, 2, 0]
    three = classification_metrics(confusion_matrix(labels, predictions, 3))
    eight = classification_metrics(confusion_matrix(labels, predictions, 8))
    for key in ("accuracy", "precision", "recall", "f1", "macro_f1"):
        assert eight[key] == pytest.approx(three[key])
    assert eight["per_class"]["recall"][3:] == [None] * 5
    # A class predicted but absent from the truth does count, as in scikit-learn: its recall is 0.
    with_false_positive = classification_metrics(confusion_matrix(labels, [0, 1, 1, 1, 2, 5], 8))
    p, r, _, _ = precision_recall_fscore_support(labels, [0, 1, 1, 1, 2, 5], average="macro", zero_division=0)
    assert (with_false_positive["precision"], with_false_positive["recall"]) == pytest.approx((p, r))


def test_empty_confusion_gives_nan():
    metrics = classification_metrics(np.zeros((3, 3), dtype=int))
    assert np.isnan(metrics["accuracy"]) and np.isnan(metrics["f1"])


def test_knn_on_separable_data_is_perfect():
    rng = np.random.default_rng(1)
    centres = np.eye(4, 16) * 10

    def sample(n):
        labels = rng.integers(0, 4, n)
        return centres[labels] + rng.standard_normal((n, 16)) * 0.5, labels

    train_x, train_y = sample(200)
    test_x, test_y = sample(80)
    assert knn_accuracy(train_x, train_y, test_x, test_y, k=11) == 1.0
    assert knn_accuracy(torch.tensor(train_x[:5]), train_y[:5], test_x, test_y) <= 1.0  # k capped at 5


def test_accumulator_matches_confusion_matrix_and_merges():
    rng = np.random.default_rng(2)
    labels = torch.tensor(rng.integers(0, 4, 50))
    logits = torch.tensor(rng.standard_normal((50, 4)))
    embeddings = torch.tensor(rng.standard_normal((50, 6)))
    first = MetricAccumulator(4, keep_embeddings=True)
    second = MetricAccumulator(4, keep_embeddings=True)
    first.update(labels[:20], logits[:20], embeddings[:20])
    second.update(labels[20:], logits[20:].argmax(1), embeddings[20:])
    expected = confusion_matrix(labels, logits.argmax(1), 4)
    summed = first.state() + second.state()  # what all_reduce does across ranks
    np.testing.assert_array_equal(MetricAccumulator.from_confusion(summed).confusion(), expected)
    merged = first.merge(second)
    np.testing.assert_array_equal(merged.confusion(), expected)
    assert merged.count == 50
    assert merged.metrics() == classification_metrics(expected)
    kept, kept_labels = merged.embeddings()
    np.testing.assert_allclose(kept, embeddings.float().numpy())
    np.testing.assert_array_equal(kept_labels, labels.numpy())
    assert merged.reduce() is merged  # no process group: nothing to reduce
    state = merged.state()
    state.zero_()
    assert merged.count == 50  # state() is a copy
