"""Fold-based training: stream a fold's shards, train, validate, test, checkpoint and resume."""

from __future__ import annotations

import contextlib
import io
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from feratt import __version__
from feratt.atomic import atomic_path, atomic_write_bytes
from feratt.errors import FerattError
from feratt.manifests.folds import FoldSplit, make_folds, split_fold, write_folds
from feratt.training.config import TrainConfig
from feratt.training.data import (
    ShardStream,
    make_loader,
    normalise_batch,
    read_render_index,
    shards_for_subjects,
)
from feratt.training.losses import LossConfig, LossWeights, compute_losses, method_terms
from feratt.training.metrics import classification_metrics
from feratt.training.models import create_model
from feratt.training.realtest import RealTestLoader, load_real_faces

CHECKPOINT_VERSION = 1


@dataclass(frozen=True)
class Distributed:
    """This process's place in a torchrun job (rank 0 of 1 when run alone)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed() -> Distributed:
    """Join the process group torchrun describes in the environment, if any."""
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) <= 1:
        return Distributed()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return Distributed(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def model_name(method: str) -> str:
    """The model a method trains."""
    method_terms(method)
    return "baseline" if method == "baseline" else "feratt"


def build_model(config: TrainConfig, num_classes: int) -> torch.nn.Module:
    """The network of `config.method`, at the configured size."""
    kwargs: dict[str, Any] = {"num_classes": num_classes, "in_size": config.in_size, "width": config.width}
    if model_name(config.method) == "feratt":
        kwargs.update(
            attention_channels=config.attention_channels,
            ft_blocks=config.ft_blocks,
            rec_concat=config.rec_concat,
            teacher_forcing=config.teacher_forcing,
            attention_weights=config.attention_weights,
        )
    return create_model(model_name(config.method), **kwargs)


def loss_config(config: TrainConfig) -> LossConfig:
    """The loss settings of `config`."""
    return LossConfig(
        attention_kind=config.attention_loss,
        classification_kind=config.classification_loss,
        sigma=config.sigma,
        class_means=config.class_means,
        weights=LossWeights(
            attention=config.attention_weight,
            representation=config.representation_weight,
            classification=config.classification_weight,
        ),
    )


def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
    if images.shape[-1] == size:
        return images
    return torch.nn.functional.interpolate(images, size=(size, size), mode="area")


def prepare_inputs(batch: dict[str, torch.Tensor], config: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The network input and the attention target, at the model's input size."""
    images = batch["image"]
    # The paper's literal target is the input under the mask; by default the clean rendered face.
    target = images * (batch["mask"] > 0.5) if config.att_target == "input-masked" else batch["face"]
    return _resize(images, config.in_size), _resize(target, config.in_size)


@dataclass
class EpochResult:
    """Mean loss terms, a confusion matrix, and the sample count of one pass."""

    losses: dict[str, float]
    confusion: np.ndarray
    samples: int

    def metrics(self) -> dict[str, Any]:
        result = {f"loss_{k}": v for k, v in self.losses.items()}
        result.update(classification_metrics(self.confusion))
        result["confusion"] = self.confusion.tolist()
        result["samples"] = self.samples
        return result


def _reduce(values: torch.Tensor, place: Distributed) -> torch.Tensor:
    if place.world_size > 1:
        dist.all_reduce(values)
    return values


