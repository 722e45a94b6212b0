"""Renderer options: the ranges that per-sample parameters are drawn from, and named presets."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, TypeVar

from feratt.config.limits import MAX_IMAGE_SIDE
from feratt.errors import FerattError

_T = TypeVar("_T")


def _pair(owner: object, name: str) -> tuple[float, float]:
    """Store field `name` as a (low, high) tuple of floats (a caller may hand over a list)."""
    value = getattr(owner, name)
    where = f"{type(owner).__name__}.{name}"
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise FerattError(f"{where} must be a (low, high) pair, not {value!r}") from None
    if not (math.isfinite(low) and math.isfinite(high)) or low > high:
        raise FerattError(f"{where} must be a finite (low, high) with low <= high, not {value!r}")
    object.__setattr__(owner, name, (low, high))
    return low, high


def _check(ok: bool, owner: object, message: str) -> None:
    if not ok:
        raise FerattError(f"{type(owner).__name__}: {message}")


def _settings(cls: type[_T], value: _T | Mapping[str, Any]) -> _T:
    """`value`, or the `cls` that a mapping of its fields describes (missing ones keep their defaults)."""
    if not isinstance(value, Mapping):
        return value
    unknown = sorted(set(value) - {f.name for f in fields(cls)})  # type: ignore[arg-type]
    if unknown:
        raise FerattError(f"{cls.__name__} has no setting {', '.join(unknown)}")
    return cls(**value)


@dataclass(frozen=True)
class GeometryConfig:
    """Ranges of the random geometric transform applied to a face and its mask together."""

    scale: float = 0.2  # factor 1 + scale * U(-1, 1)
    flip_p: float = 0.5  # probability of a horizontal flip
    rotation: float = 30.0  # degrees, U(-rotation, rotation)
    translation: float = 0.2  # fraction of the output size, U(-t, t) on each axis
    warp: float = 0.1  # affine warp: corners (0,0), (0,H), (W,0) moved by U(-w, w) x size per coordinate
    perspective: float = 0.0  # > 0: all four corners moved by U(-p, p) x size, perspective replaces the warp

    def __post_init__(self) -> None:
        for f in fields(self):
            value = float(getattr(self, f.name))
            _check(math.isfinite(value) and value >= 0, self, f"{f.name} must be >= 0, not {value}")
            object.__setattr__(self, f.name, value)
        _check(self.scale < 1, self, f"scale must be < 1 (the factor must stay positive), not {self.scale}")
        _check(self.flip_p <= 1, self, f"flip_p must be a probability, not {self.flip_p}")


#: (probability field, range field, whether the range must be > 0) for each colour augmentation.
_COLOUR_OPS = (
    ("brightness_p", "brightness", True),
    ("contrast_p", "contrast", True),
    ("gamma_p", "gamma", True),
    ("blur_p", "blur_sigma", False),
    ("noise_p", "noise_sigma", False),
)


@dataclass(frozen=True)
class ColourConfig:
    """Probabilities and ranges of the colour augmentations applied to the composite."""

    brightness_p: float = 0.75
    brightness: tuple[float, float] = (0.75, 1.25)  # multiplicative factor
    contrast_p: float = 0.75
    contrast: tuple[float, float] = (0.75, 1.25)  # factor about the image's mean grey
    gamma_p: float = 0.75
    gamma: tuple[float, float] = (0.75, 1.25)
    blur_p: float = 0.25
    blur_sigma: tuple[float, float] = (0.5, 1.5)  # pixels
    noise_p: float = 0.25
    noise_sigma: tuple[float, float] = (2.0, 10.0)  # 0-255 units

    def __post_init__(self) -> None:
        for prob, name, positive in _COLOUR_OPS:
            low, _ = _pair(self, name)
            _check(low > 0 if positive else low >= 0, self, f"{name} must be {'> 0' if positive else '>= 0'}")
            p = float(getattr(self, prob))
            _check(0 <= p <= 1, self, f"{prob} must be a probability, not {p}")
            object.__setattr__(self, prob, p)

    @classmethod
    def off(cls) -> ColourConfig:
        """No colour augmentation at all (every probability 0)."""
        return cls(brightness_p=0.0, contrast_p=0.0, gamma_p=0.0, blur_p=0.0, noise_p=0.0)


@dataclass(frozen=True)
class RenderConfig:
    """Everything that decides how a face is composited onto a background."""

    size: int = 128  # output side in pixels
    geometry: GeometryConfig = field(default_factory=GeometryConfig)
    colour: ColourConfig = field(default_factory=ColourConfig)
    luminance: bool = True  # match the face's Lab lightness to the background under the mask
    luminance_ratio: tuple[float, float] = (0.5, 1.5)  # clip of the lightness gain
    lightness_range: tuple[float, float] = (10.0, 90.0)  # clip of the face's L after the gain
    feather: float = 3.0  # alpha edge width in pixels; 0 = the authors' hard cut
    grey: bool = False  # composite and target turned grey, then copied to 3 channels (the authors)
    background_scale: tuple[float, float] = (0.3, 1.0)  # crop side / background's shorter side
    balance: str = "classes"  # how faces are drawn: a class in turn, then a face of it
    # None: the whole face-bank crop fills the frame (the authors). A number: the square around the
    # face mask's bounding box, padded by this fraction of its side on each side, fills the frame.
    fit_mask: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "geometry", _settings(GeometryConfig, self.geometry))
        object.__setattr__(self, "colour", _settings(ColourConfig, self.colour))
        _check(isinstance(self.geometry, GeometryConfig), self, "geometry must be a GeometryConfig")
        _check(isinstance(self.colour, ColourConfig), self, "colour must be a ColourConfig")
        _check(
            not isinstance(self.size, bool)
            and int(self.size) == self.size
            and 1 <= self.size <= MAX_IMAGE_SIDE,
            self,
            f"size must be a whole number from 1 to {MAX_IMAGE_SIDE}, not {self.size!r}",
        )
        object.__setattr__(self, "size", int(self.size))
        object.__setattr__(self, "luminance", bool(self.luminance))
        object.__setattr__(self, "grey", bool(self.grey))
        low, _ = _pair(self, "luminance_ratio")
        _check(low > 0, self, "luminance_ratio must be > 0")
        low, high = _pair(self, "lightness_range")
        _check(low >= 0 and high <= 100, self, "lightness_range must lie in [0, 100]")
        low, high = _pair(self, "background_scale")
        _check(low > 0 and high <= 1, self, "background_scale must lie in (0, 1]")
        feather = float(self.feather)
        _check(math.isfinite(feather) and feather >= 0, self, f"feather must be >= 0, not {self.feather}")
        object.__setattr__(self, "feather", feather)
        _check(isinstance(self.balance, str) and bool(self.balance), self, "balance must be a name")
        if self.fit_mask is not None:
            margin = float(self.fit_mask)
            _check(math.isfinite(margin) and margin >= 0, self, f"fit_mask must be >= 0, not {self.fit_mask}")
            object.__setattr__(self, "fit_mask", margin)


#: Named configurations: the authors' training ranges, and the wider ranges of their evaluation renders.
PRESETS: dict[str, RenderConfig] = {
    "train": RenderConfig(),
    "eval": RenderConfig(geometry=GeometryConfig(rotation=45.0, translation=0.3, warp=0.2)),
}


def preset_config(preset: str = "train", *, no_colour: bool = False, **overrides: Any) -> RenderConfig:
    """Preset `preset` with `overrides` applied, and every colour augmentation off with `no_colour`.

    `overrides` are RenderConfig fields (size, feather, fit_mask, ...) or GeometryConfig fields (scale,
    rotation, ...); an override of None keeps the preset's value.
    """
    if preset not in PRESETS:
        raise FerattError(f"unknown preset {preset!r}; valid: {', '.join(PRESETS)}", field="preset")
    config = PRESETS[preset]
    changes = {name: value for name, value in overrides.items() if value is not None}
    geometry_names = {f.name for f in fields(GeometryConfig)}
    geometry = {name: changes.pop(name) for name in list(changes) if name in geometry_names}
    unknown = sorted(set(changes) - {f.name for f in fields(RenderConfig)})
    if unknown:
        raise FerattError(f"RenderConfig has no setting {', '.join(unknown)}")
    base_geometry = changes.pop("geometry", config.geometry)
    colour = changes.pop("colour", config.colour)
    if no_colour:
        colour = replace(colour, **{probability: 0.0 for probability, _, _ in _COLOUR_OPS})
    return replace(config, **changes, geometry=replace(base_geometry, **geometry), colour=colour)
