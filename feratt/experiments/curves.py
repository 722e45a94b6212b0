"""An experiment's training figures: learning curves from metrics.jsonl, and the I_att strips of its folds."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from feratt.artifacts.run import STRIP_FILE, FoldFolder
from feratt.experiments.tables import method_title

#: The passes of an epoch record drawn as curves, one figure each.
CURVE_PARTS: tuple[str, ...] = ("train", "validation", "test")
#: The panels' order: accuracy, the loss terms, then the attention scores.
CURVE_KEYS: tuple[str, ...] = (
    "accuracy",
    "loss_total",
    "loss_attention",
    "loss_representation",
    "loss_classification",
    "att_mse",
    "att_psnr",
    "att_iou",
)


def fold_dirs(out: Path, method: str, folds: list[int]) -> list[Path]:
    """The fold folders of `method` in the experiment folder `out`."""
    return [out / "runs" / method / f"fold-{fold}" for fold in folds]


def mean_curves(folders: list[Path], part: str) -> tuple[list[int], dict[str, np.ndarray]]:
    """The epochs and, per key of CURVE_KEYS, the mean over the folders' metrics.jsonl of `part`'s values.

    Only epochs that every folder has scored `part` at (test parts may be scored every few epochs), and
    keys that every such record has, are drawn.
    """
    runs = [
        {int(record["epoch"]): record[part] for record in FoldFolder(folder).records() if part in record}
        for folder in folders
    ]
    runs = [run for run in runs if run]
    if not runs:
        return [], {}
    epochs = sorted(set.intersection(*(set(run) for run in runs)))
    keys = [key for key in CURVE_KEYS if all(key in run[e] for run in runs for e in epochs)]
    curves = {key: np.mean([[run[e][key] for e in epochs] for run in runs], axis=0) for key in keys}
    return epochs, curves


def curve_figures(out: Path, methods: list[str], folds: list[int]) -> list[str]:
    """One `curves-<part>.png` per pass (accuracy and each loss term per epoch, a line per method); names."""
    from feratt.experiments.figures import curves_figure

    which = f"fold {folds[0]}" if len(folds) == 1 else f"mean over folds {', '.join(map(str, folds))}"
    names = []
    for part in CURVE_PARTS:
        lines = {}
        for method in methods:
            epochs, curves = mean_curves(fold_dirs(out, method, folds), part)
            if epochs:
                lines[method_title(method)] = (epochs, curves)
        if lines:
            path = out / f"curves-{part}.png"
            curves_figure(lines, CURVE_KEYS, path, title=f"{part}, {which}")
            names.append(path.name)
    return names


def strip_figures(out: Path, methods: list[str], fold: int) -> list[str]:
    """One `attention-strip-<method>.png` per method whose fold `fold` saved an I_att strip; names."""
    from feratt.experiments.figures import strip_figure

    names = []
    for method in methods:
        source = fold_dirs(out, method, [fold])[0] / STRIP_FILE
        if not source.is_file():
            continue
        with np.load(source) as strip:
            arrays = {key: strip[key] for key in ("inputs", "targets", "epochs", "attention")}
        path = out / f"attention-strip-{method}.png"
        strip_figure(arrays, path, title=f"{method_title(method)}, fold {fold}: I_att of fixed test samples")
        names.append(path.name)
    return names
