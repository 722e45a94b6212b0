"""Face masks computed from the image: cascade detection, an elliptical prior, GrabCut refinement."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage

from feratt.datasets.detect import FaceBox, detect_faces

#: Mask methods, in the order they are tried; "prior" is a GrabCut result that collapsed.
MASK_METHODS: tuple[str, ...] = ("file", "landmarks", "grabcut", "prior", "ellipse", "fallback")

_TIGHT_CROP_SIDE = 64  # smaller images are taken to be tight face crops
_TIGHT_CROP_FILL = 0.8  # a detection this wide relative to the image means the face fills the frame
_GRABCUT_SIDE = 1024  # GrabCut runs on a copy no larger than this: its time and memory grow with the area
_GRABCUT_ITERATIONS = 5
_GRABCUT_SEED = 0x0FACE


@dataclass(frozen=True)
class Ellipse:
    """An axis-aligned ellipse: centre and semi-axes in pixels."""

    cx: float
    cy: float
    ax: float
    ay: float

    def scaled(self, factor: float) -> Ellipse:
        return Ellipse(self.cx, self.cy, self.ax * factor, self.ay * factor)

    def raster(self, shape: tuple[int, int]) -> np.ndarray:
        """The ellipse as a boolean mask of `shape`."""
        rows, cols = np.ogrid[: shape[0], : shape[1]]
        return ((cols + 0.5 - self.cx) / self.ax) ** 2 + ((rows + 0.5 - self.cy) / self.ay) ** 2 <= 1.0


def to_grey(image: np.ndarray) -> np.ndarray:
    """Return a uint8 HxW grey version of an HxW or HxWx3 image."""
    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


def to_rgb(image: np.ndarray) -> np.ndarray:
    """Return a uint8 HxWx3 version of an HxW or HxWx3 image."""
    return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB) if image.ndim == 2 else image


def head_prior(box: FaceBox) -> Ellipse:
    """The head (face and the hair framing it) as an ellipse around a cascade detection."""
    # The LBP box spans brows to mouth; the head reaches the hair above and the chin below.
    return Ellipse(box.x + box.width / 2, box.y + 0.4 * box.height, 0.8 * box.width, 0.92 * box.height)


def core_prior(box: FaceBox) -> Ellipse:
    """The central face region that is surely foreground."""
    return Ellipse(box.x + box.width / 2, box.y + 0.55 * box.height, 0.3 * box.width, 0.38 * box.height)


def centred_prior(shape: tuple[int, int]) -> tuple[Ellipse, Ellipse]:
    """Head and core ellipses for a face assumed to sit in the middle of the image."""
    height, width = shape
    head = Ellipse(width / 2, height * 0.48, width * 0.32, height * 0.4)
    return head, Ellipse(width / 2, height * 0.52, width * 0.12, height * 0.15)


def inscribed_ellipse(shape: tuple[int, int]) -> np.ndarray:
    """The largest axis-aligned ellipse that fits the frame, as a boolean mask."""
    height, width = shape
    return Ellipse(width / 2, height / 2, width / 2, height / 2).raster(shape)


def clean_mask(mask: np.ndarray, smoothing: float) -> np.ndarray:
    """Keep the largest component, fill its holes and smooth its outline over `smoothing` pixels."""
    labels, count = ndimage.label(mask)
    if count == 0:
        return np.zeros_like(mask, dtype=bool)
    sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, count + 1))
    largest = labels == (int(np.argmax(sizes)) + 1)
    filled = ndimage.binary_fill_holes(largest)
    if smoothing > 0:
        blurred = cv2.GaussianBlur(filled.astype(np.float32), (0, 0), smoothing)
        filled = ndimage.binary_fill_holes(blurred >= 0.5)
    return filled


def _grabcut_box(outer: Ellipse, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """The outer ellipse's bounding box (x0, y0, x1, y1), two pixels wider, clipped to the frame."""
    height, width = shape
    x0 = max(int(outer.cx - outer.ax) - 2, 0)
    y0 = max(int(outer.cy - outer.ay) - 2, 0)
    x1 = min(int(np.ceil(outer.cx + outer.ax)) + 2, width)
    y1 = min(int(np.ceil(outer.cy + outer.ay)) + 2, height)
    return x0, y0, x1, y1


def _grabcut_foreground(
    crop: np.ndarray, priors: tuple[Ellipse, Ellipse, Ellipse], edges: tuple[int, ...]
) -> np.ndarray:
    """GrabCut on `crop` seeded by the outer, head and core ellipses (crop coordinates); its foreground.

    `edges` are the rows at the top, and the columns at the left and right, that lie on the frame's edge.
    """
    outer, head, core = priors
    shape = crop.shape[:2]
    labels = np.full(shape, cv2.GC_BGD, np.uint8)
    labels[outer.raster(shape)] = cv2.GC_PR_BGD
    labels[head.raster(shape)] = cv2.GC_PR_FGD
    labels[core.raster(shape)] = cv2.GC_FGD
    # In a portrait the top and side edges of the frame show background: they seed its colour model.
    top, left, right = edges
    labels[:top, :] = cv2.GC_BGD
    labels[:, :left] = cv2.GC_BGD
    labels[:, shape[1] - right :] = cv2.GC_BGD
    background = np.zeros((1, 65), np.float64)
    foreground = np.zeros((1, 65), np.float64)
    # GrabCut seeds its k-means from OpenCV's per-thread RNG; fixing it keeps masks identical across workers.
    cv2.setRNGSeed(_GRABCUT_SEED)
    cv2.grabCut(crop, labels, None, background, foreground, _GRABCUT_ITERATIONS, cv2.GC_INIT_WITH_MASK)
    return (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)


