"""Pure image operations of the renderer: geometry, Lab luminance matching, alpha matte, colour changes.

Every function takes arrays (and, for noise, an explicit generator or seed) and returns new arrays; none
reads global random state. Images are RGB uint8 HxWx3, masks uint8 HxW with 0/255 (any non-zero counts).
Pixel centres sit at integer coordinates, as in OpenCV.
"""

from __future__ import annotations

import functools
import math

import cv2
import numpy as np
from scipy.special import ndtri

from feratt.datasets.align import MIRROR_68
from feratt.renderer.params import GeometryParams

# --------------------------------------------------------------------------------------------- geometry


def _affine_from_triangle(size: float, offsets: np.ndarray) -> np.ndarray:
    """The affine taking (0,0), (0,size), (size,0) to themselves plus offsets (3x2, pixels)."""
    p0 = offsets[0]
    p1 = np.array([0.0, size]) + offsets[1]
    p2 = np.array([size, 0.0]) + offsets[2]
    # Written out rather than solved so that zero offsets give the identity exactly.
    m = np.eye(3)
    m[:2, 0] = (p2 - p0) / size
    m[:2, 1] = (p1 - p0) / size
    m[:2, 2] = p0
    return m


def _perspective_from_corners(size: float, offsets: np.ndarray) -> np.ndarray:
    """The homography taking (0,0), (0,size), (size,0), (size,size) to themselves plus offsets (4x2)."""
    src = np.array([[0.0, 0.0], [0.0, size], [size, 0.0], [size, size]])
    dst = src + offsets
    a = np.zeros((8, 8))
    b = np.zeros(8)
    for i, ((x, y), (u, v)) in enumerate(zip(src, dst, strict=True)):
        a[2 * i] = [x, y, 1, 0, 0, 0, -u * x, -u * y]
        a[2 * i + 1] = [0, 0, 0, x, y, 1, -v * x, -v * y]
        b[2 * i], b[2 * i + 1] = u, v
    return np.append(np.linalg.solve(a, b), 1.0).reshape(3, 3)


def geometry_matrix(params: GeometryParams, in_size: float, out_size: int) -> np.ndarray:
    """3x3 float64 matrix mapping face-bank crop pixel coordinates to output pixel coordinates.

    Applied in this order (the last factor first):
    1. resize in_size -> out_size about the centre (OpenCV's resize convention: x' = (x + 0.5) k - 0.5);
    2. scale by params.scale about the output centre c = (out_size - 1) / 2;
    3. horizontal flip about c (x' = 2c - x) if params.flip;
    4. rotation by params.angle degrees about c, counter-clockwise as displayed (OpenCV's sign);
    5. translation by (tx, ty) x out_size;
    6. the warp: the affine taking (0,0), (0,N), (N,0) to those corners plus corners[0:6] x N, or with
       params.perspective the homography taking (0,0), (0,N), (N,0), (N,N) to them plus corners[0:8] x N.
    """
    n = float(out_size)
    c = (out_size - 1) / 2
    k = out_size / in_size
    shift = 0.5 * k - 0.5 - c  # resized coordinate minus the centre, at x = 0
    # Written out in floats (numpy is slow on 3x3s): L = rotation @ flip @ scale, then
    # x' = L (k x + shift) + c + t.
    sx = -params.scale if params.flip else params.scale
    sy = params.scale
    cos, sin = math.cos(math.radians(params.angle)), math.sin(math.radians(params.angle))
    l00, l01, l10, l11 = cos * sx, sin * sy, -sin * sx, cos * sy
    matrix = np.array(
        [
            [l00 * k, l01 * k, (l00 + l01) * shift + c + params.tx * n],
            [l10 * k, l11 * k, (l10 + l11) * shift + c + params.ty * n],
            [0.0, 0.0, 1.0],
        ]
    )
    offsets = np.asarray(params.corners, dtype=np.float64).reshape(-1, 2) * n
    if params.perspective:
        return _perspective_from_corners(n, offsets) @ matrix
    if not offsets.any():
        return matrix
    return _affine_from_triangle(n, offsets[:3]) @ matrix


