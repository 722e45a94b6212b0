"""The parameters of one rendered sample: typed, JSON values through feratt.codec, and a float32 vector.

The renderer draws them once per sample (renderer/sample.py), applies them with the pure functions of
renderer/functional.py, and records them in every shard's `params` dataset in PARAM_FIELDS order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


def _optional(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


@dataclass(frozen=True)
class GeometryParams:
    """One sample's geometric transform; the defaults are the identity (apart from the in->out resize).

    tx, ty and the corner offsets are fractions of the output size. corners holds (dx, dy) offsets of the
    output corners (0,0), (0,N), (N,0) for the affine warp (6 values), plus (N,N) when perspective (8).
    angle is in degrees, counter-clockwise as displayed.
    """

    scale: float = 1.0
    flip: bool = False
    angle: float = 0.0
    tx: float = 0.0
    ty: float = 0.0
    corners: tuple[float, ...] = (0.0,) * 6
    perspective: bool = False

    def __post_init__(self) -> None:
        corners = tuple(float(v) for v in self.corners)
        expected = 8 if self.perspective else 6
        if len(corners) != expected:
            raise ValueError(f"corners needs {expected} values (perspective {self.perspective}): {corners}")
        object.__setattr__(self, "corners", corners)
        object.__setattr__(self, "flip", bool(self.flip))
        object.__setattr__(self, "perspective", bool(self.perspective))


@dataclass(frozen=True)
class ColourParams:
    """One sample's colour augmentation; None = that step is skipped. The defaults change nothing."""

    brightness: float | None = None
    contrast: float | None = None
    gamma: float | None = None
    blur_sigma: float | None = None
    noise_sigma: float | None = None
    noise_seed: int = 0  # drawn for every sample, used only when noise_sigma is not None


@dataclass(frozen=True)
class SampleParams:
    """Everything random about one rendered sample (the face and background choice aside)."""

    geometry: GeometryParams = field(default_factory=GeometryParams)
    colour: ColourParams = field(default_factory=ColourParams)


#: The order of params_to_vector's values. Booleans are 0/1; absent corners and skipped colour steps NaN.
PARAM_FIELDS: tuple[str, ...] = (
    "scale",
    "flip",
    "angle",
    "tx",
    "ty",
    *(f"corner_{i}" for i in range(8)),
    "perspective",
    "brightness",
    "contrast",
    "gamma",
    "blur_sigma",
    "noise_sigma",
    "noise_seed",
)


def params_to_vector(params: SampleParams) -> np.ndarray:
    """The parameters as a float32 vector in PARAM_FIELDS order (lossless for sampled parameters)."""
    g, c = params.geometry, params.colour
    corners = list(g.corners) + [math.nan] * (8 - len(g.corners))
    colour = [c.brightness, c.contrast, c.gamma, c.blur_sigma, c.noise_sigma]
    values = [g.scale, g.flip, g.angle, g.tx, g.ty, *corners, g.perspective]
    values += [math.nan if v is None else v for v in colour] + [c.noise_seed]
    return np.array(values, dtype=np.float32)


def vector_to_params(vector: np.ndarray) -> SampleParams:
    """The parameters back from a params_to_vector vector."""
    v = dict(zip(PARAM_FIELDS, np.asarray(vector, dtype=np.float64).tolist(), strict=True))
    perspective = bool(v["perspective"])
    geometry = GeometryParams(
        scale=v["scale"],
        flip=bool(v["flip"]),
        angle=v["angle"],
        tx=v["tx"],
        ty=v["ty"],
        corners=tuple(v[f"corner_{i}"] for i in range(8 if perspective else 6)),
        perspective=perspective,
    )
    colour = ColourParams(
        brightness=_optional(v["brightness"]),
        contrast=_optional(v["contrast"]),
        gamma=_optional(v["gamma"]),
        blur_sigma=_optional(v["blur_sigma"]),
        noise_sigma=_optional(v["noise_sigma"]),
        noise_seed=int(v["noise_seed"]),
    )
    return SampleParams(geometry, colour)