def grabcut_refine(image: np.ndarray, head: Ellipse, core: Ellipse) -> np.ndarray:
    """Refine an elliptical head prior into a face mask with GrabCut."""
    height, width = image.shape[:2]
    outer = head.scaled(1.2)
    # Work on the outer ellipse's bounding box only: GrabCut's cost grows with the pixel count.
    x0, y0, x1, y1 = _grabcut_box(outer, (height, width))
    if max(x1 - x0, y1 - y0) > _GRABCUT_SIDE:
        return _grabcut_refine_scaled(image, head, core, (x0, y0, x1, y1))
    crop = np.ascontiguousarray(to_rgb(image)[y0:y1, x0:x1])

    def local(e: Ellipse) -> Ellipse:
        return Ellipse(e.cx - x0, e.cy - y0, e.ax, e.ay)

    edges = (max(0, 2 - y0), max(0, 2 - x0), max(0, x1 - (width - 2)))
    mask = np.zeros((height, width), bool)
    mask[y0:y1, x0:x1] = _grabcut_foreground(crop, (local(outer), local(head), local(core)), edges)
    # The ring outside the prior only teaches the background model; the face stays inside the prior.
    mask &= head.raster((height, width))
    return clean_mask(mask, smoothing=max(1.0, 0.03 * head.ax))


def _grabcut_refine_scaled(
    image: np.ndarray, head: Ellipse, core: Ellipse, box: tuple[int, int, int, int]
) -> np.ndarray:
    """`grabcut_refine` for a large head: GrabCut on a copy of at most _GRABCUT_SIDE px, mask scaled back."""
    height, width = image.shape[:2]
    x0, y0, x1, y1 = box
    scale = _GRABCUT_SIDE / max(x1 - x0, y1 - y0)
    small_width, small_height = max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale))
    sx, sy = small_width / (x1 - x0), small_height / (y1 - y0)
    crop = cv2.resize(
        np.ascontiguousarray(to_rgb(image)[y0:y1, x0:x1]),
        (small_width, small_height),
        interpolation=cv2.INTER_AREA,
    )

    def local(e: Ellipse) -> Ellipse:
        return Ellipse((e.cx - x0) * sx, (e.cy - y0) * sy, e.ax * sx, e.ay * sy)

    edges = tuple(
        int(np.ceil(max(0, n) * s)) for n, s in ((2 - y0, sy), (2 - x0, sx), (x1 - (width - 2), sx))
    )
    small_head = local(head)
    small = _grabcut_foreground(crop, (local(head.scaled(1.2)), small_head, local(core)), edges)
    small &= small_head.raster(small.shape)
    small = clean_mask(small, smoothing=max(1.0, 0.03 * small_head.ax))
    # A linear resize cut at one half keeps the outline smooth at full resolution.
    coverage = cv2.resize(small.astype(np.float32), (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
    mask = np.zeros((height, width), bool)
    mask[y0:y1, x0:x1] = coverage >= 0.5
    return mask


def _plausible(mask: np.ndarray, head: Ellipse) -> bool:
    area = np.pi * head.ax * head.ay
    return 0.3 * area <= mask.sum() <= 1.5 * area


def mask_around(image: np.ndarray, box: FaceBox) -> tuple[np.ndarray, str]:
    """The face mask of the face detected at `box`, as the bank computes it: GrabCut, or its prior."""
    head = head_prior(box)
    mask = grabcut_refine(image, head, core_prior(box))
    if not _plausible(mask, head):
        return head.raster(image.shape[:2]), "prior"
    return mask, "grabcut"


def compute_mask(image: np.ndarray) -> tuple[np.ndarray, str]:
    """Compute a boolean face mask from the image alone; return it with the method used."""
    shape = image.shape[:2]
    if min(shape) <= _TIGHT_CROP_SIDE:
        return inscribed_ellipse(shape), "ellipse"
    boxes = detect_faces(image)
    if boxes and boxes[0].width >= _TIGHT_CROP_FILL * min(shape):
        return inscribed_ellipse(shape), "ellipse"
    if boxes:
        head, core, method = head_prior(boxes[0]), core_prior(boxes[0]), "grabcut"
    else:
        (head, core), method = centred_prior(shape), "fallback"
    mask = grabcut_refine(image, head, core)
    if not _plausible(mask, head):
        return head.raster(shape), "prior" if method == "grabcut" else method
    return mask, method
