"""Fold-based training: stream a fold's shards, train, validate, test, checkpoint and resume."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from feratt.artifacts.checkpoint import Checkpoint
from feratt.artifacts.render import RenderSet
from feratt.artifacts.run import (
    FoldFolder,
    FoldResult,
    MetricsLog,
    RunFolder,
)
from feratt.config.framing import Framing
from feratt.config.methods import get_method
from feratt.config.training import TrainConfig
from feratt.errors import FerattError
from feratt.progress import Log, Progress, no_log
from feratt.training.accelerator import Precision, uses_channels_last
from feratt.training.attention import AttentionStrip, AttentionSums
from feratt.training.build import build_model, loss_config
from feratt.training.checkpoints import epoch_checkpoint, restore_checkpoint, save_epoch_checkpoints
from feratt.training.data import (
    ShardStream,
    make_loader,
    normalise_batch,
    prepare_inputs,
)
from feratt.training.device import SINGLE_PROCESS, Distributed
from feratt.training.folds import FoldSplit
from feratt.training.losses import compute_losses
from feratt.training.metrics import MetricAccumulator, classification_metrics
from feratt.training.realtest import RealTestLoader, load_real_faces
from feratt.training.schedule import epoch_config, epoch_lr, pretrain_epochs

#: The log of the attention pre-training epochs, kept apart so that curves and model selection skip them.


@dataclass
class EpochResult:
    """Mean loss terms, a confusion matrix, and the sample count of one pass."""

    losses: dict[str, float]
    confusion: np.ndarray
    samples: int
    attention: dict[str, float] | None = None
    skipped: int | None = None  # training steps the float16 gradient scaler skipped (fp16 only)

    def metrics(self) -> dict[str, Any]:
        """The pass's record in metrics.jsonl: mean losses, attention scores, classification metrics."""
        result = {f"loss_{k}": v for k, v in self.losses.items()}
        result.update(self.attention or {})
        if self.skipped is not None:
            result["skipped_steps"] = self.skipped
        result.update(classification_metrics(self.confusion))
        result["confusion"] = self.confusion.tolist()
        result["samples"] = self.samples
        return result


def run_epoch(
    model: nn.Module,
    loader: Any,
    config: TrainConfig,
    num_classes: int,
    device: torch.device,
    place: Distributed = SINGLE_PROCESS,
    optimizer: torch.optim.Optimizer | None = None,
    generator: torch.Generator | None = None,
    progress: Progress | None = None,
    samples: int | None = None,
    precision: Precision | None = None,
) -> EpochResult:
    """One pass over `loader`: training when an optimizer is given, evaluation otherwise.

    `progress(done, samples)` follows the samples seen, `samples` being what the pass expects to see.
    `precision` (by default `config.amp`'s, with a fresh scaler) holds the gradient scaler across passes.
    """
    training = optimizer is not None
    model.train(training)
    terms = get_method(config.method).terms
    names = ("total", *terms)
    sums = torch.zeros(len(names), dtype=torch.float64, device=device)
    confusion = MetricAccumulator(num_classes, device)
    attention = AttentionSums(device) if get_method(config.method).attention else None
    settings = loss_config(config)
    precision = precision or Precision(config.amp, device)
    channels_last = uses_channels_last(config, device)
    done = skipped = 0
    for step, raw in enumerate(loader):
        if config.max_batches is not None and step >= config.max_batches:
            break
        noise_sigma = config.noise_sigma if training else None
        batch = normalise_batch(raw, device, noise_sigma=noise_sigma, generator=generator)
        inputs, target = prepare_inputs(batch, config)
        if channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        labels = batch["label"]
        with torch.set_grad_enabled(training), precision.autocast():
            output = model(inputs, target=target)
            losses = compute_losses(terms, output, target, labels, num_classes, settings)
        if optimizer is not None:
            optimizer.zero_grad(set_to_none=True)
            skipped += not precision.step(losses["total"], optimizer)
        sums += torch.stack([losses[name].detach().double() * labels.shape[0] for name in names])
        confusion.update(labels, output.logits.detach())
        if attention is not None:
            attention.update(output.attention_image, target, output.attention_map, batch["mask"])
        done += labels.shape[0]
        if progress is not None:
            progress(done, samples)
    place.sum(sums)
    if attention is not None:
        place.sum(attention.sums)
    confusion.reduce()
    count = confusion.count
    return EpochResult(
        losses={name: float(s) / max(count, 1) for name, s in zip(names, sums.tolist(), strict=True)},
        confusion=confusion.confusion(),
        samples=count,
        attention=attention.means() if attention is not None else None,
        skipped=skipped if training and precision.scaler is not None else None,
    )


