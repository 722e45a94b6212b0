"""The training configuration: the paper's defaults, every one an option, saved with each run."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from feratt.codec import JSONValue
from feratt.config.limits import MAX_IMAGE_SIDE
from feratt.config.methods import METHODS
from feratt.errors import FerattError
from feratt.requests import MAX_SEED

#: Training options that may differ between the runs of one run folder, a resumed run included: they
#: change how a run goes (loader workers, checks, logs, how often it tests, kernels), not what it learns.
PER_RUN_OPTIONS = (
    "workers",
    "real_test",
    "tensorboard",
    "verify",
    "test_every",
    "compile",
    "channels_last",
    "deterministic",
)

#: Presets: the paper's configuration, and one narrow enough to train on a CPU in a few epochs. A preset
#: may set any TrainConfig field; TrainConfig.from_options says which value wins.
TRAIN_PRESETS: dict[str, dict[str, bool | int | float | str]] = {
    "paper": {"in_size": 128, "width": 1.0},
    "cpu-small": {
        "in_size": 64,
        "width": 0.25,
        "batch_size": 32,
        "lr": 1e-3,
        "lr_schedule": "cosine",
        "warmup_epochs": 1,
        "class_means": "leave-one-out",
        "representation_weight": 0.1,
        "sigma": 4.0,
        "identity_init": True,
    },
}

#: The choices of the string options (the command line offers the same), and what the message calls them.
CHOICES: dict[str, tuple[str, ...]] = {
    "preset": tuple(TRAIN_PRESETS),
    "attention_loss": ("mse", "tanh"),
    "classification_loss": ("bce", "ce"),
    "class_means": ("batch", "leave-one-out"),
    "att_target": ("face", "input-masked"),
    "lr_schedule": ("constant", "cosine", "onecycle"),
    "amp": ("auto", "bf16", "fp16", "off"),
}
_CHOICE_NAMES = {
    "preset": "presets",
    "attention_loss": "attention losses",
    "classification_loss": "classification losses",
    "class_means": "class means",
    "att_target": "attention targets",
    "lr_schedule": "learning-rate schedules",
    "amp": "mixed precision modes",
}
#: The least value of each integer option.
_LEAST_INT = {
    "in_size": 32,
    "epochs": 1,
    "batch_size": 1,
    "attention_channels": 1,
    "ft_blocks": 1,
    "fold_size": 1,
    "val_subjects": 0,
    "workers": 0,
    "buffer_size": 0,
    "max_batches": 1,
    "warmup_epochs": 0,
    "attention_only_epochs": 0,
    "ramp_epochs": 0,
    "representation_ramp_epochs": 0,
    "pretrain_attention": 0,
    "samples_per_epoch": 1,
    "test_every": 1,
    "seed": 0,
}
#: The range of each number option: least, most (None: unbounded), and whether the least is excluded.
_NUMBER_RANGES: dict[str, tuple[float, float | None, bool]] = {
    "width": (0.05, 4.0, False),
    "lr": (0.0, None, True),
    "weight_decay": (0.0, None, False),
    "attention_weight": (0.0, None, False),
    "representation_weight": (0.0, None, False),
    "classification_weight": (0.0, None, False),
    "sigma": (0.0, None, True),
    "teacher_forcing": (0.0, 1.0, False),
}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _number_problem(name: str, value: Any) -> str | None:
    if not _is_number(value):
        return "must be a number"
    least, most, open_least = _NUMBER_RANGES.get(name, (-math.inf, None, False))
    if value < least or (open_least and value == least):
        return f"must be {'above' if open_least else 'at least'} {least:g}"
    if most is not None and value > most:
        return f"must be at most {most:g}"
    return None


def _int_problem(name: str, value: Any) -> str | None:
    if not isinstance(value, int) or isinstance(value, bool):
        return "must be a whole number"
    least = _LEAST_INT.get(name)
    if least is not None and value < least:
        return f"must be at least {least}"
    if name == "in_size" and value % 32:
        return "must be a multiple of 32"
    if name == "in_size" and value > MAX_IMAGE_SIDE:
        return f"must be at most {MAX_IMAGE_SIDE}"
    return None


def _str_problem(name: str, value: Any) -> str | None:
    if not isinstance(value, str):
        return "must be a string"
    if name in CHOICES and value not in CHOICES[name]:
        return f"is unknown (valid {_CHOICE_NAMES[name]}: {', '.join(CHOICES[name])})"
    return None


def _range_problem(value: Any) -> str | None:
    if not (isinstance(value, tuple) and len(value) == 2 and all(_is_number(v) for v in value)):
        return "must be a range LOW, HIGH of two numbers"
    if not 0 <= value[0] <= value[1] <= 1:
        return "must be a range with 0 <= LOW <= HIGH <= 1"
    return None


def _problem(name: str, kind: str, value: Any) -> str | None:
    """Why `value` does not suit option `name` of type `kind` (its annotation, None aside), or None."""
    if kind == "bool":
        return None if isinstance(value, bool) else "must be true or false"
    checks = {"int": _int_problem, "float": _number_problem, "str": _str_problem}
    if kind in checks:
        return checks[kind](name, value)
    return _range_problem(value)


@dataclass(frozen=True)
class TrainConfig:
    """Everything training needs besides the shards; defaults follow the paper. Change it with `replace`.

    A preset's settings (TRAIN_PRESETS) apply through `from_options`, as on the command line, where a value
    comes from, first to last: a flag given on the command line, the --config file, the preset, the
    defaults below. The constructor takes its arguments as given and only fills `in_size` and `width`
    from the preset (`resolved`).
    """

    method: str = "feratt-rep-cls"
    preset: str = "paper"
    in_size: int | None = None
    width: float | None = None
    epochs: int = 60
    batch_size: int = 200
    lr: float = 1e-4
    lr_schedule: str = "constant"
    warmup_epochs: int = 0
    amsgrad: bool = True
    weight_decay: float = 0.0
    attention_weight: float = 10.0
    representation_weight: float = 1.0
    classification_weight: float = 1.0
    attention_only_epochs: int = 0
    ramp_epochs: int = 0
    representation_ramp_epochs: int = 0
    detach_attention: bool = False
    identity_init: bool = False
    pretrain_attention: int = 0
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
    samples_per_epoch: int | None = None
    test_every: int = 1  # also scored: the last epoch and every epoch that does best on validation
    noise_sigma: tuple[float, float] | None = None
    verify: bool = True
    deterministic: bool = False
    amp: str = "auto"  # auto: bf16, or fp16 with a gradient scaler, on CUDA; float32 elsewhere
    channels_last: bool = True
    compile: bool = False
    tensorboard: bool = False
    max_batches: int | None = None
    real_test: str | None = None  # a face bank: also test on the test subjects' unrendered faces

    def __post_init__(self) -> None:
        if isinstance(self.noise_sigma, list):  # as JSON and YAML give it
            object.__setattr__(self, "noise_sigma", tuple(self.noise_sigma))
        if isinstance(self.amp, bool):  # runs saved before --amp took a mode: true was auto, false off
            object.__setattr__(self, "amp", "auto" if self.amp else "off")
        self.validate()
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.type.startswith("float") and isinstance(value, int):
                object.__setattr__(self, field.name, float(value))

    def validate(self) -> None:
        """FerattError naming the first option whose value has the wrong type or lies out of range."""
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is None and field.type.endswith("| None"):
                continue
            problem = _problem(field.name, field.type.split(" | ")[0], value)
            if problem is not None:
                raise FerattError(f"training option {field.name}: {value!r} {problem}", field=field.name)
        if isinstance(self.seed, int) and self.seed > MAX_SEED:
            raise FerattError(f"training option seed: {self.seed} must be at most {MAX_SEED}", field="seed")
        method = METHODS.get(self.method)  # an unknown method is refused where it is looked up
        if method is not None and self.in_size is not None and self.in_size % method.input_multiple:
            reason = f" ({method.input_reason})" if method.input_reason else ""
            raise FerattError(
                f"training option in_size: {self.in_size} must be a multiple of {method.input_multiple} for "
                f"{self.method}{reason}",
                field="in_size",
            )

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

    @staticmethod
    def upgrade_record(data: dict[str, JSONValue]) -> dict[str, JSONValue]:
        """A saved configuration of an older release in today's fields: `amp` was true or false."""
        if isinstance(data.get("amp"), bool):
            return {**data, "amp": "auto" if data["amp"] else "off"}
        return data

    @classmethod
    def from_options(cls, options: Mapping[str, object]) -> TrainConfig:
        """The config of the given `options`, the preset's settings filling the fields they leave out."""
        preset = options.get("preset", cls.preset)
        settings = TRAIN_PRESETS.get(preset, {}) if isinstance(preset, str) else {}
        data = {**settings, **options}
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise FerattError(f"unknown training option(s) {', '.join(unknown)}")
        return cls(**data)


