"""The models `feratt predict` runs: a feratt checkpoint through torch, or an exported model through ONNX.

Both take faces as RGB uint8 arrays (N, S, S, 3) at the model's input size and give class
probabilities (N, C) in float64 (a softmax of the logits in float64) and, for FERAtt, I_att as RGB
uint8. Torch is imported only when a checkpoint is opened, so that an ONNX model runs without it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from feratt.artifacts.render import RenderSet
from feratt.codec import JSONObject, decode, encode
from feratt.config.framing import Framing, from_checkpoint
from feratt.config.limits import MAX_CLASSES, MAX_IMAGE_SIDE
from feratt.errors import FerattError

#: The `kind` an exported model's metadata names, and the metadata every one holds.
ONNX_KIND = "feratt-classifier"
ONNX_KEYS = ("kind", "method", "classes", "input_size", "mean", "std", "framing", "fold", "epoch")


class Classifier(Protocol):
    """What `predict` needs of a model."""

    source: Path
    method: str
    classes: list[str]
    in_size: int
    framing: Framing
    fold: int | None
    epoch: int | None
    has_attention: bool

    def __call__(self, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]: ...


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64."""
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def attention_to_uint8(attention: np.ndarray) -> np.ndarray:
    """I_att (N, 3, S, S) in [0, 1] as RGB uint8 (N, S, S, 3), rounded as torch's path rounds it."""
    scaled = np.rint(np.clip(attention.astype(np.float32), 0.0, 1.0) * np.float32(255.0))
    return scaled.astype(np.uint8).transpose(0, 2, 3, 1)


def _framing_of(record: Any, in_size: int, where: str, render: str | os.PathLike[str] | None) -> Framing:
    if render is not None:
        try:
            return RenderSet.open(render).framing
        except FerattError as exc:
            raise FerattError(str(exc), field="render") from None
    return from_checkpoint(record, in_size, where)