def place_landmarks(points: np.ndarray, matrix: np.ndarray, flip: bool) -> np.ndarray:
    """(68, 2) bank-crop landmarks in output pixels under a sample's 3x3 placement matrix; NaN stays NaN.

    As warpAffine/warpPerspective move pixels: pixel centres at integer coordinates in both frames,
    with the projective divide. A flipped face's points are renumbered by iBUG's mirror, so that the
    numbering holds for the face as it appears (36 is the outer corner of the eye on the image's left).
    """
    ordered = points[MIRROR_68] if flip else points
    moved = ordered.astype(np.float64) @ matrix[:, :2].T + matrix[:, 2]
    return (moved[..., :2] / moved[..., 2:]).astype(np.float32)


def mask_square(mask: np.ndarray, margin: float) -> tuple[float, float, float]:
    """(left, top, side) of the square around the mask's bounding box, padded by `margin` x its side.

    Coordinates are pixel edges (pixel i spans [i, i + 1)), so translating by (-left, -top) gives the
    square's own pixel-centre coordinates. An empty mask gives the whole image's square.
    """
    height, width = mask.shape[:2]
    x, y, w, h = cv2.boundingRect(np.ascontiguousarray(mask, dtype=np.uint8))
    if w == 0 or h == 0:
        x, y, w, h = 0, 0, width, height
    side = max(w, h) * (1 + 2 * margin)
    return x + w / 2 - side / 2, y + h / 2 - side / 2, side


def warp_face(
    face: np.ndarray, mask: np.ndarray, matrix: np.ndarray, out_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """The face (bilinear) and its mask (nearest, 0/255) warped by `matrix`, out_size square, zero border."""
    size = (out_size, out_size)
    mask = np.where(mask > 0, np.uint8(255), np.uint8(0)) if mask.dtype != np.uint8 else mask
    common = {"borderMode": cv2.BORDER_CONSTANT, "borderValue": 0}
    # OpenCV's vectorised bilinear path takes 4 channels: RGBA there and back is ~40% faster, same bytes.
    rgba = cv2.cvtColor(face, cv2.COLOR_RGB2RGBA)
    if matrix[2, 0] == 0 and matrix[2, 1] == 0 and matrix[2, 2] == 1:
        m = np.ascontiguousarray(matrix[:2])
        rgba_out = cv2.warpAffine(rgba, m, size, flags=cv2.INTER_LINEAR, **common)
        mask_out = cv2.warpAffine(mask, m, size, flags=cv2.INTER_NEAREST, **common)
    else:
        rgba_out = cv2.warpPerspective(rgba, matrix, size, flags=cv2.INTER_LINEAR, **common)
        mask_out = cv2.warpPerspective(mask, matrix, size, flags=cv2.INTER_NEAREST, **common)
    # A mask of 0/1 (or any other non-zero value) comes out as 0/255.
    return cv2.cvtColor(rgba_out, cv2.COLOR_RGBA2RGB), cv2.compare(mask_out, 0, cv2.CMP_GT)


# -------------------------------------------------------------------------------------------------- Lab


def _lab(pixels: np.ndarray) -> np.ndarray:
    """Lab of uint8 RGB pixels (any shape ending in 3), float32, same shape."""
    rgb = pixels.reshape(1, -1, 3).astype(np.float32) * np.float32(1 / 255)
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab).reshape(pixels.shape)


def _rgb(lab: np.ndarray) -> np.ndarray:
    """uint8 RGB of Lab pixels (any shape ending in 3), rounded and clipped to the gamut."""
    rgb = cv2.cvtColor(np.ascontiguousarray(lab, dtype=np.float32).reshape(1, -1, 3), cv2.COLOR_Lab2RGB)
    return np.clip(rgb * np.float32(255) + np.float32(0.5), 0, 255).astype(np.uint8).reshape(lab.shape)


