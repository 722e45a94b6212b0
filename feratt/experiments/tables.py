"""The paper's result tables: per-method mean and spread over folds, as markdown and CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from feratt.codec import TRANSIENT, JSONValue

if TYPE_CHECKING:
    from feratt.experiments.evaluate import SplitMetrics

#: The paper's table columns: metric key in the evaluation JSON, and its heading.
TABLE_COLUMNS = (("accuracy", "Acc."), ("precision", "Prec."), ("recall", "Rec."), ("f1", "F1"))


@dataclass(frozen=True)
class MetricSummary:
    """One metric of one method over folds, in %: the mean, the population std and each fold's value."""

    mean: float
    std: float
    folds: list[float]

    @classmethod
    def of(cls, fractions: Iterable[float]) -> MetricSummary:
        """The summary of per-fold values given as fractions in [0, 1]."""
        values = [float(v) for v in fractions]
        return cls(
            mean=100 * float(np.mean(values)),
            std=100 * float(np.std(values)),
            folds=[100 * v for v in values],
        )


#: Method name -> metric key -> its summary over folds, methods in the order compared.
Table = dict[str, dict[str, MetricSummary]]


@dataclass(frozen=True)
class SplitTable:
    """One test split of an experiment: its table and significance tests (as results.json holds them)."""

    table: Table
    tests: dict[str, JSONValue]  # the significance tests' results, or a note why there are none
    markdown: str = field(default="", metadata=TRANSIENT)  # the table's markdown, not in results.json


def method_title(method: str) -> str:
    """The name a method goes by in the paper's tables (its own name when it has none)."""
    from feratt.config.methods import METHODS

    return METHODS[method].title if method in METHODS else method


def summarise(per_fold: Mapping[str, Sequence[SplitMetrics]]) -> Table:
    """Per method: mean and std over folds (in %) of each table metric, from each fold's metrics."""
    return {
        method: {key: MetricSummary.of(getattr(row, key) for row in rows) for key, _ in TABLE_COLUMNS}
        for method, rows in per_fold.items()
    }


def table_markdown(table: Table) -> str:
    """The paper's layout: one row per method, mean +- std over folds of Acc., Prec., Rec. and F1.

    With a single fold there is no spread to show, so the cells hold that fold's figures alone.
    """
    head = "| Method | " + " | ".join(title for _, title in TABLE_COLUMNS) + " |"
    lines = [head, "|---|" + "---:|" * len(TABLE_COLUMNS)]
    for method, values in table.items():
        cells = [
            f"{values[key].mean:.2f}"
            if len(values[key].folds) == 1
            else f"{values[key].mean:.2f} ± {values[key].std:.2f}"
            for key, _ in TABLE_COLUMNS
        ]
        lines.append(f"| {method_title(method)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def table_csv(table: Table) -> str:
    """The table as CSV: method, then mean and std of each metric, in %."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["method", *(f"{key}_{stat}" for key, _ in TABLE_COLUMNS for stat in ("mean", "std"))])
    for method, values in table.items():
        cells = [f"{getattr(values[key], stat):.4f}" for key, _ in TABLE_COLUMNS for stat in ("mean", "std")]
        writer.writerow([method, *cells])
    return buffer.getvalue()
