"""Square face crops: landmark alignment, crops around a mask, and the warp that applies them."""

from __future__ import annotations

import cv2
import numpy as np

#: iBUG 68-point indices used for alignment and the forehead raise.
INNER_EYE_CORNERS: tuple[int, int] = (39, 42)
BROWS = slice(17, 27)
CHIN = 8


def _mirror_68() -> np.ndarray:
    """The iBUG 68-point indices after a horizontal flip: each point's mirror partner (the subject's left
    eye's outer corner, 45, becomes the right's, 36)."""
    pairs = [(i, 16 - i) for i in range(8)]  # jaw
    pairs += [(17 + i, 26 - i) for i in range(5)]  # brows
    pairs += [(31, 35), (32, 34)]  # nostrils
    pairs += [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]  # eyes
    pairs += [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58)]  # outer lips
    pairs += [(60, 64), (61, 63), (65, 67)]  # inner lips
    order = np.arange(68)
    for a, b in pairs:
        order[a], order[b] = b, a
    return order


#: Index i of a flipped face's points is the mirror of point MIRROR_68[i] of the unflipped face.
MIRROR_68 = _mirror_68()


def _square_box_affine(x0: float, y0: float, x1: float, y1: float, size: int) -> np.ndarray:
    """Affine (2x3) that maps the square around the box (x0, y0, x1, y1) onto a size x size image."""
    side = max(x1 - x0, y1 - y0, 1e-6)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    scale = size / side
    return np.array([[scale, 0, size / 2 - scale * cx], [0, scale, size / 2 - scale * cy]])


def compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The 2x3 affine that applies `inner`, then `outer`."""
    return (np.vstack([outer, [0, 0, 1]]) @ np.vstack([inner, [0, 0, 1]]))[:2]


def transform_points(affine: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine to an (N, 2) point array."""
    return points @ affine[:, :2].T + affine[:, 2]


def forehead_points(points: np.ndarray, forehead: float) -> np.ndarray:
    """Brow points raised by `forehead` x the brow-to-chin height, in an upright (aligned) frame."""
    brows = points[BROWS]
    height = points[CHIN, 1] - brows[:, 1].mean()
    return brows - np.array([0.0, forehead * height])


def landmark_alignment(
    points: np.ndarray, size: int, padding: float = 0.2, forehead: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Affine that levels the inner eye corners and crops the padded landmark box to a square.

    Returns the affine and the mask outline points (landmarks, plus the raised forehead) in the output.
    """
    left, right = points[INNER_EYE_CORNERS[0]], points[INNER_EYE_CORNERS[1]]
    angle = np.degrees(np.arctan2(right[1] - left[1], right[0] - left[0]))
    centre = (left + right) / 2
    rotation = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), float(angle), 1.0)
    upright = transform_points(rotation, points)
    outline = upright if forehead <= 0 else np.vstack([upright, forehead_points(upright, forehead)])
    pad = padding * float(np.linalg.norm(right - left))
    (x0, y0), (x1, y1) = outline.min(axis=0) - pad, outline.max(axis=0) + pad
    affine = compose(_square_box_affine(x0, y0, x1, y1, size), rotation)
    return affine, transform_points(_square_box_affine(x0, y0, x1, y1, size), outline)


def mask_crop(mask: np.ndarray, size: int, margin: float) -> np.ndarray:
    """Affine that crops the square around the mask's box, padded by `margin` x its longer side."""
    rows, cols = np.nonzero(mask)
    x0, x1, y0, y1 = cols.min(), cols.max() + 1, rows.min(), rows.max() + 1
    pad = margin * max(x1 - x0, y1 - y0)
    return _square_box_affine(x0 - pad, y0 - pad, x1 + pad, y1 + pad, size)


def frame_crop(shape: tuple[int, int], size: int) -> np.ndarray:
    """Affine that maps the whole frame, padded to a square, onto a size x size image."""
    height, width = shape
    return _square_box_affine(0, 0, width, height, size)


def warp_bilinear(image: np.ndarray, affine: np.ndarray, size: int) -> np.ndarray:
    """Warp an HxW or HxWxC image by the 2x3 `affine` onto size x size, bilinear, zero outside; float64.

    OpenCV's warpAffine semantics (pixel centres at integer coordinates, border taps counted as 0),
    computed exactly in float64. OpenCV's own bilinear warp quantises coordinates and weights, and its
    rounding changed between releases (5.0 to 5.1); the face bank's bytes must not depend on that.
    """
    forward = np.vstack([np.asarray(affine, np.float64), [0.0, 0.0, 1.0]])
    inverse = np.linalg.inv(forward)[:2]
    grid = np.arange(size, dtype=np.float64)
    xs = inverse[0, 0] * grid[None, :] + inverse[0, 1] * grid[:, None] + inverse[0, 2]
    ys = inverse[1, 0] * grid[None, :] + inverse[1, 1] * grid[:, None] + inverse[1, 2]
    x0, y0 = np.floor(xs), np.floor(ys)
    fx, fy = xs - x0, ys - y0
    height, width = image.shape[:2]
    flat = image.reshape(height * width, -1)
    out = np.zeros((size * size, flat.shape[1]), np.float64)
    for dy, wy in ((0, 1.0 - fy), (1, fy)):
        for dx, wx in ((0, 1.0 - fx), (1, fx)):
            col, row = x0 + dx, y0 + dy
            inside = (col >= 0) & (col < width) & (row >= 0) & (row < height)
            index = (np.clip(row, 0, height - 1) * width + np.clip(col, 0, width - 1)).astype(np.intp)
            out += (wy * wx * inside).reshape(-1, 1) * flat.take(index.ravel(), axis=0)
    out = out.reshape(size, size, -1)
    return out if image.ndim == 3 else out[..., 0]


def to_uint8(values: np.ndarray) -> np.ndarray:
    """Round float pixel values half up and clip them to uint8."""
    return np.clip(np.floor(values + 0.5), 0, 255).astype(np.uint8)


def warp_image(image: np.ndarray, affine: np.ndarray, size: int) -> np.ndarray:
    """Warp a uint8 image with bilinear interpolation, blurring first when it shrinks, black outside."""
    scale = float(np.sqrt(abs(np.linalg.det(affine[:, :2]))))
    if scale < 0.5:
        # Bilinear sampling aliases when it skips pixels: blur to the output's sampling rate first.
        image = cv2.GaussianBlur(image, (0, 0), (1 / scale - 1) / 2)
    return to_uint8(warp_bilinear(image, affine, size))


def warp_mask(mask: np.ndarray, affine: np.ndarray, size: int) -> np.ndarray:
    """Warp a boolean mask, resampled as coverage and cut at one half so its outline stays smooth."""
    return warp_bilinear(mask.astype(np.float64), affine, size) >= 0.5


def polygon_mask(points: np.ndarray, size: int) -> np.ndarray:
    """The convex hull of `points` rasterised on a size x size grid."""
    hull = cv2.convexHull(np.round(points * 16).astype(np.int32))
    mask = np.zeros((size, size), np.uint8)
    cv2.fillConvexPoly(mask, hull, 1, cv2.LINE_8, 4)
    return mask.astype(bool)