@dataclass
class _Loaders:
    """A fold's data: the training stream and its loader, and the loaders of the evaluation parts."""

    train_stream: ShardStream
    train: Any
    evaluation: dict[str, Any]


def _stream(
    render: RenderSet, subjects: list[str], config: TrainConfig, place: Distributed, shuffle: bool
) -> ShardStream:
    return ShardStream(
        render.shards(subjects),
        shuffle=shuffle,
        seed=config.seed,
        buffer_size=config.buffer_size if shuffle else 0,
        verify=config.verify,
        rank=place.rank,
        world_size=place.world_size,
        # Training needs equal batch counts per rank; evaluation must score every sample, and its
        # only collective call comes after the pass.
        even=shuffle,
        samples_per_epoch=config.samples_per_epoch if shuffle else None,
    )


def _real_test_loader(
    bank: str, render: RenderSet, split: FoldSplit, batch_size: int, place: Distributed, log: Log
) -> RealTestLoader:
    faces, notes = load_real_faces(bank, split.test, render)
    for note in notes:
        log(f"note: {note}")
    log(f"fold {split.fold}: real test on {len(faces)} unrendered faces of the test subjects")
    return RealTestLoader(faces.part(place.rank, place.world_size), batch_size)


def _loaders(
    render: RenderSet,
    split: FoldSplit,
    config: TrainConfig,
    device: torch.device,
    place: Distributed,
    log: Log,
) -> _Loaders:
    pin = device.type == "cuda"
    train_stream = _stream(render, split.train, config, place, shuffle=True)
    evaluation = {
        name: make_loader(
            _stream(render, subjects, config, place, shuffle=False),
            config.batch_size,
            config.workers,
            pin,
            drop_last=False,
        )
        for name, subjects in (("validation", split.validation), ("test", split.test))
        if subjects
    }
    if config.real_test:
        evaluation["real_test"] = _real_test_loader(
            config.real_test, render, split, config.batch_size, place, log
        )
    train = make_loader(train_stream, config.batch_size, config.workers, pin, drop_last=False)
    return _Loaders(train_stream, train, evaluation)


def _model_and_optimizer(
    config: TrainConfig, num_classes: int, device: torch.device, log: Log
) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(config.seed)
    model = build_model(config, num_classes).to(device)
    if getattr(model, "attention_init", None):
        log(f"attention encoder: {model.attention_init}")
    if uses_channels_last(config, device):
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=config.lr, amsgrad=config.amsgrad, weight_decay=config.weight_decay
    )
    return model, optimizer


def _resume(
    fold_dir: FoldFolder,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    num_classes: int,
    metrics: MetricsLog,
    fold: int,
    log: Log,
    precision: Precision | None = None,
) -> tuple[int, float]:
    """The first epoch to train and the best validation accuracy so far, after loading last.pt."""
    epoch, best_accuracy = restore_checkpoint(
        fold_dir.last, model, optimizer, config.method, num_classes, precision
    )
    pretrain = pretrain_epochs(config)
    if not -pretrain <= epoch < config.epochs or not -1.0 <= best_accuracy <= 1.0:
        raise FerattError(
            f"{fold_dir.last} says it holds epoch {epoch} (best accuracy {best_accuracy}); this run's "
            f"epochs are {-pretrain} to {config.epochs - 1}: it is not this run's checkpoint"
        )
    metrics.truncate_after(epoch)
    log(f"fold {fold}: resumed after {_epoch_name(epoch, pretrain_epochs(config))}")
    return epoch + 1, best_accuracy


def _epoch_name(epoch: int, pretrain: int) -> str:
    return f"epoch {epoch}" if epoch >= 0 else f"attention pre-training epoch {epoch + pretrain}"


def _parallel(model: nn.Module, config: TrainConfig, device: torch.device, place: Distributed) -> nn.Module:
    """The model as trained: wrapped for DDP across ranks, compiled when asked."""
    trained = model
    if place.world_size > 1:
        # A teacher-forced batch bypasses G_att, G_ft and G_rec, which then get no gradient.
        trained = nn.parallel.DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=config.teacher_forcing > 0 or pretrain_epochs(config) > 0,
        )
    if config.compile:
        trained = torch.compile(trained)
    return trained


