"""Checkpoints in training and after it: save each epoch's, resume from last.pt, load a trained model.

The files themselves (their fields, format version and atomic writes) are artifacts/checkpoint.py's;
the folders they lie in, artifacts/run.py's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from feratt.artifacts.checkpoint import Checkpoint
from feratt.artifacts.run import FoldFolder, RunFolder
from feratt.config.framing import Framing
from feratt.config.training import TrainConfig
from feratt.errors import FerattError
from feratt.training.accelerator import Precision
from feratt.training.build import build_model
from feratt.training.device import pick_device
from feratt.training.models import model_outputs


def epoch_checkpoint(
    config: TrainConfig,
    classes: list[str],
    fold: int,
    epoch: int,
    best_accuracy: float,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    framing: Framing | None = None,
    scaler: dict[str, object] | None = None,
) -> Checkpoint:
    """What a checkpoint holds after `epoch`: the model, the optimizer and RNG state, and the settings.

    `framing` is the render's framing, so that inference frames faces alike; `scaler` a float16 run's
    gradient scaler state.
    """
    return Checkpoint(
        method=config.method,
        classes=tuple(classes),
        config=config,
        fold=fold,
        epoch=epoch,
        best_accuracy=best_accuracy,
        model=model.state_dict(),
        optimizer=optimizer.state_dict(),
        rng={"torch": torch.get_rng_state()},
        scaler=scaler,
        framing=framing,
    )


def save_epoch_checkpoints(fold: FoldFolder, checkpoint: Checkpoint, improved: bool) -> None:
    """Write last.pt, and best.pt (without the optimizer) when the epoch did best on validation so far."""
    if improved:
        checkpoint.without_optimizer().save(fold.best)
    checkpoint.save(fold.last)


def restore_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    method: str,
    num_classes: int,
    precision: Precision | None = None,
) -> tuple[int, float]:
    """Load last.pt into the model, the optimizer, the float16 gradient scaler (`precision`'s, if any)
    and torch's RNG; its epoch and best validation accuracy."""
    checkpoint = Checkpoint.load(path)
    checkpoint.check_matches(path, method, num_classes)
    if checkpoint.optimizer is None or not isinstance(checkpoint.rng, dict) or "torch" not in checkpoint.rng:
        raise FerattError(f"{path} holds no optimizer or random state to resume from")
    parts = (
        ("model", lambda: model.load_state_dict(checkpoint.model)),
        ("optimizer state", lambda: optimizer.load_state_dict(checkpoint.optimizer)),
        ("gradient scaler state", lambda: precision and precision.load_state_dict(checkpoint.scaler)),
        ("random state", lambda: torch.set_rng_state(checkpoint.rng["torch"])),
    )
    for what, restore in parts:
        try:
            restore()
        except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise FerattError(f"{path} holds a {what} that does not fit this run ({reason})") from None
    return checkpoint.epoch, checkpoint.best_accuracy


@dataclass(frozen=True)
class TrainedModel:
    """A model in eval mode, its training configuration and where it came from."""

    model: nn.Module
    config: TrainConfig
    classes: list[str]
    fold: int
    epoch: int
    checkpoint: Path
    feratt_version: str
    framing: Framing | None = None  # the render's framing; None in older checkpoints

    @property
    def method(self) -> str:
        """The name of the method the model was trained with."""
        return self.config.method

    @property
    def outputs(self) -> frozenset[str]:
        """The ModelOutput fields the model's forward fills, as its class declares them."""
        return model_outputs(self.model)


def find_checkpoint(path: str | Path, fold: int | None = None, which: str = "best") -> Path:
    """The checkpoint that `path` names: a .pt file, a fold folder, or a run folder (with `fold`)."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise FerattError(f"{path} is neither a checkpoint file nor a run folder")
    if FoldFolder(path).checkpoint(which).is_file():
        return FoldFolder(path).checkpoint(which)
    run = RunFolder(path)
    if fold is not None:
        candidate = run.fold(fold).checkpoint(which)
        if not candidate.is_file():
            raise FerattError(
                f"run folder {path} has no checkpoint for fold {fold} ({candidate} is missing)", field="fold"
            )
        return candidate
    found = run.folds_present(which)
    if not found:
        raise FerattError(f"{path} has no checkpoint ({which}.pt): has the run trained an epoch yet?")
    if len(found) > 1:
        names = ", ".join(f"fold-{index}" for index in found)
        raise FerattError(f"run folder {path} holds several folds ({names}): choose one", field="fold")
    return run.fold(found[0]).checkpoint(which)


def load_trained(
    path: str | Path,
    fold: int | None = None,
    which: str = "best",
    device: torch.device | str = "cpu",
) -> TrainedModel:
    """Load the model that `path` names (see find_checkpoint) onto `device`, in eval mode."""
    path = find_checkpoint(path, fold, which)
    checkpoint = Checkpoint.load(path)
    try:
        config = checkpoint.config.resolved()
    except FerattError as exc:
        raise FerattError(f"{path} is not a valid feratt checkpoint: {exc}") from None
    model = build_model(config, checkpoint.num_classes)
    try:
        model.load_state_dict(checkpoint.model)
    except RuntimeError as exc:  # torch lists each mismatch on a line of its own
        problems = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()]
        shown = "; ".join(problems[:2]) + (f"; and {len(problems) - 2} more" if len(problems) > 2 else "")
        raise FerattError(f"{path} does not fit its own configuration: {shown or exc}") from None
    model.to(pick_device(device)).eval()
    return TrainedModel(
        model=model,
        config=config,
        classes=list(checkpoint.classes),
        fold=checkpoint.fold,
        epoch=checkpoint.epoch,
        checkpoint=path,
        feratt_version=checkpoint.feratt_version,
        framing=checkpoint.framing,
    )
