"""`feratt export`: a checkpoint's classifier (and FERAtt's I_att) as an ONNX model for onnxruntime.

The model takes `image`, float32 (N, 3, S, S) RGB in [0, 1] (pixel / 255; the network standardises
inside), any batch size N, and gives `logits` (N, C) and, for FERAtt, `attention` (N, 3, S, S) in
[0, 1]. Its metadata holds what inference needs: input size, mean and std, class names, the framing.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from feratt import __version__
from feratt.atomic import atomic_path, remove_temporaries
from feratt.codec import JSONValue, encode
from feratt.config.framing import Framing
from feratt.errors import FerattError
from feratt.inference.backends import ONNX_KIND, open_checkpoint
from feratt.locks import exclusive
from feratt.progress import Log, Progress, no_log, no_progress
from feratt.requests import check_fields, request_from

OPSET = 18


@dataclass(frozen=True)
class ExportResult:
    """An exported model: where it is, what it classifies and how faces are framed for it."""

    path: Path
    checkpoint: Path
    method: str
    classes: list[str]
    input_size: int  # side of the model's square input, as the ONNX metadata names it
    outputs: list[str]
    framing: Framing


def metadata(model: Any, outputs: list[str]) -> dict[str, str]:
    """The ONNX metadata of an exported TorchClassifier `model`: each value JSON text (but `kind`)."""
    values: dict[str, JSONValue] = {
        "method": model.method,
        "classes": list(model.classes),
        "input_size": model.in_size,
        "mean": [0.0, 0.0, 0.0],
        "std": [1.0, 1.0, 1.0],
        "framing": encode(model.framing),
        "fold": model.fold,
        "epoch": model.epoch,
        "feratt_version": __version__,
        "input": "image: float32 N x 3 x S x S, RGB, (pixel / 255 - mean) / std",
        "outputs": outputs,
    }
    return {"kind": ONNX_KIND, **{key: json.dumps(value) for key, value in values.items()}}


def _exportable(model: Any) -> Any:
    """The network as a module whose forward returns a tuple: (logits,) or (logits, I_att)."""
    import torch

    class Exported(torch.nn.Module):
        def __init__(self, network: torch.nn.Module) -> None:
            super().__init__()
            self.network = network

        def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
            output = self.network(image)
            if output.attention_image is None:
                return (output.logits,)
            return output.logits, output.attention_image

    return Exported(model).eval()


def _onnx_program(module: Any, in_size: int, outputs: list[str]) -> Any:
    """torch.onnx's dynamo exporter on `module`, batch size dynamic, its chatter kept off the terminal."""
    import torch

    example = torch.rand(2, 3, in_size, in_size)
    batch = torch.export.Dim("batch", min=1, max=65536)
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            return torch.onnx.export(
                module,
                (example,),
                None,
                input_names=["image"],
                output_names=outputs,
                dynamic_shapes={"image": {0: batch}},
                opset_version=OPSET,
                dynamo=True,
            )
    except ImportError as exc:
        raise FerattError(f"exporting to ONNX needs {exc.name}: pip install 'feratt[onnx]'") from None
    finally:
        quiet.setLevel(level)


@dataclass(frozen=True, kw_only=True)
class ExportRequest:
    """Which model `export_onnx` writes (a run folder, fold folder or checkpoint), and where."""

    checkpoint: str | os.PathLike[str]
    out: str | os.PathLike[str]  # the .onnx file
    fold: int | None = None  # the fold, for a run folder of several
    render: str | os.PathLike[str] | None = None  # frame faces as this render did (an old checkpoint)
    overwrite: bool = False  # replace an existing file

    def __post_init__(self) -> None:
        check_fields(self)


def export_onnx(
    request: ExportRequest | None = None,
    /,
    *,
    progress: Progress | None = None,
    log: Log | None = None,
    **fields: Any,
) -> ExportResult:
    """Write the model of a checkpoint (run folder, fold folder or .pt file) as ONNX; the fields are
    ExportRequest's."""
    request = request_from(ExportRequest, request, fields)
    out = Path(request.out)
    if out.suffix.lower() != ".onnx":
        raise FerattError(f"the exported model's name must end in .onnx, not {out.name}", field="out")
    if not out.parent.is_dir():
        raise FerattError(f"cannot write {out}: folder {out.parent} does not exist", field="out")
    with exclusive(out, what=f"the exported model {out}"):
        if out.exists() and not request.overwrite:
            raise FerattError(f"{out} exists already; overwrite replaces it", field="overwrite")
        remove_temporaries(out)
        return _export(request, out, progress or no_progress, log or no_log)


def _export(request: ExportRequest, out: Path, report: Progress, say: Log) -> ExportResult:
    """`export_onnx`, once the lock of `out` is held."""
    checkpoint, fold, render = request.checkpoint, request.fold, request.render
    try:
        import onnx
    except ImportError:
        raise FerattError("exporting to ONNX needs onnx: pip install 'feratt[onnx]'") from None
    report(0, 2)
    model = open_checkpoint(checkpoint, fold, "cpu", render)
    outputs = ["logits", "attention"] if model.has_attention else ["logits"]
    say(f"exporting {model.method} ({', '.join(outputs)}) at {model.in_size} px to {out}")
    program = _onnx_program(_exportable(model.trained.model), model.in_size, outputs)
    report(1, 2)
    proto = program.model_proto
    for key, value in metadata(model, outputs).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    try:
        with atomic_path(out) as tmp:
            onnx.save(proto, str(tmp))
    except OSError as exc:
        raise FerattError(f"cannot write {out}: {exc.strerror or exc}") from None
    report(2, 2)
    return ExportResult(out, model.source, model.method, model.classes, model.in_size, outputs, model.framing)
