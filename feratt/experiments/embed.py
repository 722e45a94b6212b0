"""The representation z of a FERAtt run (the paper's figure 6): k-NN accuracy on it and a t-SNE map."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from feratt import __version__
from feratt.artifacts.output import check_output, claim_output
from feratt.artifacts.render import RenderSet
from feratt.atomic import atomic_path
from feratt.codec import TRANSIENT, encode
from feratt.config.methods import METHODS
from feratt.errors import FerattError
from feratt.experiments.evaluate import (
    Outputs,
    SplitMetrics,
    check_render,
    fold_split,
    run_model,
    synthetic_loader,
)
from feratt.experiments.figures import new_figure, save_png
from feratt.jsonfile import write_json
from feratt.locks import exclusive
from feratt.progress import Log, Progress, no_log
from feratt.requests import check_fields, check_seed, request_from
from feratt.training.checkpoints import TrainedModel, load_trained
from feratt.training.device import pick_device
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


@dataclass(frozen=True)
class TsneMap:
    """The t-SNE of figure 6: how many test points it shows and the settings it ran with."""

    points: int
    max_points: int
    perplexity: float
    perplexity_used: float
    seed: int
    method: str = "barnes_hut"
    init: str = "pca"


@dataclass(frozen=True)
class EmbedResult:
    """A FERAtt fold's representation z: classifier and k-NN accuracy on it, and its t-SNE map."""

    checkpoint: Path
    method: str
    fold: int
    epoch: int
    shards: Path
    classes: list[str]
    test_subjects: list[str]
    train_subjects: list[str]
    test_samples: int
    train_samples: int
    embedding_dim: int
    test_metrics: SplitMetrics
    classifier_accuracy: float  # of the model's own classifier on the test samples
    knn_accuracy: float
    tsne: TsneMap
    #: The folder holding embeddings.npz, embed.json and tsne.png.
    out: Path = field(metadata=TRANSIENT)
    knn_k: int = KNN_K
    kind: str = EMBED_KIND
    schema_version: int = EMBED_SCHEMA_VERSION
    feratt_version: str = __version__

    @property
    def written(self) -> list[Path]:
        """The files written, in the order they are listed."""
        return [self.out / name for name in ("embeddings.npz", "embed.json", "tsne.png")]


def _check_settings(max_points: int, perplexity: float) -> None:
    if max_points < 4:
        raise FerattError(f"the t-SNE needs at least 4 points, not {max_points}", field="max_points")
    if not perplexity > 0:
        raise FerattError(f"the perplexity must be above 0, not {perplexity}", field="perplexity")


def _embedding_model(run: str | Path, fold: int | None, device: torch.device) -> TrainedModel:
    """The trained model `run` names, refused unless its network gives an embedding z."""
    trained = load_trained(run, fold, device=device)
    if "embedding" not in trained.outputs:
        names = " or ".join(name for name, method in METHODS.items() if "embedding" in method.outputs)
        raise FerattError(
            f"{trained.checkpoint} is a {trained.method} model, which has no embedding z: "
            f"embed needs a FERAtt run ({names})"
        )
    return trained


def _write_embeddings(
    path: Path, test: Outputs, classes: list[str], chosen: np.ndarray, points: np.ndarray
) -> None:
    """embeddings.npz: the test embeddings, labels, predictions, logits and the t-SNE points."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(
            handle,
            embeddings=test.embeddings.astype(np.float32),
            labels=test.labels,
            predictions=test.predictions,
            logits=test.logits.astype(np.float32),
            classes=np.asarray(classes, dtype=str),
            tsne_index=chosen,
            tsne=points,
        )


def _outputs(
    trained: TrainedModel,
    render: RenderSet,
    subjects: list[str],
    batch_size: int,
    workers: int,
    device: torch.device,
    progress: Progress | None,
) -> Outputs:
    """The model's outputs (with embeddings) on the rendered samples of `subjects`."""
    loader = synthetic_loader(render, subjects, batch_size, workers, True)
    return run_model(trained, loader, device, progress=progress)