def load_config_file(path: str | Path) -> dict[str, object]:
    """Read training options from a JSON or YAML file (YAML needs PyYAML installed)."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise FerattError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise FerattError(f"{path} is not a text file (not UTF-8)") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise FerattError(f"{path}: YAML configs need PyYAML (pip install pyyaml); or use JSON") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            reason = " ".join(str(exc).split())  # PyYAML's message spans lines
            raise FerattError(f"{path} is not valid YAML: {reason}") from None
    else:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise FerattError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not all(isinstance(key, str) for key in data):
        raise FerattError(f"{path} must hold a mapping of option names to values")
    return {key.replace("-", "_"): value for key, value in data.items()}


def _fields(config: TrainConfig) -> dict[str, object]:
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}


def config_changes(config: TrainConfig, saved: TrainConfig) -> list[str]:
    """The fields, sorted, in which two configurations differ, per-run options aside."""
    mine, theirs = _fields(config), _fields(saved)
    return sorted(k for k in mine if k not in PER_RUN_OPTIONS and mine[k] != theirs[k])


def describe_changes(changes: list[str], config: TrainConfig, saved: TrainConfig) -> str:
    """The changed fields with the saved value and this one's, as "lr 0.0001 there, 0.001 here"."""
    mine, theirs = _fields(config), _fields(saved)
    return "; ".join(f"{k} {theirs[k]!r} there, {mine[k]!r} here" for k in changes)