def rgb_to_lab(image: np.ndarray) -> np.ndarray:
    """CIE Lab (D65; L in [0, 100]) of a uint8 RGB image, float32, via OpenCV."""
    return _lab(np.asarray(image, dtype=np.uint8))


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """uint8 RGB of a CIE Lab image (as rgb_to_lab makes), rounded and clipped to the sRGB gamut."""
    return _rgb(lab)


def luminance_match(
    face: np.ndarray,
    background: np.ndarray,
    mask: np.ndarray,
    ratio_range: tuple[float, float],
    lightness_range: tuple[float, float],
    region: np.ndarray | None = None,
) -> tuple[np.ndarray, float]:
    """The face with its Lab L scaled towards the background's under the mask, and the gain w used.

    w = mean L of the background under the mask / mean L of the face under it, clipped to ratio_range;
    the face's L is multiplied by w and clipped to lightness_range. Only pixels in `region` (default: the
    mask) change; the rest are returned untouched. The renderer passes alpha > 0 as the region, so the
    feathered rim just outside the mask gets the same gain as the face. An empty mask returns the face
    unchanged and w = NaN; a black face (mean L 0) gets the top of ratio_range.
    """
    inside = np.asarray(mask) > 0
    region = inside if region is None else np.asarray(region, dtype=bool) | inside
    out = face.copy()
    if not inside.any():
        return out, float("nan")
    # Work in the region's bounding box: converting a rectangle beats gathering scattered pixels.
    x, y, w, h = cv2.boundingRect(region.view(np.uint8))
    box = np.s_[y : y + h, x : x + w]
    weights = inside[box].view(np.uint8)
    lab = _lab(face[box])
    face_l = cv2.mean(lab, mask=weights)[0]
    back_l = cv2.mean(_lab(background[box]), mask=weights)[0]
    low, high = ratio_range
    gain = float(np.clip(back_l / face_l, low, high)) if face_l > 0 else float(high)
    lightness = lab[..., 0]
    np.multiply(lightness, np.float32(gain), out=lightness)
    np.clip(lightness, lightness_range[0], lightness_range[1], out=lightness)
    out[box] = cv2.copyTo(_rgb(lab), region[box].view(np.uint8), face[box].copy())
    return out, gain


# ------------------------------------------------------------------------------------------------ matte


@functools.lru_cache(maxsize=64)
def _feather_kernel(feather: float) -> tuple[int, float]:
    """Kernel radius and the stretch about 0.5 that makes alpha exactly 0/1 beyond `feather` px."""
    radius = math.ceil(feather)
    weights = cv2.getGaussianKernel(2 * radius + 1, feather / 2, cv2.CV_64F)[:, 0]
    offsets = np.arange(-radius, radius + 1) ** 2
    # The square kernel's corners reach beyond `feather`: a pixel more than `feather` from every
    # outside pixel can still lose this much weight, so stretch the blurred values to absorb it.
    deficit = np.outer(weights, weights)[offsets[:, None] + offsets[None, :] > feather**2].sum()
    return radius, 1 / (1 - 2 * deficit - 1e-5)


def alpha_from_mask(mask: np.ndarray, feather: float) -> np.ndarray:
    """Float32 alpha in [0, 1]: the binary mask (feather 0), or the mask with a soft edge `feather` px wide.

    The soft edge is the mask blurred by a Gaussian of sigma feather / 2 (kernel cut at +-feather), then
    stretched about 0.5 so that alpha is exactly 1 at pixels more than `feather` from every outside pixel
    and exactly 0 more than `feather` from every mask pixel. alpha is 0.5 on the boundary, half a pixel
    beyond the outermost mask pixels; 10% to 90% spans about 0.9 x feather across a straight edge.
    Only the mask's box plus the kernel is filtered; the image border does not count as an edge.
    """
    inside = np.asarray(mask) > 0
    if feather <= 0 or inside.all() or not inside.any():
        return inside.astype(np.float32)
    height, width = inside.shape
    radius, stretch = _feather_kernel(float(feather))
    x, y, w, h = cv2.boundingRect(inside.view(np.uint8))
    x0, y0 = max(x - radius - 1, 0), max(y - radius - 1, 0)
    x1, y1 = min(x + w + radius + 1, width), min(y + h + radius + 1, height)
    ksize = (2 * radius + 1, 2 * radius + 1)
    roi = inside[y0:y1, x0:x1].astype(np.float32)
    ramp = cv2.GaussianBlur(roi, ksize, feather / 2, borderType=cv2.BORDER_REPLICATE)
    ramp *= np.float32(stretch)
    ramp += np.float32(0.5 - 0.5 * stretch)
    np.clip(ramp, 0, 1, out=ramp)
    alpha = np.zeros(inside.shape, np.float32)
    alpha[y0:y1, x0:x1] = ramp
    return alpha