def run_epoch(
    model: torch.nn.Module,
    loader: Any,
    config: TrainConfig,
    num_classes: int,
    device: torch.device,
    place: Distributed,
    optimizer: torch.optim.Optimizer | None = None,
    generator: torch.Generator | None = None,
    progress: Callable[[int], None] | None = None,
) -> EpochResult:
    """One pass over `loader`: training when an optimizer is given, evaluation otherwise."""
    training = optimizer is not None
    model.train(training)
    terms = ("total", *method_terms(config.method))
    sums = torch.zeros(len(terms), dtype=torch.float64, device=device)
    confusion = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=device)
    count = torch.zeros((), dtype=torch.int64, device=device)
    settings = loss_config(config)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
        if config.amp and device.type == "cuda"
        else contextlib.nullcontext()
    )
    for step, raw in enumerate(loader):
        if config.max_batches is not None and step >= config.max_batches:
            break
        batch = normalise_batch(
            raw, device, noise_sigma=config.noise_sigma if training else None, generator=generator
        )
        inputs, target = prepare_inputs(batch, config)
        if config.channels_last and device.type == "cuda":
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        labels = batch["label"]
        with torch.set_grad_enabled(training), autocast:
            output = model(inputs, target=target) if model_name(config.method) == "feratt" else model(inputs)
            losses = compute_losses(config.method, output, target, labels, num_classes, settings)
        if training:
            optimizer.zero_grad(set_to_none=True)
            losses["total"].backward()
            optimizer.step()
        size = labels.shape[0]
        sums += torch.stack([losses[t].detach().double() * size for t in terms])
        predictions = output.logits.detach().argmax(dim=1)
        confusion += torch.bincount(labels * num_classes + predictions, minlength=num_classes**2)
        count += size
        if progress is not None:
            progress(size)
    _reduce(sums, place)
    _reduce(confusion, place)
    _reduce(count, place)
    total = max(int(count.item()), 1)
    return EpochResult(
        losses={t: float(s) / total for t, s in zip(terms, sums.tolist(), strict=True)},
        confusion=confusion.view(num_classes, num_classes).cpu().numpy(),
        samples=int(count.item()),
    )


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write a checkpoint atomically."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Read a feratt checkpoint of this version."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for a bad file
        raise FerattError(f"cannot read checkpoint {path}: {exc}") from None
    if not isinstance(state, dict) or state.get("checkpoint_version") != CHECKPOINT_VERSION:
        found = state.get("checkpoint_version") if isinstance(state, dict) else None
        raise FerattError(
            f"{path} is not a feratt checkpoint of this version "
            f"(format {found!r}, this feratt {__version__} reads format {CHECKPOINT_VERSION})"
        )
    return state


def load_checkpoint(path: Path, method: str, num_classes: int) -> dict[str, Any]:
    """Read a checkpoint and check that it belongs to the same method and class count."""
    state = read_checkpoint(path)
    if state["method"] != method or state["num_classes"] != num_classes:
        raise FerattError(
            f"checkpoint {path} is for {state['method']} with {state['num_classes']} classes, "
            f"not {method} with {num_classes}"
        )
    return state


def _rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state()}


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])


def _stream(out: Path, subjects: list[str], config: TrainConfig, place: Distributed, shuffle: bool):
    shards = shards_for_subjects(out, subjects)
    return ShardStream(
        shards,
        shuffle=shuffle,
        seed=config.seed,
        buffer_size=config.buffer_size if shuffle else 0,
        verify=config.verify,
        rank=place.rank,
        world_size=place.world_size,
        # Training needs equal batch counts per rank; evaluation must score every sample, and its
        # only collective call comes after the pass.
        even=shuffle,
    )


class MetricsLog:
    """Appends one JSON line per epoch to metrics.jsonl (rank 0 only)."""

    def __init__(self, path: Path, enabled: bool) -> None:
        self.path = path
        self.enabled = enabled

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with open(self.path, "a") as handle:
                handle.write(json.dumps(record, sort_keys=True) + "\n")

    def truncate_after(self, epoch: int) -> None:
        """Drop lines of epochs after `epoch`, left by a run killed before its checkpoint landed."""
        if not self.enabled or not self.path.exists():
            return
        kept = [line for line in self.path.read_text().splitlines() if json.loads(line)["epoch"] <= epoch]
        with atomic_path(self.path) as tmp:
            tmp.write_text("".join(line + "\n" for line in kept))