@dataclass
class TorchClassifier:
    """A feratt checkpoint, loaded through torch."""

    trained: Any  # feratt.training.checkpoints.TrainedModel
    framing: Framing
    batch_size: int = 32

    @property
    def source(self) -> Path:
        return self.trained.checkpoint

    @property
    def method(self) -> str:
        return self.trained.method

    @property
    def classes(self) -> list[str]:
        return list(self.trained.classes)

    @property
    def in_size(self) -> int:
        return int(self.trained.config.in_size)

    @property
    def fold(self) -> int | None:
        return self.trained.fold

    @property
    def epoch(self) -> int | None:
        return self.trained.epoch

    @property
    def has_attention(self) -> bool:
        return "attention_image" in self.trained.outputs

    def __call__(self, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        from feratt.inference.torch_model import predict_images

        predictions = predict_images(self.trained, list(faces), self.batch_size)
        return predictions.probabilities, predictions.attention


@dataclass
class OnnxClassifier:
    """A model written by `feratt export`, run by onnxruntime on the CPU (no torch)."""

    session: Any
    source: Path
    method: str
    classes: list[str]
    in_size: int
    framing: Framing
    mean: np.ndarray
    std: np.ndarray
    fold: int | None
    epoch: int | None
    has_attention: bool
    batch_size: int = 32

    def __call__(self, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        probabilities, attention = [], []
        for start in range(0, len(faces), self.batch_size):
            batch = faces[start : start + self.batch_size].astype(np.float32).transpose(0, 3, 1, 2)
            x = (batch / np.float32(255.0) - self.mean) / self.std
            outputs = self.session.run(None, {"image": np.ascontiguousarray(x, dtype=np.float32)})
            probabilities.append(softmax(outputs[0]))
            if self.has_attention:
                attention.append(attention_to_uint8(outputs[1]))
        empty = np.zeros((0, len(self.classes)))
        return (
            np.concatenate(probabilities) if probabilities else empty,
            np.concatenate(attention) if attention else None,
        )


@dataclass(frozen=True)
class OnnxMetadata:
    """What an exported model says of itself: checked before anything is sized from it."""

    kind: str
    method: str
    classes: list[str]
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    framing: JSONObject
    fold: int
    epoch: int

    def __post_init__(self) -> None:
        if not 1 <= len(self.classes) <= MAX_CLASSES:
            raise FerattError(f"it names {len(self.classes)} classes; feratt reads 1 to {MAX_CLASSES}")
        if not 1 <= self.input_size <= MAX_IMAGE_SIDE:
            raise FerattError(f"its input size {self.input_size} is not 1 to {MAX_IMAGE_SIDE} pixels")
        if not all(value > 0 for value in self.std):
            raise FerattError(f"its std {list(self.std)} is not positive")


def _onnx_metadata(path: Path, session: Any) -> OnnxMetadata:
    meta = session.get_modelmeta().custom_metadata_map
    if meta.get("kind") != ONNX_KIND:
        raise FerattError(f"{path} is an ONNX model, but not one feratt exported (it has no feratt metadata)")
    missing = [key for key in ONNX_KEYS if key not in meta]
    if missing:
        raise FerattError(f"{path} lacks the feratt metadata {', '.join(missing)}")
    values: dict[str, object] = {"kind": meta["kind"]}
    for key in ONNX_KEYS[1:]:
        try:
            values[key] = json.loads(meta[key])
        except ValueError as exc:
            raise FerattError(f"{path} holds unreadable feratt metadata: {key}: {exc}") from None
    return decode(OnnxMetadata, values, f"{path} (its feratt metadata)")


def open_onnx(path: str | os.PathLike[str], render: str | os.PathLike[str] | None = None) -> OnnxClassifier:
    """An exported feratt model for onnxruntime; a FerattError when it is not one or the extra is missing."""
    path = Path(path)
    try:
        import onnxruntime
    except ImportError:
        raise FerattError(
            "running an ONNX model needs onnxruntime: pip install 'feratt[onnx]'", field="checkpoint"
        ) from None
    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own types for files it cannot load
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FerattError(f"{path} is not a loadable ONNX model ({reason})") from None
    meta = _onnx_metadata(path, session)
    return OnnxClassifier(
        session=session,
        source=path,
        method=meta.method,
        classes=meta.classes,
        in_size=meta.input_size,
        framing=_framing_of(meta.framing, meta.input_size, str(path), render),
        mean=np.asarray(meta.mean, np.float32).reshape(1, -1, 1, 1),
        std=np.asarray(meta.std, np.float32).reshape(1, -1, 1, 1),
        fold=meta.fold,
        epoch=meta.epoch,
        has_attention=len(session.get_outputs()) > 1,
    )


def open_checkpoint(
    path: str | os.PathLike[str],
    fold: int | None = None,
    device: str = "auto",
    render: str | os.PathLike[str] | None = None,
) -> TorchClassifier:
    """A feratt checkpoint (run folder, fold folder or .pt file) through torch."""
    from feratt.training.checkpoints import load_trained
    from feratt.training.device import pick_device

    trained = load_trained(path, fold=fold, device=pick_device(device))
    record = None if trained.framing is None else encode(trained.framing)
    framing = _framing_of(record, int(trained.config.in_size), str(trained.checkpoint), render)
    return TorchClassifier(trained, framing)


def _signature(path: Path) -> bytes:
    """A file's first 8 bytes (b"" for a folder)."""
    if not path.is_file():
        return b""
    with open(path, "rb") as handle:
        return handle.read(8)


def open_model(
    path: str | os.PathLike[str],
    fold: int | None = None,
    device: str = "auto",
    render: str | os.PathLike[str] | None = None,
) -> Classifier:
    """The model `path` names: an exported .onnx file through onnxruntime, else a feratt checkpoint."""
    if Path(path).suffix.lower() == ".onnx":
        return open_onnx(path, render)
    if _signature(Path(path)) == b"\x89HDF\r\n\x1a\n":
        raise FerattError(
            f"{path} is an HDF5 file (a face bank or a render shard), not a model: give a checkpoint "
            "(.pt, a run or fold folder) or a model from feratt export (.onnx)"
        )
    return open_checkpoint(path, fold, device, render)