def composite(face: np.ndarray, background: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """uint8 alpha * face + (1 - alpha) * background, rounded; alpha HxW float in [0, 1]."""
    out = background.copy()
    x, y, w, h = cv2.boundingRect((alpha > 0).view(np.uint8))
    if w == 0:
        return out
    box = np.s_[y : y + h, x : x + w]
    a = np.ascontiguousarray(alpha[box], dtype=np.float32)
    out[box] = cv2.blendLinear(face[box], background[box], a, 1 - a)
    return out


# ----------------------------------------------------------------------------------------------- colour


def _apply_lut(image: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The image through the 256-entry float table `values`, rounded half up and clipped."""
    lut = np.clip(values + 0.5, 0, 255).astype(np.uint8)
    return cv2.LUT(image, lut)


_LEVELS = np.arange(256, dtype=np.float64)


def adjust_brightness(image: np.ndarray, factor: float) -> np.ndarray:
    """Every channel multiplied by `factor`, clipped to [0, 255]."""
    return _apply_lut(image, _LEVELS * factor)


def adjust_contrast(image: np.ndarray, factor: float) -> np.ndarray:
    """Values moved away from (factor > 1) or towards the image's mean grey (Rec. 601 luma) by `factor`."""
    means = cv2.mean(image)
    grey = 0.299 * means[0] + 0.587 * means[1] + 0.114 * means[2] if image.ndim == 3 else means[0]
    return _apply_lut(image, grey + (_LEVELS - grey) * factor)


def adjust_gamma(image: np.ndarray, gamma: float) -> np.ndarray:
    """255 * (value / 255) ** gamma on every channel."""
    return _apply_lut(image, 255 * (_LEVELS / 255) ** gamma)


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of standard deviation `sigma` pixels (kernel +-3 sigma, reflected border)."""
    if sigma <= 0:
        return image.copy()
    ksize = 2 * math.ceil(3 * sigma) + 1
    return cv2.GaussianBlur(image, (ksize, ksize), sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT_101)


@functools.cache
def _normal_quantiles() -> np.ndarray:
    """The standard normal's quantiles at the 65536 midpoints (i + 0.5) / 65536, float32."""
    return ndtri((np.arange(65536) + 0.5) / 65536).astype(np.float32)


def add_gaussian_noise(image: np.ndarray, sigma: float, rng_or_seed: np.random.Generator | int) -> np.ndarray:
    """Independent zero-mean Gaussian noise of std `sigma` (0-255 units) on every value, rounded and clipped.

    The noise is the normal distribution quantised to 65536 equally likely values (tails cut at 4.3
    sigma), drawn as uint16 indices into a quantile table: five times faster than standard_normal.
    """
    rng = rng_or_seed if isinstance(rng_or_seed, np.random.Generator) else np.random.default_rng(rng_or_seed)
    index = rng.integers(0, 65536, size=image.shape, dtype=np.uint16)
    noise = np.take(_normal_quantiles(), index)
    noise *= np.float32(sigma)
    return cv2.add(image, noise, dtype=cv2.CV_8U)


def to_grey3(image: np.ndarray) -> np.ndarray:
    """The image turned grey (Rec. 601 luma, as OpenCV) and copied to 3 channels."""
    return cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