def train_fold(
    out: Path,
    run: Path,
    split: FoldSplit,
    classes: list[str],
    config: TrainConfig,
    *,
    resume: bool,
    device: torch.device,
    place: Distributed,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train one fold; return its summary (test metrics of the final and the best-on-validation model)."""
    from tqdm import tqdm

    num_classes = len(classes)
    folder = run / f"fold-{split.fold}"
    if place.main:
        folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    model = build_model(config, num_classes).to(device)
    if getattr(model, "attention_init", None) and place.main:
        echo(f"attention encoder: {model.attention_init}")
    if config.channels_last and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=config.lr, amsgrad=config.amsgrad, weight_decay=config.weight_decay
    )
    start_epoch, best_accuracy = 0, -1.0
    log = MetricsLog(folder / "metrics.jsonl", place.main)
    last = folder / "last.pt"
    if resume and last.exists():
        state = load_checkpoint(last, config.method, num_classes)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        _set_rng_state(state["rng"])
        start_epoch, best_accuracy = state["epoch"] + 1, state["best_accuracy"]
        log.truncate_after(state["epoch"])
        if place.main:
            echo(f"fold {split.fold}: resumed after epoch {state['epoch']}")
    elif place.main and log.path.exists():
        log.path.unlink()
    trained: torch.nn.Module = model
    if place.world_size > 1:
        # A teacher-forced batch bypasses G_att, G_ft and G_rec, which then get no gradient.
        trained = torch.nn.parallel.DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=config.teacher_forcing > 0,
        )
    if config.compile:
        trained = torch.compile(trained)
    train_stream = _stream(out, split.train, config, place, shuffle=True)
    pin = device.type == "cuda"
    train_loader = make_loader(train_stream, config.batch_size, config.workers, pin, drop_last=False)
    evaluation = {
        name: make_loader(
            _stream(out, subjects, config, place, shuffle=False),
            config.batch_size,
            config.workers,
            pin,
            drop_last=False,
        )
        for name, subjects in (("validation", split.validation), ("test", split.test))
        if subjects
    }
    if config.real_test:
        faces, notes = load_real_faces(config.real_test, split.test, read_render_index(out))
        if place.main:
            for note in notes:
                echo(f"note: {note}")
            echo(f"fold {split.fold}: real test on {len(faces)} unrendered faces of the test subjects")
        evaluation["real_test"] = RealTestLoader(faces.part(place.rank, place.world_size), config.batch_size)
    noise = torch.Generator(device=device)
    writer = _tensorboard(folder, config, place)
    for epoch in range(start_epoch, config.epochs):
        noise.manual_seed(config.seed * 100_003 + epoch)
        train_stream.set_epoch(epoch)
        started = time.perf_counter()
        with tqdm(
            total=train_stream.samples_per_rank,
            unit="img",
            desc=f"fold {split.fold} epoch {epoch}",
            disable=None if place.main else True,
            leave=False,
        ) as bar:
            result = run_epoch(
                trained,
                train_loader,
                config,
                num_classes,
                device,
                place,
                optimizer,
                generator=noise,
                progress=bar.update,
            )
        record: dict[str, Any] = {"epoch": epoch, "seconds": time.perf_counter() - started}
        record["train"] = result.metrics()
        for name, loader in evaluation.items():
            record[name] = run_epoch(trained, loader, config, num_classes, device, place).metrics()
        selection = record.get("validation", record["train"])["accuracy"]
        improved = selection > best_accuracy
        best_accuracy = max(best_accuracy, selection)
        log.write(record)
        if writer is not None:
            for part in ("train", *evaluation):
                for key in ("accuracy", "loss_total"):
                    writer.add_scalar(f"{part}/{key}", record[part][key], epoch)
        if place.main:
            state = {
                "checkpoint_version": CHECKPOINT_VERSION,
                "feratt_version": __version__,
                "method": config.method,
                "num_classes": num_classes,
                "classes": classes,
                "config": config.to_dict(),
                "fold": split.fold,
                "epoch": epoch,
                "best_accuracy": best_accuracy,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "rng": _rng_state(),
            }
            if improved:
                save_checkpoint(folder / "best.pt", {**state, "optimizer": None})
            save_checkpoint(last, state)
            test = record.get("test", {})
            echo(
                f"fold {split.fold} epoch {epoch}: train loss {record['train']['loss_total']:.4f} "
                f"acc {record['train']['accuracy']:.3f}"
                + (
                    f", validation acc {record['validation']['accuracy']:.3f}"
                    if "validation" in record
                    else ""
                )
                + (f", test acc {test['accuracy']:.3f}" if test else "")
                + (f", real test acc {record['real_test']['accuracy']:.3f}" if "real_test" in record else "")
            )
    if writer is not None:
        writer.close()
    return _fold_summary(folder, split)


def _tensorboard(folder: Path, config: TrainConfig, place: Distributed):
    if not (config.tensorboard and place.main):
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise FerattError("--tensorboard needs the tensorboard package (pip install tensorboard)") from None
    return SummaryWriter(str(folder / "tensorboard"))


def _fold_summary(folder: Path, split: FoldSplit) -> dict[str, Any]:
    """Test metrics of the final model and of the model that did best on validation, from metrics.jsonl."""
    summary: dict[str, Any] = {
        "fold": split.fold,
        "test_subjects": split.test,
        "validation_subjects": split.validation,
    }
    log = folder / "metrics.jsonl"
    lines = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    if not lines:
        return summary
    key = "validation" if "validation" in lines[-1] else "train"
    best = max(lines, key=lambda r: r[key]["accuracy"])
    for part, prefix in (("test", ""), ("real_test", "real_")):
        if part in lines[-1]:
            summary[f"{prefix}final"] = _headline(lines[-1][part])
            summary[f"{prefix}best_on_validation"] = {"epoch": best["epoch"], **_headline(best[part])}
    return summary


def _headline(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: metrics[k] for k in ("accuracy", "precision", "recall", "f1", "confusion") if k in metrics}


def aggregate(folds: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and standard deviation over folds of each test metric, for the final and best models."""
    result: dict[str, Any] = {}
    for which in ("final", "best_on_validation", "real_final", "real_best_on_validation"):
        rows = [f[which] for f in folds if which in f]
        if rows:
            result[which] = {
                key: {
                    "mean": float(np.mean([r[key] for r in rows])),
                    "std": float(np.std([r[key] for r in rows])),
                }
                for key in ("accuracy", "precision", "recall", "f1")
            }
    return result


def train(
    out: Path,
    run: Path,
    config: TrainConfig,
    fold_spec: str,
    *,
    resume: bool,
    device: torch.device,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train the folds named by `fold_spec` ('all' or an index) on the render in `out`."""
    place = setup_distributed()
    if place.world_size > 1 and device.type == "cuda":
        device = torch.device(f"cuda:{place.local_rank}")
    index = read_render_index(out)
    classes = list(index["classes"])
    subjects = sorted(index["subjects"])
    folds = make_folds(subjects, config.fold_size, config.seed)
    chosen = list(range(len(folds))) if fold_spec == "all" else [_fold_index(fold_spec, len(folds))]
    if config.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if place.main:
        run.mkdir(parents=True, exist_ok=True)
        write_folds(run / "folds.json", folds, config.seed, config.fold_size)
        atomic_write_bytes(
            run / "config.json", (json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n").encode()
        )
    summaries = []
    try:
        for fold in chosen:
            split = split_fold(folds, fold, config.val_subjects, config.seed)
            summaries.append(
                train_fold(
                    out, run, split, classes, config, resume=resume, device=device, place=place, echo=echo
                )
            )
        if place.world_size > 1:
            dist.barrier()
    finally:
        if place.world_size > 1 and dist.is_initialized():
            # Leaving gloo's threads running at interpreter exit aborts the process.
            dist.destroy_process_group()
    summary = {
        "method": config.method,
        "classes": classes,
        "folds": summaries,
        "render": str(out),
        "feratt_version": __version__,
        "aggregate": aggregate(summaries),
    }
    if place.main:
        atomic_write_bytes(
            run / "summary.json", (json.dumps(summary, indent=2, sort_keys=True) + "\n").encode()
        )
    return summary


def _fold_index(spec: str, count: int) -> int:
    try:
        fold = int(spec)
    except ValueError:
        raise FerattError(f"--fold takes an index or 'all', not {spec!r}") from None
    if not 0 <= fold < count:
        raise FerattError(f"fold {fold} does not exist: the data set has {count} folds (0-{count - 1})")
    return fold


def pick_device(name: str) -> torch.device:
    """'auto' is CUDA when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise FerattError("--device cuda asked for, but torch sees no CUDA device")
    return torch.device(name)
