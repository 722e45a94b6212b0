"""The representation z of a FERAtt run (the paper's figure 6): k-NN accuracy on it and a t-SNE map."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from feratt import __version__
from feratt.atomic import atomic_path, atomic_write_bytes
from feratt.errors import FerattError
from feratt.experiments.evaluate import check_render, fold_split, run_model, synthetic_loader
from feratt.experiments.figures import new_figure, save_png
from feratt.experiments.runs import load_trained
from feratt.training.data import read_render_index
from feratt.training.metrics import knn_accuracy

#: Neighbours of the k-NN classifier fitted on the training embeddings.
KNN_K = 11
EMBED_KIND = "feratt-embed"
EMBED_SCHEMA_VERSION = 1


def stratified_subsample(labels: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of `count` samples (all, if no more), each class in proportion to its size."""
    labels = np.asarray(labels)
    if count >= len(labels):
        return np.arange(len(labels))
    classes, sizes = np.unique(labels, return_counts=True)
    exact = sizes * count / len(labels)
    quota = np.floor(exact).astype(np.int64)
    # Largest remainders get the samples the floors left over; ties go to the larger class, then the lower id.
    order = np.lexsort((classes, -sizes, -(exact - quota)))
    quota[order[: count - int(quota.sum())]] += 1
    picked = [
        rng.choice(np.flatnonzero(labels == cls), size=int(n), replace=False)
        for cls, n in zip(classes, quota, strict=True)
    ]
    return np.sort(np.concatenate(picked))


def tsne_points(embeddings: np.ndarray, perplexity: float, seed: int) -> tuple[np.ndarray, float]:
    """Barnes-Hut t-SNE of the embeddings in 2-D, and the perplexity used (lowered for few points)."""
    from sklearn.manifold import TSNE

    count = len(embeddings)
    if count < 4:
        raise FerattError(f"t-SNE needs at least 4 test points, not {count}")
    # scikit-learn refuses a perplexity of n or more; n/3 keeps every point's neighbourhood a minority.
    used = float(perplexity) if perplexity < count else (count - 1) / 3.0
    tsne = TSNE(n_components=2, method="barnes_hut", init="pca", perplexity=used, random_state=seed)
    return tsne.fit_transform(np.asarray(embeddings, dtype=np.float32)).astype(np.float32), used


def plot_tsne(
    points: np.ndarray,
    labels: np.ndarray,
    predictions: np.ndarray,
    classes: list[str],
    title: str,
    path: Path,
) -> None:
    """Figure 6: t-SNE points coloured by true class; misclassified ones drawn as crosses."""
    from matplotlib import colormaps
    from matplotlib.lines import Line2D

    colours = colormaps["tab10" if len(classes) <= 10 else "tab20"]
    figure = new_figure(figsize=(7.0, 6.0), layout="constrained")
    axis = figure.subplots()
    for cls, name in enumerate(classes):
        colour = colours(cls % colours.N)
        right = (labels == cls) & (predictions == cls)
        wrong = (labels == cls) & (predictions != cls)
        axis.scatter(points[right, 0], points[right, 1], s=12, color=colour, label=name, alpha=0.8)
        axis.scatter(points[wrong, 0], points[wrong, 1], s=20, color=colour, marker="x", linewidths=1.0)
    handles, names = axis.get_legend_handles_labels()
    handles.append(Line2D([], [], color="grey", marker="x", linestyle="none"))
    names.append("misclassified")
    axis.legend(handles, names, loc="best", fontsize=8, markerscale=1.5)
    axis.set_xticks([])
    axis.set_yticks([])
    axis.set_title(title)
    save_png(figure, path)


def embed_experiment(
    run: str | Path,
    shards: str | Path,
    *,
    fold: int | None = None,
    out: str | Path | None = None,
    max_points: int = 4000,
    perplexity: float = 30.0,
    seed: int = 0,
    batch_size: int = 100,
    workers: int = 0,
    device: torch.device | str = "cpu",
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Embed a fold's test and training samples; write embeddings.npz, embed.json and tsne.png."""
    if max_points < 4:
        raise FerattError(f"--max-points must be at least 4, not {max_points}")
    if not perplexity > 0:
        raise FerattError(f"--perplexity must be above 0, not {perplexity}")
    shards = Path(shards)
    trained = load_trained(run, fold, device=device)
    if not trained.is_feratt:
        raise FerattError(
            f"{trained.checkpoint} is a {trained.method} model, which has no embedding z: "
            "embed needs a FERAtt run (feratt-cls or feratt-rep-cls)"
        )
    index = read_render_index(shards)
    check_render(trained, index, shards)
    split = fold_split(trained, index)
    out = Path(out) if out is not None else trained.checkpoint.parent / "embed"
    out.mkdir(parents=True, exist_ok=True)

    test = run_model(trained, synthetic_loader(shards, split.test, batch_size, workers, True), device)
    train = run_model(trained, synthetic_loader(shards, split.train, batch_size, workers, True), device)
    if test.embeddings is None or train.embeddings is None:
        raise FerattError(f"{trained.checkpoint} gave no embeddings: is it a FERAtt model?")
    knn = knn_accuracy(train.embeddings, train.labels, test.embeddings, test.labels, k=KNN_K)
    metrics = test.metrics(trained.classes)
    echo(
        f"fold {trained.fold}: classifier test accuracy {metrics['accuracy']:.4f}, "
        f"{KNN_K}-NN accuracy on z {knn:.4f} ({len(test.labels)} test, {len(train.labels)} training samples)"
    )

    rng = np.random.default_rng([seed % (1 << 63), 0x75E])
    chosen = stratified_subsample(test.labels, max_points, rng)
    points, used = tsne_points(test.embeddings[chosen], perplexity, seed)
    if used != perplexity:
        echo(f"note: perplexity {perplexity:g} lowered to {used:.3g} for {len(chosen)} points")
    with atomic_path(out / "embeddings.npz") as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(
            handle,
            embeddings=test.embeddings.astype(np.float32),
            labels=test.labels,
            predictions=test.predictions,
            logits=test.logits.astype(np.float32),
            classes=np.asarray(trained.classes, dtype=str),
            tsne_index=chosen,
            tsne=points,
        )
    plot_tsne(
        points,
        test.labels[chosen],
        test.predictions[chosen],
        trained.classes,
        f"t-SNE of z, {trained.method} fold {trained.fold} ({len(chosen)} test samples)",
        out / "tsne.png",
    )
    result: dict[str, Any] = {
        "kind": EMBED_KIND,
        "schema_version": EMBED_SCHEMA_VERSION,
        "feratt_version": __version__,
        "checkpoint": str(trained.checkpoint),
        "method": trained.method,
        "fold": trained.fold,
        "epoch": trained.epoch,
        "shards": str(shards),
        "classes": trained.classes,
        "test_subjects": split.test,
        "train_subjects": split.train,
        "test_samples": len(test.labels),
        "train_samples": len(train.labels),
        "embedding_dim": int(test.embeddings.shape[1]),
        "classifier_accuracy": metrics["accuracy"],
        "knn_accuracy": knn,
        "knn_k": KNN_K,
        "test_metrics": metrics,
        "tsne": {
            "points": len(chosen),
            "max_points": max_points,
            "perplexity": perplexity,
            "perplexity_used": used,
            "method": "barnes_hut",
            "init": "pca",
            "seed": seed,
        },
    }
    atomic_write_bytes(out / "embed.json", (json.dumps(result, indent=2, sort_keys=True) + "\n").encode())
    result["out"] = str(out)
    return result
