"""Robustness to noise (the paper's figures 7-9): trained runs scored on test splits under Gaussian noise."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from feratt import __version__
from feratt.atomic import atomic_write_bytes
from feratt.errors import FerattError
from feratt.experiments.evaluate import (
    Noise,
    add_noise,
    check_render,
    fold_test_subjects,
    real_loader,
    run_model,
    synthetic_loader,
)
from feratt.experiments.figures import new_figure, save_png
from feratt.experiments.runs import TrainedModel, find_checkpoint, load_trained
from feratt.training.data import normalise_batch, read_render_index
from feratt.training.trainer import prepare_inputs

#: The noise levels of the paper's figures 7-9.
PAPER_SIGMAS: tuple[float, ...] = (0.01, 0.05, 0.07, 0.09, 0.1, 0.2, 0.3)
#: The metrics averaged over folds.
SUMMARY_KEYS: tuple[str, ...] = ("accuracy", "precision", "recall", "f1", "macro_f1")
NOISE_KIND = "feratt-noise"
NOISE_SCHEMA_VERSION = 1


def parse_sigmas(text: str) -> list[float]:
    """The noise levels of a comma-separated list, sorted, without repeats, with 0 (the clean reference)."""
    values = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            value = float(part)
        except ValueError:
            raise ValueError(f"{part!r} is not a number") from None
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"a noise sigma must be a finite number, 0 or more, not {part}")
        values.append(value)
    if not values:
        raise ValueError("give at least one sigma, such as 0.01,0.05,0.1")
    return sorted({0.0, *values})


def fold_checkpoints(run: str | Path, fold: str = "all") -> list[Path]:
    """The best.pt of each fold of a run folder ('all') or of fold `fold`; a fold folder is one fold."""
    run = Path(run)
    if fold != "all":
        try:
            index = int(fold)
        except ValueError:
            raise FerattError(f"--fold takes an index or 'all', not {fold!r}") from None
        return [find_checkpoint(run, index)]
    if run.is_dir():
        found = [
            p / "best.pt" for p in run.glob("fold-*") if p.name[5:].isdigit() and (p / "best.pt").is_file()
        ]
        if found:
            return sorted(found, key=lambda p: int(p.parent.name[5:]))
    # A fold folder or a checkpoint file; anything else raises find_checkpoint's one-line error.
    return [find_checkpoint(run)]


def _evaluate(
    trained: TrainedModel, loader: Iterable[dict[str, Any]], sigmas: Sequence[float], noise: Noise, device
) -> list[dict[str, Any]]:
    """Metrics at each sigma; sigma 0 goes through the noise path too, so the reference is like-for-like."""
    return [
        {
            "sigma": sigma,
            "metrics": run_model(trained, loader, device, Noise(sigma, noise.lab_l, noise.seed)).metrics(
                trained.classes
            ),
        }
        for sigma in sigmas
    ]


def aggregate_folds(
    folds: Sequence[dict[str, Any]], split: str, sigmas: Sequence[float]
) -> list[dict[str, Any]]:
    """Mean and (population) standard deviation over folds of each summary metric, per sigma."""
    rows = []
    for i, sigma in enumerate(sigmas):
        row: dict[str, Any] = {"sigma": sigma, "folds": len(folds)}
        for key in SUMMARY_KEYS:
            values = [fold[split][i]["metrics"][key] for fold in folds]
            row[key] = {"mean": float(np.mean(values)), "std": float(np.std(values))}
        rows.append(row)
    return rows


def _test_sample(loader: Iterable[dict[str, Any]], index: int) -> dict[str, np.ndarray]:
    """Sample `index` of a split in loader order, as a batch of one."""
    seen = 0
    for raw in loader:
        count = len(raw["label"])
        if index < seen + count:
            row = index - seen
            return {key: np.asarray(value[row : row + 1]) for key, value in raw.items()}
        seen += count
    raise FerattError(f"--image-index {index} is past the end of the test split ({seen} samples)")


@torch.no_grad()
def attention_panels(
    trained: TrainedModel,
    sample: dict[str, np.ndarray],
    sigmas: Sequence[float],
    noise: Noise,
    device: torch.device | str,
    index: int = 0,
) -> list[dict[str, Any]]:
    """For each sigma: the noisy model input, I_att, and the top class with its softmax probability."""
    if not trained.is_feratt:
        raise FerattError(f"{trained.checkpoint} is a {trained.method} model: it has no attention image")
    clean = sample["image"].astype(np.float32) / np.float32(255.0)
    panels = []
    for sigma in sigmas:
        # The same draws at every sigma, so the columns differ only by the noise's strength.
        rng = np.random.default_rng([noise.seed, index, 0xF167])
        noisy = add_noise(clean, Noise(sigma, noise.lab_l, noise.seed), rng)
        batch = normalise_batch({**sample, "image": torch.from_numpy(noisy)}, device)
        inputs, target = prepare_inputs(batch, trained.config)
        output = trained.model(inputs, target=target)
        probabilities = torch.softmax(output.logits.float(), dim=1)[0]
        top = int(probabilities.argmax())
        panels.append(
            {
                "sigma": sigma,
                "input": inputs[0].clamp(0, 1).permute(1, 2, 0).cpu().numpy(),
                "attention": output.attention_image[0].float().clamp(0, 1).permute(1, 2, 0).cpu().numpy(),
                "class": trained.classes[top],
                "probability": float(probabilities[top]),
            }
        )
    return panels


def plot_attention_grid(panels: Sequence[dict[str, Any]], title: str, path: Path) -> None:
    """Figure 7: noisy inputs over their I_att, one column per noise level, top class as column title."""
    columns = len(panels)
    figure = new_figure(figsize=(1.7 * columns + 0.6, 4.2), layout="constrained")
    axes = figure.subplots(2, columns, squeeze=False)
    for column, panel in enumerate(panels):
        axes[0, column].set_title(
            f"σ = {panel['sigma']:g}\n{panel['class']} {panel['probability']:.2f}", fontsize=9
        )
        for row, key in enumerate(("input", "attention")):
            axes[row, column].imshow(panel[key], vmin=0.0, vmax=1.0, interpolation="nearest")
            axes[row, column].set_xticks([])
            axes[row, column].set_yticks([])
    axes[0, 0].set_ylabel("noisy input")
    axes[1, 0].set_ylabel("$I_{att}$")
    figure.suptitle(title, fontsize=10)
    save_png(figure, path)


def plot_noise_curves(methods: Sequence[dict[str, Any]], split: str, path: Path, title: str) -> None:
    """Figures 8/9: accuracy (%) against sigma, one curve per method, mean over folds with std bars."""
    figure = new_figure(figsize=(6.4, 4.2), layout="constrained")
    axis = figure.subplots()
    sigmas = [row["sigma"] for row in methods[0]["aggregate"][split]]
    # Evenly spaced positions: the paper's levels crowd below 0.1.
    positions = np.arange(len(sigmas))
    for method in methods:
        rows = method["aggregate"][split]
        axis.errorbar(
            positions,
            [100.0 * row["accuracy"]["mean"] for row in rows],
            yerr=[100.0 * row["accuracy"]["std"] for row in rows],
            marker="o",
            capsize=3,
            label=method["label"],
        )
    axis.set_xticks(positions, [f"{s:g}" for s in sigmas])
    axis.set_xlabel("noise σ")
    axis.set_ylabel("accuracy (%)")
    axis.grid(True, alpha=0.3)
    axis.legend()
    axis.set_title(title)
    save_png(figure, path)


def noise_csv(methods: Sequence[dict[str, Any]], splits: Sequence[str]) -> str:
    """One row per method, split and sigma: the accuracy's mean and std over folds."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["method", "split", "sigma", "accuracy_mean", "accuracy_std", "folds"])
    for method in methods:
        for split in splits:
            for row in method["aggregate"][split]:
                writer.writerow(
                    [
                        method["label"],
                        split,
                        f"{row['sigma']:g}",
                        f"{row['accuracy']['mean']:.6f}",
                        f"{row['accuracy']['std']:.6f}",
                        row["folds"],
                    ]
                )
    return buffer.getvalue()


