"""The model registry, timm-style: each network registers itself where it is defined, by name.

A registered class declares, as class attributes, what its forward gives and what input it needs:
`outputs`, the ModelOutput fields its forward fills, and `input_multiple`, the multiple its input side
(and its `in_size`) must be. Code that must know before a forward pass asks those, never the name.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from torch import nn

from feratt.errors import FerattError
from feratt.training.models.blocks import ModelOutput

ModelT = TypeVar("ModelT", bound=type[nn.Module])

#: The fields a model may declare among its outputs (teacher_forced is a flag, always set).
OUTPUT_FIELDS = frozenset(f.name for f in dataclasses.fields(ModelOutput)) - {"teacher_forced"}


@dataclass(frozen=True)
class ModelEntry:
    """A registered network: its name, its class and what the class declares."""

    name: str
    cls: type[nn.Module]
    outputs: frozenset[str]
    input_multiple: int

    @property
    def options(self) -> tuple[str, ...]:
        """The keyword arguments the class's constructor takes, in order."""
        parameters = inspect.signature(self.cls.__init__).parameters
        return tuple(name for name in parameters if name != "self")


_REGISTRY: dict[str, ModelEntry] = {}


def _declared(cls: type[nn.Module]) -> tuple[frozenset[str], int]:
    """The outputs and input multiple `cls` declares; ValueError when they are missing or malformed."""
    outputs = getattr(cls, "outputs", None)
    multiple = getattr(cls, "input_multiple", None)
    if not isinstance(outputs, frozenset) or "logits" not in outputs or not outputs <= OUTPUT_FIELDS:
        raise ValueError(f"{cls.__name__}.outputs must be a frozenset of ModelOutput fields with logits")
    if not isinstance(multiple, int) or multiple < 1:
        raise ValueError(f"{cls.__name__}.input_multiple must be a positive int")
    return outputs, multiple


def _path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def register_model(name: str) -> Callable[[ModelT], ModelT]:
    """Class decorator: register the model class under `name`, with the outputs and input it declares."""

    def register(cls: ModelT) -> ModelT:
        taken = _REGISTRY.get(name)
        # The same class again (its module reloaded) replaces the entry; another class is a mistake.
        if taken is not None and _path(taken.cls) != _path(cls):
            raise ValueError(f"model name {name!r} is taken by {_path(taken.cls)}")
        outputs, multiple = _declared(cls)
        _REGISTRY[name] = ModelEntry(name, cls, outputs, multiple)
        return cls

    return register


def list_models(pattern: str = "*") -> list[str]:
    """The names `create_model` knows that match the shell-style `pattern`, sorted."""
    return sorted(name for name in _REGISTRY if fnmatch.fnmatchcase(name, pattern))


def model_entry(name: str) -> ModelEntry:
    """The registered model `name`; FerattError, naming the known ones, when there is none."""
    if name not in _REGISTRY:
        raise FerattError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    return _REGISTRY[name]


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build model `name` with `kwargs` (num_classes is required); FerattError for unknown names/options."""
    entry = model_entry(name)
    unknown = sorted(set(kwargs) - set(entry.options))
    if unknown:
        raise FerattError(
            f"model {name!r} has no option(s) {', '.join(unknown)}; valid: {', '.join(entry.options)}"
        )
    if "num_classes" not in kwargs:
        raise FerattError(f"model {name!r} needs num_classes")
    return entry.cls(**kwargs)


def model_outputs(model: nn.Module) -> frozenset[str]:
    """The ModelOutput fields `model`'s forward fills, as its class declares them."""
    return _declared(type(model))[0]
