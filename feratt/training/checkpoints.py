"""A fold folder's files: the checkpoints best.pt and last.pt, the metrics log, and what they tell.

A fold folder holds metrics.jsonl (one JSON line per epoch), last.pt (the state after the latest epoch,
optimizer included, to resume from) and best.pt (the model of the epoch that did best on validation).
Everything that reads or writes those files is here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from feratt import __version__
from feratt.atomic import atomic_path, atomic_write_bytes
from feratt.config.training import TrainConfig
from feratt.errors import FerattError
from feratt.training.accelerator import Precision
from feratt.training.build import build_model
from feratt.training.device import pick_device
from feratt.training.folds import FoldSplit
from feratt.training.models import model_outputs

CHECKPOINT_VERSION = 1
METRICS_FILE = "metrics.jsonl"
BEST = "best.pt"
LAST = "last.pt"


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write a checkpoint atomically."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    try:
        atomic_write_bytes(path, buffer.getvalue())
    except OSError as exc:  # a failed write() names no file, or only the temporary one
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc


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


def _check_fields(path: Path, state: dict[str, Any]) -> None:
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
    if not isinstance(state.get("scaler"), dict | None):  # a float16 run's gradient scaler
        raise FerattError(f"{path} is not a valid feratt checkpoint: its gradient scaler state is not a dict")


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Read a feratt checkpoint of this version, loading tensors and plain data only (weights_only)."""
    state = _load(path)
    if not isinstance(state, dict) or state.get("checkpoint_version") != CHECKPOINT_VERSION:
        found = state.get("checkpoint_version") if isinstance(state, dict) else None
        raise FerattError(
            f"{path} is not a feratt checkpoint of this version "
            f"(format {found!r}, this feratt {__version__} reads format {CHECKPOINT_VERSION})"
        )
    _check_fields(path, state)
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


