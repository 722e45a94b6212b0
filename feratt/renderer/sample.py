"""One sample: its parameters drawn from a RenderConfig, then applied to a face and a background."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from feratt.config.rendering import ColourConfig, GeometryConfig, RenderConfig
from feratt.renderer import functional as F
from feratt.renderer.params import ColourParams, GeometryParams, SampleParams

_SEED_LIMIT = 2**24  # noise seeds stay below this so that a float32 vector records them exactly


def _f32(value: float) -> float:
    """`value` rounded to float32, so that a recorded float32 vector gives back the very same parameters."""
    return float(np.float32(value))


def sample_geometry(config: GeometryConfig, rng: np.random.Generator) -> GeometryParams:
    """Draw one geometric transform from the ranges in `config`."""
    # Always 13 draws, so that changing one range leaves the other parameters of a seed unchanged.
    u = rng.random(13)
    jitter = 2 * u[5:] - 1
    perspective = config.perspective > 0
    corners = jitter * config.perspective if perspective else jitter[:6] * config.warp
    return GeometryParams(
        scale=_f32(1 + config.scale * (2 * u[0] - 1)),
        flip=bool(u[1] < config.flip_p),
        angle=_f32(config.rotation * (2 * u[2] - 1)),
        tx=_f32(config.translation * (2 * u[3] - 1)),
        ty=_f32(config.translation * (2 * u[4] - 1)),
        corners=tuple(_f32(v) for v in corners),
        perspective=perspective,
    )


def sample_colour(config: ColourConfig, rng: np.random.Generator) -> ColourParams:
    """Draw one colour augmentation from `config`: each step applied with its probability."""
    u = rng.random(10)
    seed = int(rng.integers(0, _SEED_LIMIT))

    def pick(i: int, p: float, value_range: tuple[float, float]) -> float | None:
        low, high = value_range
        return _f32(low + (high - low) * u[2 * i + 1]) if u[2 * i] < p else None

    return ColourParams(
        brightness=pick(0, config.brightness_p, config.brightness),
        contrast=pick(1, config.contrast_p, config.contrast),
        gamma=pick(2, config.gamma_p, config.gamma),
        blur_sigma=pick(3, config.blur_p, config.blur_sigma),
        noise_sigma=pick(4, config.noise_p, config.noise_sigma),
        noise_seed=seed,
    )


def sample_params(config: RenderConfig, rng: np.random.Generator) -> SampleParams:
    """Draw every random parameter of one sample: geometry, then colour."""
    return SampleParams(sample_geometry(config.geometry, rng), sample_colour(config.colour, rng))


@dataclass
class RenderedSample:
    """One rendered sample and what is recorded about it."""

    image: np.ndarray  # size x size x 3 uint8: the composite, the network input
    mask: np.ndarray  # size x size uint8 0/255: the transformed face mask
    face: np.ndarray  # size x size x 3 uint8: the transformed face on black, before luminance and colour
    matrix: np.ndarray  # 3x3 float64: face-bank crop pixel coordinates -> output pixel coordinates
    luminance_ratio: float  # the lightness gain w; NaN when luminance matching is off
    params: SampleParams


def apply_colour(image: np.ndarray, params: ColourParams) -> np.ndarray:
    """Brightness, contrast, gamma, blur and noise, in that order, each only if its parameter is set."""
    if params.brightness is not None:
        image = F.adjust_brightness(image, params.brightness)
    if params.contrast is not None:
        image = F.adjust_contrast(image, params.contrast)
    if params.gamma is not None:
        image = F.adjust_gamma(image, params.gamma)
    if params.blur_sigma is not None:
        image = F.gaussian_blur(image, params.blur_sigma)
    if params.noise_sigma is not None:
        image = F.add_gaussian_noise(image, params.noise_sigma, params.noise_seed)
    return image


def placement_matrix(mask: np.ndarray, geometry: GeometryParams, config: RenderConfig) -> np.ndarray:
    """3x3 matrix from face-bank crop pixels to output pixels: framing, then the geometric transform."""
    if config.fit_mask is None:
        return F.geometry_matrix(geometry, mask.shape[0], config.size)
    left, top, side = F.mask_square(mask, config.fit_mask)
    crop = np.array([[1.0, 0.0, -left], [0.0, 1.0, -top], [0.0, 0.0, 1.0]])
    return F.geometry_matrix(geometry, side, config.size) @ crop


def frame_face(face: np.ndarray, mask: np.ndarray, config: RenderConfig) -> tuple[np.ndarray, np.ndarray]:
    """A face-bank face on its own background, framed and sized as `config` frames rendered faces.

    No transform, compositing or augmentation: this is the "real" test image of the paper. Where the
    framing square leaves the photo, its edge pixels are repeated.
    """
    matrix = np.ascontiguousarray(placement_matrix(mask, GeometryParams(), config)[:2])
    size = (config.size, config.size)
    # Bilinear, as render_sample warps faces, so that real and rendered faces are resampled alike.
    image = cv2.warpAffine(face, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    mask = np.where(mask > 0, np.uint8(255), np.uint8(0)) if mask.dtype != np.uint8 else mask
    framed_mask = cv2.warpAffine(mask, matrix, size, flags=cv2.INTER_NEAREST, borderValue=0)
    if config.grey:
        image = F.to_grey3(image)
    return image, cv2.compare(framed_mask, 0, cv2.CMP_GT)


def render_sample(
    face: np.ndarray, mask: np.ndarray, background: np.ndarray, params: SampleParams, config: RenderConfig
) -> RenderedSample:
    """Composite a face-bank face onto a size x size background crop with the given parameters.

    Pure: the same inputs give the same output bytes. Steps: warp face and mask (the whole crop, or
    with config.fit_mask the square around the mask, fills the frame before the transform); the
    target (warped face on black); luminance matching against the background under the warped mask;
    feathered alpha; composite; colour augmentation; grey (both images) if config.grey.
    """
    size = config.size
    if face.ndim != 3 or face.shape[2] != 3 or face.shape[0] != face.shape[1] or face.dtype != np.uint8:
        raise ValueError(f"face must be a square uint8 RGB image, not {face.shape} {face.dtype}")
    if mask.shape != face.shape[:2]:
        raise ValueError(f"mask {mask.shape} does not match face {face.shape[:2]}")
    if background.shape != (size, size, 3) or background.dtype != np.uint8:
        raise ValueError(f"background must be a {size}x{size} uint8 RGB crop, not {background.shape}")
    matrix = placement_matrix(mask, params.geometry, config)
    warped, warped_mask = F.warp_face(face, mask, matrix, size)
    target = cv2.bitwise_and(warped, warped, mask=warped_mask)
    alpha = F.alpha_from_mask(warped_mask, config.feather)
    ratio = math.nan
    if config.luminance:
        warped, ratio = F.luminance_match(
            warped, background, warped_mask, config.luminance_ratio, config.lightness_range, region=alpha > 0
        )
    image = apply_colour(F.composite(warped, background, alpha), params.colour)
    if config.grey:
        image, target = F.to_grey3(image), F.to_grey3(target)
    return RenderedSample(image, warped_mask, target, matrix, ratio, params)