@dataclass(frozen=True, kw_only=True)
class EmbedRequest:
    """Which fold `embed` maps (a run, fold folder or checkpoint of a FERAtt method), on which render."""

    run: str | os.PathLike[str]
    render: str | os.PathLike[str] | RenderSet
    fold: int | None = None
    out: str | os.PathLike[str] | None = None  # default: the fold folder's embed/
    overwrite: bool = False  # replace an earlier run's results, or write into a folder of other files
    max_points: int = 4000  # test points on the t-SNE map at most
    perplexity: float = 30.0
    seed: int = 0
    batch_size: int = 100
    workers: int = 0
    device: str | torch.device = "auto"

    def __post_init__(self) -> None:
        check_fields(self)
        _check_settings(self.max_points, self.perplexity)
        check_seed(self.seed)


def embed(
    request: EmbedRequest | None = None,
    /,
    *,
    progress: Progress | None = None,
    log: Log | None = None,
    **fields: Any,
) -> EmbedResult:
    """Embed a FERAtt fold's test and training samples; write embeddings.npz, embed.json and tsne.png.

    The fields are EmbedRequest's; `out` defaults to the fold folder's embed/.
    """
    request = request_from(EmbedRequest, request, fields)
    max_points, perplexity, seed = request.max_points, request.perplexity, request.seed
    batch_size, workers, out = request.batch_size, request.workers, request.out
    log = log or no_log
    target = pick_device(request.device)
    trained = _embedding_model(request.run, request.fold, target)
    render = RenderSet.open(request.render)
    check_render(trained, render)
    split = fold_split(trained, render)
    out = Path(out) if out is not None else trained.checkpoint.parent / "embed"
    check_output(out, "embed", overwrite=request.overwrite)
    out.mkdir(parents=True, exist_ok=True)
    with exclusive(out, what=f"the embed output folder {out}"), render.reading():
        claim_output(out, "embed", overwrite=request.overwrite)
        test = _outputs(trained, render, split.test, batch_size, workers, target, progress)
        train = _outputs(trained, render, split.train, batch_size, workers, target, progress)
        if test.embeddings is None or train.embeddings is None:
            raise FerattError(f"{trained.checkpoint} gave no embeddings: is it a FERAtt model?")
        knn = knn_accuracy(train.embeddings, train.labels, test.embeddings, test.labels, k=KNN_K)
        metrics = test.metrics(trained.classes)
        log(
            f"fold {trained.fold}: classifier test accuracy {metrics.accuracy:.4f}, "
            f"{KNN_K}-NN accuracy on z {knn:.4f} "
            f"({len(test.labels)} test, {len(train.labels)} training samples)"
        )
        chosen = stratified_subsample(
            test.labels, max_points, np.random.default_rng([seed % (1 << 63), 0x75E])
        )
        points, used = tsne_points(test.embeddings[chosen], perplexity, seed)
        if used != perplexity:
            log(f"note: perplexity {perplexity:g} lowered to {used:.3g} for {len(chosen)} points")
        _write_embeddings(out / "embeddings.npz", test, trained.classes, chosen, points)
        title = f"t-SNE of z, {trained.method} fold {trained.fold} ({len(chosen)} test samples)"
        plot_tsne(
            points, test.labels[chosen], test.predictions[chosen], trained.classes, title, out / "tsne.png"
        )
        result = EmbedResult(
            checkpoint=trained.checkpoint,
            method=trained.method,
            fold=trained.fold,
            epoch=trained.epoch,
            shards=render.path,
            classes=trained.classes,
            test_subjects=split.test,
            train_subjects=split.train,
            test_samples=len(test.labels),
            train_samples=len(train.labels),
            embedding_dim=int(test.embeddings.shape[1]),
            test_metrics=metrics,
            classifier_accuracy=metrics.accuracy,
            knn_accuracy=knn,
            tsne=TsneMap(
                points=len(chosen),
                max_points=max_points,
                perplexity=perplexity,
                perplexity_used=used,
                seed=seed,
            ),
            out=out,
        )
        write_json(out / "embed.json", encode(result))
        return result