def checkpoint_state(
    config: TrainConfig,
    classes: list[str],
    fold: int,
    epoch: int,
    best_accuracy: float,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    framing: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What a checkpoint holds after `epoch`: the model, the optimizer and RNG state, and the settings.

    `framing` is the render's framing record (feratt.framing), so that inference frames faces alike.
    """
    extra = {} if framing is None else {"framing": dict(framing)}
    return {
        "checkpoint_version": CHECKPOINT_VERSION,
        "feratt_version": __version__,
        "method": config.method,
        "num_classes": len(classes),
        "classes": classes,
        "config": config.to_dict(),
        "fold": int(fold),
        "epoch": int(epoch),
        "best_accuracy": float(best_accuracy),  # a plain float: weights_only refuses numpy scalars
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": {"torch": torch.get_rng_state()},
        **extra,
    }


def save_epoch_checkpoints(fold_dir: Path, state: dict[str, Any], improved: bool) -> None:
    """Write last.pt, and best.pt (without the optimizer) when the epoch did best on validation so far."""
    if improved:
        save_checkpoint(fold_dir / BEST, {**state, "optimizer": None})
    save_checkpoint(fold_dir / LAST, state)


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
    state = load_checkpoint(path, method, num_classes)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if precision is not None:
        precision.load_state_dict(state.get("scaler"))
    torch.set_rng_state(state["rng"]["torch"])
    return state["epoch"], state["best_accuracy"]


def _records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    try:
        records = [json.loads(line) for line in path.read_text().splitlines()]
    except (UnicodeDecodeError, ValueError) as exc:
        raise FerattError(f"{path} is not a feratt metrics log: {exc}") from None
    if not all(isinstance(r, dict) and isinstance(r.get("epoch"), int) for r in records):
        raise FerattError(f"{path} is not a feratt metrics log: a line is not an epoch's record")
    return records


class MetricsLog:
    """Appends one JSON line per epoch to metrics.jsonl (rank 0 only)."""

    def __init__(self, path: Path, enabled: bool) -> None:
        self.path = path
        self.enabled = enabled

    def write(self, record: dict[str, Any]) -> None:
        """Append one epoch's record."""
        if not self.enabled:
            return
        size = self.path.stat().st_size if self.path.exists() else 0
        try:
            with open(self.path, "a") as handle:
                handle.write(json.dumps(record, sort_keys=True) + "\n")
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.truncate(self.path, size)  # no half line for a resume to trip on
            raise OSError(exc.errno, exc.strerror or str(exc), str(self.path)) from exc

    def truncate_after(self, epoch: int) -> None:
        """Drop lines of epochs after `epoch`, left by a run killed before its checkpoint landed."""
        if not self.enabled or not self.path.exists():
            return
        kept = [record for record in _records(self.path) if record["epoch"] <= epoch]
        with atomic_path(self.path) as tmp:
            tmp.write_text("".join(json.dumps(record, sort_keys=True) + "\n" for record in kept))

    def clear(self) -> None:
        """Remove the log of an earlier run, when a fold starts over."""
        if self.enabled and self.path.exists():
            self.path.unlink()


def read_metrics(fold_dir: str | Path) -> list[dict[str, Any]]:
    """The epoch records of a fold folder's metrics.jsonl, oldest first ([] when there is none)."""
    return _records(Path(fold_dir) / METRICS_FILE)


def fold_finished(fold_dir: str | Path, epochs: int) -> bool:
    """Whether a fold's training ran all its epochs (its last checkpoint is of the final epoch)."""
    fold_dir = Path(fold_dir)
    if not (fold_dir / BEST).is_file():
        return False
    records = read_metrics(fold_dir)
    return bool(records) and records[-1]["epoch"] == epochs - 1


@dataclass(frozen=True)
class Scores:
    """A model's headline test figures (and the epoch it was picked at, for the best-on-validation one)."""

    accuracy: float
    precision: float
    recall: float
    f1: float
    confusion: list[list[int]]
    epoch: int | None = None

    @classmethod
    def of(cls, metrics: dict[str, Any], epoch: int | None = None) -> Scores:
        """The headline figures of a metrics record."""
        return cls(
            metrics["accuracy"],
            metrics["precision"],
            metrics["recall"],
            metrics["f1"],
            metrics["confusion"],
            epoch,
        )

    def to_dict(self) -> dict[str, Any]:
        """The figures as summary.json writes them."""
        data = dataclasses.asdict(self)
        if self.epoch is None:
            del data["epoch"]
        return data


@dataclass(frozen=True)
class FoldResult:
    """One fold's subjects and the test figures of its final model and its best-on-validation model."""

    fold: int
    test_subjects: list[str]
    validation_subjects: list[str]
    final: Scores | None = None
    best_on_validation: Scores | None = None
    real_final: Scores | None = None  # on the test subjects' unrendered faces (real test)
    real_best_on_validation: Scores | None = None

    def to_dict(self) -> dict[str, Any]:
        """The fold's entry in summary.json."""
        data: dict[str, Any] = {
            "fold": self.fold,
            "test_subjects": self.test_subjects,
            "validation_subjects": self.validation_subjects,
        }
        for name in ("final", "best_on_validation", "real_final", "real_best_on_validation"):
            scores = getattr(self, name)
            if scores is not None:
                data[name] = scores.to_dict()
        return data


def fold_summary(fold_dir: str | Path, split: FoldSplit) -> FoldResult:
    """Test figures of the final model and of the model that did best on validation, from metrics.jsonl."""
    records = read_metrics(fold_dir)
    scores: dict[str, Scores] = {}
    if records:
        last = records[-1]
        key = "validation" if "validation" in last else "train"
        best = max(records, key=lambda record: record[key]["accuracy"])
        for part, prefix in (("test", ""), ("real_test", "real_")):
            if part in last:
                scores[f"{prefix}final"] = Scores.of(last[part])
                scores[f"{prefix}best_on_validation"] = Scores.of(best[part], best["epoch"])
    return FoldResult(split.fold, split.test, split.validation, **scores)


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
    framing: dict[str, Any] | None = None  # the render's framing record; None in older checkpoints

    @property
    def method(self) -> str:
        """The name of the method the model was trained with."""
        return self.config.method

    @property
    def outputs(self) -> frozenset[str]:
        """The ModelOutput fields the model's forward fills, as its class declares them."""
        return model_outputs(self.model)


def run_checkpoints(run_dir: str | Path, which: str = "best") -> list[Path]:
    """The `which`.pt of every fold folder of a run folder that has one, in fold order."""
    folders = [
        p for p in Path(run_dir).glob("fold-*") if p.name[5:].isdigit() and (p / f"{which}.pt").is_file()
    ]
    return [p / f"{which}.pt" for p in sorted(folders, key=lambda p: int(p.name[5:]))]


def find_checkpoint(path: str | Path, fold: int | None = None, which: str = "best") -> Path:
    """The checkpoint that `path` names: a .pt file, a fold folder, or a run folder (with `fold`)."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise FerattError(f"{path} is neither a checkpoint file nor a run folder")
    if (path / f"{which}.pt").is_file():
        return path / f"{which}.pt"
    if fold is not None:
        candidate = path / f"fold-{fold}" / f"{which}.pt"
        if not candidate.is_file():
            raise FerattError(
                f"run folder {path} has no checkpoint for fold {fold} ({candidate} is missing)", field="fold"
            )
        return candidate
    found = run_checkpoints(path, which)
    if not found:
        raise FerattError(f"{path} has no checkpoint ({which}.pt): has the run trained an epoch yet?")
    if len(found) > 1:
        names = ", ".join(p.parent.name for p in found)
        raise FerattError(f"run folder {path} holds several folds ({names}): choose one", field="fold")
    return found[0]


def load_trained(
    path: str | Path,
    fold: int | None = None,
    which: str = "best",
    device: torch.device | str = "cpu",
) -> TrainedModel:
    """Load the model that `path` names (see find_checkpoint) onto `device`, in eval mode."""
    checkpoint = find_checkpoint(path, fold, which)
    state = read_checkpoint(checkpoint)
    try:
        config = TrainConfig.from_dict(state["config"]).resolved()
    except FerattError as exc:
        raise FerattError(f"{checkpoint} is not a valid feratt checkpoint: {exc}") from None
    model = build_model(config, int(state["num_classes"]))
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise FerattError(f"{checkpoint} does not fit its own configuration: {exc}") from None
    model.to(pick_device(device)).eval()
    return TrainedModel(
        model=model,
        config=config,
        classes=list(state["classes"]),
        fold=int(state["fold"]),
        epoch=int(state["epoch"]),
        checkpoint=checkpoint,
        feratt_version=str(state.get("feratt_version", "")),
        framing=state.get("framing"),
    )