def _epoch_record(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loaders: _Loaders,
    config: TrainConfig,
    num_classes: int,
    device: torch.device,
    place: Distributed,
    epoch: int,
    progress: Progress | None,
    precision: Precision | None = None,
    best_accuracy: float = -1.0,
) -> dict[str, Any]:
    """Train one epoch, then score the evaluation parts `scores_test` asks for; the epoch's metrics line."""
    step = epoch + pretrain_epochs(config)  # the data's epoch: pre-training epochs come first
    noise = torch.Generator(device=device).manual_seed(config.seed * 100_003 + step)
    loaders.train_stream.set_epoch(step)
    lr = epoch_lr(config, epoch)
    for group in optimizer.param_groups:
        group["lr"] = lr
    started = time.perf_counter()
    result = run_epoch(
        model,
        loaders.train,
        epoch_config(config, epoch, get_method(config.method).attention),
        num_classes,
        device,
        place,
        optimizer,
        generator=noise,
        progress=progress,
        samples=loaders.train_stream.samples_per_rank,
        precision=precision,
    )
    record: dict[str, Any] = {"epoch": epoch, "seconds": time.perf_counter() - started, "lr": lr}
    record["train"] = result.metrics()
    for name, loader in loaders.evaluation.items():  # validation first: it decides whether test is scored
        if name != "validation" and not scores_test(config, epoch, _selection(record) > best_accuracy):
            continue
        evaluation = run_epoch(model, loader, config, num_classes, device, place, precision=precision)
        record[name] = evaluation.metrics()
    return record


def _selection(record: dict[str, Any]) -> float:
    """The accuracy an epoch is picked on: validation's, or training's when there is no validation split."""
    return record.get("validation", record["train"])["accuracy"]


def scores_test(config: TrainConfig, epoch: int, improved: bool) -> bool:
    """Whether `epoch` scores the test parts: every `test_every`-th, the last, and each new best.

    The last and the best epochs are always scored, so a fold's summary (the final and the best-on-validation
    model) never lacks its test figures; the other epochs only draw learning curves.
    """
    return improved or epoch == config.epochs - 1 or (epoch + 1) % config.test_every == 0


@dataclass
class _PretrainFold:
    """Where an attention pre-training epoch of a fold writes: its folder, log, and checkpoint's classes."""

    fold: int
    fold_dir: FoldFolder
    classes: list[str]
    log: MetricsLog
    say: Log
    framing: Framing | None = None  # the render's framing, kept in each checkpoint


def _pretrain_epoch(
    trained: nn.Module,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loaders: _Loaders,
    config: TrainConfig,
    fold: _PretrainFold,
    device: torch.device,
    place: Distributed,
    epoch: int,
    progress: Progress | None,
    precision: Precision,
) -> None:
    """Attention pre-training epoch `epoch` (< 0): the attention loss alone, G_rep frozen, logged apart."""
    model.g_rep.requires_grad_(False)  # no gradient, so Adam leaves G_rep and its state alone
    try:
        record = _epoch_record(
            trained, optimizer, loaders, config, len(fold.classes), device, place, epoch, progress, precision
        )
    finally:
        model.g_rep.requires_grad_(True)
    index = epoch + pretrain_epochs(config)
    record.update(epoch=index, phase="pretrain")
    fold.log.write(record)
    if place.main:
        checkpoint = epoch_checkpoint(
            config,
            fold.classes,
            fold.fold,
            epoch,
            -1.0,
            model,
            optimizer,
            fold.framing,
            precision.state_dict(),
        )
        save_epoch_checkpoints(fold.fold_dir, checkpoint, improved=False)
        fold.say(epoch_line(fold.fold, index, record).replace(" epoch ", " attention pre-training epoch ", 1))


def epoch_line(fold: int, epoch: int, record: dict[str, Any]) -> str:
    """The log line of one epoch: training loss and accuracy, and the accuracy of each evaluation part."""
    line = (
        f"fold {fold} epoch {epoch}: train loss {record['train']['loss_total']:.4f} "
        f"acc {record['train']['accuracy']:.3f}"
    )
    for part, label in (("validation", "validation"), ("test", "test"), ("real_test", "real test")):
        if record.get(part):
            line += f", {label} acc {record[part]['accuracy']:.3f}"
    return line


def _tensorboard(fold_dir: FoldFolder, config: TrainConfig, place: Distributed) -> Any:
    if not (config.tensorboard and place.main):
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise FerattError(
            "TensorBoard logs need the tensorboard package (pip install tensorboard)", field="tensorboard"
        ) from None
    return SummaryWriter(str(fold_dir.tensorboard))


def _write_scalars(writer: Any, record: dict[str, Any], epoch: int) -> None:
    if writer is None:
        return
    for part, metrics in record.items():
        if isinstance(metrics, dict):
            for key in ("accuracy", "loss_total"):
                writer.add_scalar(f"{part}/{key}", metrics[key], epoch)


