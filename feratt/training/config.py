"""The training configuration: the paper's defaults, every one an option, saved with each run."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from feratt.errors import FerattError

#: Model and input-size presets: the paper's network, and one narrow enough to train on a CPU.
TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"in_size": 128, "width": 1.0},
    "cpu-small": {"in_size": 64, "width": 0.25},
}


@dataclass(frozen=True)
class TrainConfig:
    """Everything training needs besides the shards; defaults follow the paper. Change it with `replace`."""

    method: str = "feratt-rep-cls"
    preset: str = "paper"
    in_size: int | None = None
    width: float | None = None
    epochs: int = 60
    batch_size: int = 200
    lr: float = 1e-4
    amsgrad: bool = True
    weight_decay: float = 0.0
    attention_weight: float = 10.0
    representation_weight: float = 1.0
    classification_weight: float = 1.0
    attention_loss: str = "mse"
    classification_loss: str = "bce"
    sigma: float = 1.0
    class_means: str = "batch"
    att_target: str = "face"
    teacher_forcing: float = 0.0
    attention_channels: int = 1
    ft_blocks: int = 4
    rec_concat: bool = False
    attention_weights: str | None = None
    fold_size: int = 10
    val_subjects: int = 2
    seed: int = 0
    workers: int = 2
    buffer_size: int = 1000
    noise_sigma: tuple[float, float] | None = None
    verify: bool = True
    deterministic: bool = False
    amp: bool = True
    channels_last: bool = True
    compile: bool = False
    tensorboard: bool = False
    max_batches: int | None = None
    real_test: str | None = None  # a face bank: also test on the test subjects' unrendered faces

    def resolved(self) -> TrainConfig:
        """A copy with the preset's input size and width filled in where not given."""
        if self.preset not in TRAIN_PRESETS:
            raise FerattError(
                f"unknown preset {self.preset!r}; valid presets: {', '.join(TRAIN_PRESETS)}", field="preset"
            )
        preset = TRAIN_PRESETS[self.preset]
        return dataclasses.replace(
            self,
            in_size=self.in_size or preset["in_size"],
            width=self.width or preset["width"],
        )

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON values (config.json)."""
        data = dataclasses.asdict(self)
        if data["noise_sigma"] is not None:
            data["noise_sigma"] = list(data["noise_sigma"])
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """The config of `to_dict`'s values; fields left out take their defaults."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise FerattError(f"unknown training option(s) {', '.join(unknown)}")
        values = dict(data)
        if values.get("noise_sigma") is not None:
            values["noise_sigma"] = tuple(values["noise_sigma"])
        return cls(**values)


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read training options from a JSON or YAML file (YAML needs PyYAML installed)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise FerattError(f"cannot read {path}: {exc.strerror or exc}") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise FerattError(f"{path}: YAML configs need PyYAML (pip install pyyaml); or use JSON") from None
        data = yaml.safe_load(text)
    else:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise FerattError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise FerattError(f"{path} must hold a mapping of option names to values")
    return {key.replace("-", "_"): value for key, value in data.items()}
