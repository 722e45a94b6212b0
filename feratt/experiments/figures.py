"""Figures of the experiment reports: CD diagrams, confusion matrices, learning curves, I_att strips (PNG)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from feratt.atomic import atomic_path


def new_figure(**options: Any) -> Any:
    """A matplotlib Figure on its own Agg canvas: no pyplot, so no global backend or figure state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(**options)
    FigureCanvasAgg(figure)
    return figure


def save_png(figure: Any, path: Path, tight: bool = False) -> Path:
    """Write a figure as a PNG atomically (its folder created) and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120, bbox_inches="tight" if tight else None)
    return path


def cd_groups(ranks: dict[str, float], cd: float) -> list[list[str]]:
    """Maximal runs of methods, in rank order, whose ranks all lie within `cd` of each other."""
    order = sorted(ranks, key=lambda name: ranks[name])
    groups: list[list[str]] = []
    for start in range(len(order)):
        end = start
        while end + 1 < len(order) and ranks[order[end + 1]] - ranks[order[start]] < cd:
            end += 1
        group = order[start : end + 1]
        if len(group) > 1 and not any(set(group) <= set(g) for g in groups):
            groups.append(group)
    return groups


def cd_diagram(
    ranks: dict[str, float],
    cd: float,
    path: Path,
    title: str | None = None,
    lower_is_better_axis_label: str = "average rank",
) -> Path:
    """Demsar's critical-difference diagram: average ranks on an axis, CD bar, bars over tied groups."""
    if len(ranks) < 2:
        raise ValueError(f"a critical-difference diagram needs at least 2 methods, not {len(ranks)}")
    if not (np.isfinite(list(ranks.values())).all() and np.isfinite(cd) and cd > 0):
        raise ValueError("ranks and the critical difference must be finite, and the CD positive")
    path = Path(path)
    k = len(ranks)
    order = sorted(ranks, key=lambda name: ranks[name])
    groups = cd_groups(ranks, cd)
    half = (k + 1) // 2
    # Labels hang below the group bars so that no bar crosses a label's line.
    drop = 0.4 + 0.25 * len(groups)
    figure = new_figure(figsize=(7, 1.8 + 0.35 * (half + drop)))
    axes = figure.subplots()
    axes.set_xlim(0.5, k + 0.5)
    axes.set_ylim(-(half + drop - 0.4), 2.6)
    axes.axis("off")
    axes.hlines(0, 1, k, color="black", linewidth=1)
    for tick in range(1, k + 1):
        axes.vlines(tick, 0, 0.15, color="black", linewidth=1)
        axes.text(tick, 0.3, str(tick), ha="center", va="bottom", fontsize=9)
    axes.text(k + 0.45, 0.3, lower_is_better_axis_label, ha="left", va="bottom", fontsize=9)
    axes.hlines(1.7, 1, 1 + cd, color="black", linewidth=1.5)
    axes.vlines([1, 1 + cd], 1.6, 1.8, color="black", linewidth=1.5)
    axes.text(1 + cd / 2, 1.85, f"CD = {cd:.2f}", ha="center", va="bottom", fontsize=9)
    for i, name in enumerate(order):
        rank = ranks[name]
        left = i < half
        row = -(i if left else k - 1 - i) - drop
        side = 0.6 if left else k + 0.4
        axes.vlines(rank, row, 0, color="black", linewidth=0.8)
        axes.hlines(row, min(rank, side), max(rank, side), color="black", linewidth=0.8)
        label = f"{name} ({rank:.2f})"
        axes.text(side, row, label, ha="right" if left else "left", va="center", fontsize=9)
    for j, group in enumerate(groups):
        low, high = ranks[group[0]], ranks[group[-1]]
        axes.hlines(-0.3 - 0.25 * j, low - 0.03, high + 0.03, color="black", linewidth=4)
    if title:
        axes.set_title(title, fontsize=9)
    return save_png(figure, path, tight=True)


def confusion_figure(confusion: Any, classes: list[str], path: Path, title: str | None = None) -> Path:
    """A confusion matrix as a PNG: counts in each cell, shaded by the row's share (recall)."""
    matrix = np.asarray(confusion, dtype=np.int64)
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = 1.2 + 0.55 * len(classes)
    figure = new_figure(figsize=(size + 1, size))
    axes = figure.subplots()
    image = axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="share of the true class")
    axes.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    axes.set_yticks(range(len(classes)), classes)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    for (row, column), count in np.ndenumerate(matrix):
        colour = "white" if shares[row, column] > 0.5 else "black"
        axes.text(column, row, str(count), ha="center", va="center", fontsize=8, color=colour)
    if title:
        axes.set_title(title, fontsize=9)
    return save_png(figure, path, tight=True)


#: Panel titles of the learning curves, by metrics.jsonl key.
CURVE_LABELS = {
    "accuracy": "accuracy",
    "loss_total": "total loss",
    "loss_attention": "attention loss",
    "loss_representation": "representation loss",
    "loss_classification": "classification loss",
    "att_mse": "I_att MSE",
    "att_psnr": "I_att PSNR (dB)",
    "att_iou": "gate IoU with the face mask",
}


def curves_figure(
    lines: dict[str, tuple[list[int], Mapping[str, object]]], keys: tuple[str, ...], path: Path, title: str
) -> Path:
    """Learning curves: a panel per key that some line has, a line per name (its epochs and values)."""
    shown = [key for key in keys if any(key in curves for _, curves in lines.values())]
    columns = min(4, len(shown))
    rows = -(-len(shown) // columns)
    from matplotlib.ticker import MaxNLocator

    figure = new_figure(figsize=(3.2 * columns, 2.6 * rows + 0.6), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for panel, key in zip(axes, shown, strict=False):
        for colour, (name, (epochs, curves)) in enumerate(lines.items()):
            if key in curves:  # a method keeps its colour in every panel
                panel.plot(epochs, curves[key], marker="o", markersize=3, label=name, color=f"C{colour}")
        panel.set_title(CURVE_LABELS.get(key, key), fontsize=9)
        panel.set_xlabel("epoch", fontsize=8)
        panel.xaxis.set_major_locator(MaxNLocator(integer=True))
        panel.tick_params(labelsize=7)
    for panel in axes[len(shown) :]:
        panel.axis("off")
    axes[0].legend(fontsize=7)
    figure.suptitle(title, fontsize=10)
    return save_png(figure, path, tight=True)


def strip_figure(strip: dict[str, np.ndarray], path: Path, title: str) -> Path:
    """A row per sample: its input, its attention target, then I_att after each saved epoch."""
    inputs, targets, epochs, attention = (strip[k] for k in ("inputs", "targets", "epochs", "attention"))
    columns = [("input", inputs), ("target", targets)]
    columns += [(f"epoch {int(e)}", attention[i]) for i, e in enumerate(epochs)]
    rows = len(inputs)
    figure = new_figure(figsize=(1.2 * len(columns), 1.2 * rows + 0.5))
    axes = figure.subplots(rows, len(columns), squeeze=False)
    for column, (label, images) in enumerate(columns):
        axes[0, column].set_title(label, fontsize=8)
        for row in range(rows):
            axes[row, column].imshow(images[row])
            axes[row, column].axis("off")
    figure.suptitle(title, fontsize=9)
    return save_png(figure, path, tight=True)