def train_fold(
    render: RenderSet,
    run_dir: Path,
    split: FoldSplit,
    classes: list[str],
    config: TrainConfig,
    *,
    resume: bool = False,
    device: torch.device,
    place: Distributed = SINGLE_PROCESS,
    progress: Progress | None = None,
    log: Log | None = None,
) -> FoldResult:
    """Train one fold; its summary: the test figures of the final and of the best-on-validation model."""
    say = log if log is not None and place.main else no_log  # only rank 0 logs
    num_classes = len(classes)
    fold_dir = RunFolder(run_dir).fold(split.fold)
    framing = render.framing
    if place.main:
        fold_dir.path.mkdir(parents=True, exist_ok=True)
    model, optimizer = _model_and_optimizer(config, num_classes, device, say)
    precision = Precision(config.amp, device)  # its float16 gradient scaler lives as long as the fold
    metrics = fold_dir.metrics(place.main)
    pretrain_log = fold_dir.pretrain_log(place.main)
    start, best_accuracy = -pretrain_epochs(config), -1.0
    if resume and fold_dir.last.exists():
        start, best_accuracy = _resume(
            fold_dir, model, optimizer, config, num_classes, metrics, split.fold, say, precision
        )
        pretrain_log.truncate_after(start - 1 + pretrain_epochs(config))
    else:
        metrics.clear()
        pretrain_log.clear()
    trained = _parallel(model, config, device, place)
    loaders = _loaders(render, split, config, device, place, say)
    writer = _tensorboard(fold_dir, config, place)
    strip = AttentionStrip.open(fold_dir, render, split.test, config, device, start) if place.main else None
    progress = progress if place.main else None
    saved = start - 1  # the epoch of the checkpoints on disk
    try:
        for epoch in range(start, config.epochs):
            if epoch < 0:
                fold = _PretrainFold(split.fold, fold_dir, classes, pretrain_log, say, framing)
                _pretrain_epoch(
                    trained, model, optimizer, loaders, config, fold, device, place, epoch, progress,
                    precision,
                )  # fmt: skip
                saved = epoch
                continue
            record = _epoch_record(
                trained, optimizer, loaders, config, num_classes, device, place, epoch, progress, precision,
                best_accuracy,
            )  # fmt: skip
            selection = _selection(record)
            improved = selection > best_accuracy
            best_accuracy = max(best_accuracy, selection)
            metrics.write(record)
            _write_scalars(writer, record, epoch)
            if place.main:
                checkpoint = epoch_checkpoint(
                    config, classes, split.fold, epoch, best_accuracy, model, optimizer, framing,
                    precision.state_dict(),
                )  # fmt: skip
                save_epoch_checkpoints(fold_dir, checkpoint, improved)
                saved = epoch
                if strip is not None:
                    strip.record(model, epoch)
                say(epoch_line(split.fold, epoch, record))
    except OSError as exc:  # a full disk, say: stop at once, and say what the fold keeps
        raise _with_what_is_kept(exc, fold_dir, saved, pretrain_epochs(config)) from exc
    finally:
        if writer is not None:
            writer.close()
    return fold_dir.summary(split.fold, split.test, split.validation)


def _best_epoch(fold: FoldFolder) -> int | None:
    """The epoch of the fold's best.pt, or None when there is none that can be read."""
    if not fold.best.is_file():
        return None
    try:
        return Checkpoint.load(fold.best).epoch
    except (FerattError, OSError):  # a failing run's report: an unreadable best.pt counts as none
        return None


def _with_what_is_kept(exc: OSError, fold: FoldFolder, saved: int, pretrain: int = 0) -> OSError:
    """`exc`, its message extended by what the fold folder holds after it: last.pt of epoch `saved`, and
    best.pt, which the epoch that failed may have written before last.pt."""
    fold_dir = fold.path
    best = _best_epoch(fold)
    if saved >= 0 and best is not None and best > saved:
        kept = (
            f"{fold_dir} keeps last.pt of epoch {saved} and best.pt of epoch {best}, "
            f"and resume continues after epoch {saved}"
        )
    elif saved >= 0:
        kept = f"{fold_dir} keeps its checkpoints of epoch {saved}, and resume continues from there"
    elif saved >= -pretrain:
        kept = (
            f"{fold_dir} keeps its checkpoint of attention pre-training epoch {saved + pretrain}, "
            "and resume continues from there"
        )
    elif best is not None:
        kept = f"{fold_dir} keeps best.pt of epoch {best} but no last.pt, so resume starts the fold again"
    else:
        kept = f"{fold_dir} holds no checkpoint of this run"
    reason = " ".join((exc.strerror or str(exc)).split())
    return OSError(exc.errno, f"{reason}; {kept}", exc.filename)
