"""Trained models from run folders or checkpoint files, with the fold they were trained for."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from feratt.errors import FerattError
from feratt.training.config import TrainConfig


@dataclass
class TrainedModel:
    """A model in eval mode, its training configuration and where it came from."""

    model: nn.Module
    config: TrainConfig
    classes: list[str]
    fold: int
    epoch: int
    checkpoint: Path
    feratt_version: str

    @property
    def method(self) -> str:
        return self.config.method

    @property
    def is_feratt(self) -> bool:
        return self.config.method != "baseline"


def find_checkpoint(path: str | Path, fold: int | None = None, which: str = "best") -> Path:
    """The checkpoint that `path` names: a .pt file, a fold folder, or a run folder (with `fold`)."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise FerattError(f"{path} is neither a checkpoint file nor a run folder")
    if (path / f"{which}.pt").is_file():
        return path / f"{which}.pt"
    folds = sorted(
        (p for p in path.glob("fold-*") if (p / f"{which}.pt").is_file()), key=lambda p: int(p.name[5:])
    )
    if fold is not None:
        candidate = path / f"fold-{fold}" / f"{which}.pt"
        if not candidate.is_file():
            raise FerattError(f"run folder {path} has no checkpoint for fold {fold} ({candidate} is missing)")
        return candidate
    if not folds:
        raise FerattError(f"{path} has no checkpoint ({which}.pt): has the run trained an epoch yet?")
    if len(folds) > 1:
        names = ", ".join(p.name for p in folds)
        raise FerattError(f"run folder {path} holds several folds ({names}): choose one with --fold")
    return folds[0] / f"{which}.pt"


def load_trained(
    path: str | Path,
    fold: int | None = None,
    which: str = "best",
    device: torch.device | str = "cpu",
) -> TrainedModel:
    """Load the model that `path` names (see find_checkpoint) onto `device`, in eval mode."""
    from feratt.training.trainer import build_model, read_checkpoint

    checkpoint = find_checkpoint(path, fold, which)
    state: dict[str, Any] = read_checkpoint(checkpoint)
    config = TrainConfig.from_dict(state["config"]).resolved()
    model = build_model(config, int(state["num_classes"]))
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise FerattError(f"{checkpoint} does not fit its own configuration: {exc}") from None
    model.to(device).eval()
    return TrainedModel(
        model=model,
        config=config,
        classes=list(state["classes"]),
        fold=int(state["fold"]),
        epoch=int(state["epoch"]),
        checkpoint=checkpoint,
        feratt_version=str(state.get("feratt_version", "")),
    )
