"""feratt: synthetic face-expression training sets and the FERAtt network.

The public API, one function per stage, each taking a typed request (or its fields as keyword
arguments), optional `progress(done, total)` and `log(line)` callbacks, and returning a typed result::

    import feratt

    bank = feratt.build_bank(source="builtin:demo", out="bank.h5")
    render = feratt.render(bank="bank.h5", render="synth")
    run = feratt.train(render="synth", run="runs/base", config=feratt.TrainConfig(method="baseline"))

Names load on first use, so `import feratt` (and `feratt --help`) stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "BankRequest": "feratt.datasets.bank",
    "BankResult": "feratt.datasets.bank",
    "build_bank": "feratt.datasets.bank",
    "BackgroundSource": "feratt.renderer.render",
    "RenderRequest": "feratt.renderer.render",
    "RenderResult": "feratt.renderer.render",
    "render": "feratt.renderer.render",
    "index_render": "feratt.renderer.render",
    "inspect_render": "feratt.renderer.inspect",
    "verify_render": "feratt.renderer.inspect",
    "RenderConfig": "feratt.config.rendering",
    "TrainConfig": "feratt.config.training",
    "TrainRequest": "feratt.training.train",
    "TrainResult": "feratt.training.train",
    "train": "feratt.training.train",
    "EvaluationResult": "feratt.experiments.evaluate",
    "evaluate": "feratt.experiments.evaluate",
    "ExperimentRequest": "feratt.experiments.experiment",
    "ExperimentResult": "feratt.experiments.experiment",
    "run_experiment": "feratt.experiments.experiment",
    "NoiseResult": "feratt.experiments.noise",
    "noise_robustness": "feratt.experiments.noise",
    "EmbedResult": "feratt.experiments.embed",
    "embed": "feratt.experiments.embed",
    "Prediction": "feratt.inference.predict",
    "PredictionResult": "feratt.inference.predict",
    "PredictRequest": "feratt.inference.predict",
    "predict": "feratt.inference.predict",
    "export_onnx": "feratt.inference.export",
    "DetectorSettings": "feratt.datasets.detect",
    "find_faces": "feratt.datasets.detect",
    "Framing": "feratt.config.framing",
    "load_trained": "feratt.training.checkpoints",
    "create_model": "feratt.training.models",
    "FerattError": "feratt.errors",
    "FaceBank": "feratt.artifacts.bank",
    "RenderSet": "feratt.artifacts.render",
    "RunFolder": "feratt.artifacts.run",
    "Checkpoint": "feratt.artifacts.checkpoint",
    "EvaluateRequest": "feratt.experiments.evaluate",
    "NoiseRequest": "feratt.experiments.noise",
    "EmbedRequest": "feratt.experiments.embed",
    "ExportRequest": "feratt.inference.export",
    "ExportResult": "feratt.inference.export",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'feratt' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
