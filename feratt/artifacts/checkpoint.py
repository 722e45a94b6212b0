"""A checkpoint file (best.pt, last.pt): a model's weights and what it was trained with, all typed.

The file is a torch.save of plain data: tensors, numbers, strings, lists and dicts, read back with
`weights_only=True` so that a file never runs code. `Checkpoint.load` checks every field's type, decodes
the training configuration and the framing record, and refuses another format version.
"""

from __future__ import annotations

import io
import os
import pickle
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from feratt import __version__
from feratt.atomic import atomic_write_bytes
from feratt.codec import decode, encode
from feratt.config.framing import Framing, from_checkpoint
from feratt.config.limits import MAX_CLASSES
from feratt.config.training import TrainConfig
from feratt.errors import FerattError

CHECKPOINT_VERSION = 1

#: The fields every checkpoint holds and their types (bool is an int, so it is refused separately).
_FIELDS: dict[str, type | tuple[type, ...]] = {
    "method": str,
    "num_classes": int,
    "classes": list,
    "config": dict,
    "fold": int,
    "epoch": int,
    "best_accuracy": (int, float),
    "model": dict,
}
#: Lines of torch's weights-only refusal that explain torch's defaults, not the file.
_TORCH_BOILERPLATE = ("Weights only load failed", "Please file an issue", "Check the documentation")

StateDict = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Checkpoint:
    """A model's weights after `epoch` of fold `fold`, with its method, classes, settings and framing."""

    method: str
    classes: tuple[str, ...]
    config: TrainConfig
    fold: int
    epoch: int
    best_accuracy: float
    model: StateDict
    optimizer: dict[str, object] | None = None  # last.pt only: what a resumed run continues from
    rng: dict[str, torch.Tensor] | None = None
    scaler: dict[str, object] | None = None  # a float16 run's gradient scaler
    framing: Framing | None = None  # how the training faces were framed; None in older checkpoints
    feratt_version: str = __version__

    @property
    def num_classes(self) -> int:
        """The number of classes the model scores."""
        return len(self.classes)

    def without_optimizer(self) -> Checkpoint:
        """This checkpoint without the optimizer's state (best.pt keeps only the model)."""
        return replace(self, optimizer=None)

    def framing_or_defaults(self, where: str) -> Framing:
        """The recorded framing; the bank's defaults, with a warning, when the checkpoint predates it."""
        return self.framing if self.framing is not None else from_checkpoint(None, self.config.in_size, where)

    def state(self) -> dict[str, object]:
        """The plain data the file holds, in the order feratt has always written it."""
        state: dict[str, object] = {
            "checkpoint_version": CHECKPOINT_VERSION,
            "feratt_version": self.feratt_version,
            "method": self.method,
            "num_classes": self.num_classes,
            "classes": list(self.classes),
            "config": encode(self.config),
            "fold": int(self.fold),
            "epoch": int(self.epoch),
            "best_accuracy": float(self.best_accuracy),  # a plain float: weights_only refuses numpy scalars
            "model": self.model,
            "optimizer": self.optimizer,
            "rng": self.rng,
        }
        if self.framing is not None:
            state["framing"] = encode(self.framing)
        state["scaler"] = self.scaler
        return state

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the checkpoint atomically; an OSError names `path`."""
        buffer = io.BytesIO()
        torch.save(self.state(), buffer)
        try:
            atomic_write_bytes(path, buffer.getvalue())
        except OSError as exc:  # a failed write() names no file, or only the temporary one
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Checkpoint:
        """Read a feratt checkpoint of this version: tensors and plain data only (weights_only)."""
        path = Path(path)
        state = _load(path)
        if not isinstance(state, dict) or state.get("checkpoint_version") != CHECKPOINT_VERSION:
            found = state.get("checkpoint_version") if isinstance(state, dict) else None
            raise FerattError(
                f"{path} is not a feratt checkpoint of this version "
                f"(format {found!r}, this feratt {__version__} reads format {CHECKPOINT_VERSION})"
            )
        _check_fields(path, state)
        try:
            config = decode(TrainConfig, state["config"], f"{path} (its training configuration)")
            framing = (
                None if state.get("framing") is None else from_checkpoint(state["framing"], 0, str(path))
            )
        except FerattError as exc:
            raise FerattError(f"{path} is not a valid feratt checkpoint: {exc}") from None
        return cls(
            method=state["method"],
            classes=tuple(state["classes"]),
            config=config,
            fold=state["fold"],
            epoch=state["epoch"],
            best_accuracy=float(state["best_accuracy"]),
            model=state["model"],
            optimizer=state.get("optimizer"),
            rng=state.get("rng"),
            scaler=state.get("scaler"),
            framing=framing,
            feratt_version=str(state.get("feratt_version", "")),
        )

    def check_matches(self, path: Path, method: str, num_classes: int) -> None:
        """A FerattError unless this checkpoint is of `method` with `num_classes` classes."""
        if self.method != method or self.num_classes != num_classes:
            raise FerattError(
                f"checkpoint {path} is for {self.method} with {self.num_classes} classes, "
                f"not {method} with {num_classes}"
            )


def _refusal(exc: Exception) -> str:
    """The line of torch's weights-only refusal that says what the file holds."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(_TORCH_BOILERPLATE)]
    return (useful or lines or [type(exc).__name__])[0]


def _load(path: Path) -> Any:
    """torch.load with weights_only=True: tensors and plain data only, never code from the file."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. about the pickle protocol of a foreign file
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise FerattError(
            f"{path} is not a feratt checkpoint: it holds objects other than tensors, numbers, strings, "
            f"lists and dicts, which feratt refuses to load ({_refusal(exc)})"
        ) from None
    except OSError:
        raise
    except Exception as exc:  # torch raises many types for a bad file
        raise FerattError(f"cannot read checkpoint {path}: {_refusal(exc)}") from None


def _check_fields(path: Path, state: dict[str, object]) -> None:
    """FerattError unless `state` holds every checkpoint field with its type."""
    for name, kind in _FIELDS.items():
        value = state.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise FerattError(
                f"{path} is not a valid feratt checkpoint: {name!r} is missing or of the wrong type"
            )
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state["model"].items()):
        raise FerattError(
            f"{path} is not a valid feratt checkpoint: its model is not a state_dict of tensors"
        )
    if not all(isinstance(name, str) for name in state["classes"]):
        raise FerattError(f"{path} is not a valid feratt checkpoint: its class names are not strings")
    classes, count = len(state["classes"]), state["num_classes"]
    if count != classes or not 1 <= count <= MAX_CLASSES:
        raise FerattError(
            f"{path} is not a valid feratt checkpoint: it declares {count} classes and names {classes} "
            f"(feratt reads 1 to {MAX_CLASSES})"
        )
    if not isinstance(state.get("scaler"), dict | None):  # a float16 run's gradient scaler
        raise FerattError(f"{path} is not a valid feratt checkpoint: its gradient scaler state is not a dict")