def _labels(methods: Sequence[dict[str, Any]]) -> list[str]:
    """Each run's name in plots and tables: its method, with the folder where two runs share a method."""
    names = [m["method"] for m in methods]
    labels = [
        n if names.count(n) == 1 else f"{n} ({Path(m['run']).name})"
        for n, m in zip(names, methods, strict=True)
    ]
    return [
        label if labels.count(label) == 1 else f"{m['method']} ({m['run']})"
        for label, m in zip(labels, methods, strict=True)
    ]


def noise_experiment(
    runs: Sequence[str | Path],
    shards: str | Path,
    sigmas: Sequence[float],
    out: str | Path,
    *,
    real_test: str | Path | None = None,
    lab_l: bool = False,
    fold: str = "all",
    seed: int = 0,
    batch_size: int = 100,
    workers: int = 0,
    device: torch.device | str = "cpu",
    image_index: int = 0,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Score every fold of every run at each sigma; write noise.json, noise.csv and the figures into `out`."""
    shards, out = Path(shards), Path(out)
    sigmas = sorted({0.0, *(float(s) for s in sigmas)})
    if image_index < 0:
        raise FerattError(f"--image-index must be 0 or more, not {image_index}")
    index = read_render_index(shards)
    # Every run's checkpoints are found first, so that a bad RUN fails before any evaluation.
    checkpoints = [fold_checkpoints(run, fold) for run in runs]
    out.mkdir(parents=True, exist_ok=True)
    noise = Noise(0.0, lab_l, seed)
    splits = ["synthetic", *(["real"] if real_test is not None else [])]
    methods: list[dict[str, Any]] = []
    figure: dict[str, Any] | None = None
    notes_seen: set[str] = set()
    for run, paths in zip(runs, checkpoints, strict=True):
        folds: dict[str, dict[str, Any]] = {}
        method: str | None = None
        for path in paths:
            trained = load_trained(path, device=device)
            if method is not None and trained.method != method:
                raise FerattError(f"run {run} mixes methods ({method} and {trained.method} in {path})")
            method = trained.method
            check_render(trained, index, shards)
            subjects = fold_test_subjects(trained, index)
            loaders: dict[str, Iterable[dict[str, Any]]] = {
                "synthetic": synthetic_loader(shards, subjects, batch_size, workers, verify=True)
            }
            if real_test is not None:
                loaders["real"], notes = real_loader(Path(real_test), subjects, index, batch_size)
                for note in notes:
                    if note not in notes_seen:
                        notes_seen.add(note)
                        echo(f"note: {note}")
            if figure is None and trained.is_feratt:
                sample = _test_sample(loaders["synthetic"], image_index)
                panels = attention_panels(trained, sample, sigmas, noise, device, image_index)
                figure = {
                    "run": str(run),
                    "fold": trained.fold,
                    "image_index": image_index,
                    "true_class": trained.classes[int(sample["label"][0])],
                    "panels": panels,
                }
            entry: dict[str, Any] = {
                "checkpoint": str(path),
                "epoch": trained.epoch,
                "test_subjects": subjects,
            }
            for split, loader in loaders.items():
                entry[split] = _evaluate(trained, loader, sigmas, noise, device)
                accuracies = " ".join(f"{r['sigma']:g}:{r['metrics']['accuracy']:.3f}" for r in entry[split])
                echo(f"{method} fold {trained.fold} {split} accuracy at sigma {accuracies}")
            folds[str(trained.fold)] = entry
            del trained, loaders
        ordered = [folds[k] for k in sorted(folds, key=int)]
        methods.append(
            {
                "run": str(run),
                "method": method,
                "folds": folds,
                "aggregate": {split: aggregate_folds(ordered, split, sigmas) for split in splits},
            }
        )
    for method, label in zip(methods, _labels(methods), strict=True):
        method["label"] = label
    result: dict[str, Any] = {
        "kind": NOISE_KIND,
        "schema_version": NOISE_SCHEMA_VERSION,
        "feratt_version": __version__,
        "shards": str(shards),
        "real_test": str(real_test) if real_test is not None else None,
        "noise": "zero-mean Gaussian on " + ("Lab L, sigma x 100" if lab_l else "RGB in [0, 1]"),
        "lab_l": lab_l,
        "seed": seed,
        "batch_size": batch_size,
        "sigmas": sigmas,
        "splits": splits,
        "methods": methods,
        "figure7": None,
    }
    written = [out / "noise.json", out / "noise.csv"]
    for split in splits:
        what = "real faces" if split == "real" else "synthetic test samples"
        plot_noise_curves(methods, split, out / f"noise-{split}.png", f"Accuracy under noise, {what}")
        written.append(out / f"noise-{split}.png")
    if figure is None:
        echo("note: no FERAtt run given: figure 7 (I_att under noise) skipped")
    else:
        name, true_class = Path(figure["run"]).name, figure["true_class"]
        title = f"{name} fold {figure['fold']}, test sample {image_index} ({true_class})"
        plot_attention_grid(figure["panels"], title, out / "figure7.png")
        written.append(out / "figure7.png")
        result["figure7"] = {
            **{k: v for k, v in figure.items() if k != "panels"},
            "columns": [{k: p[k] for k in ("sigma", "class", "probability")} for p in figure["panels"]],
        }
    atomic_write_bytes(out / "noise.json", (json.dumps(result, indent=2, sort_keys=True) + "\n").encode())
    atomic_write_bytes(out / "noise.csv", noise_csv(methods, splits).encode())
    result["written"] = [str(p) for p in written]
    return result
