"""A detected face framed as training framed its faces: the face bank's crop, then the render's framing."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from feratt.config.framing import Framing
from feratt.datasets import align
from feratt.datasets.detect import FaceBox
from feratt.datasets.facemask import mask_around, to_rgb


@dataclass(frozen=True)
class FramedFace:
    """One face as the model sees it, before resizing to its input size, and where it came from."""

    image: np.ndarray  # framing.size square RGB uint8
    mask: np.ndarray  # framing.size square bool: the face mask, framed alike
    square: tuple[float, float, float]  # the bank crop's square in the photo (unrotated): left, top, side
    method: str  # how the mask was made: landmarks, grabcut, or prior when GrabCut collapsed


def bank_crop(
    image: np.ndarray, box: FaceBox, framing: Framing
) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """The face at `box` cropped as the face bank crops faces: (crop, mask 0/255, the 2x3 affine, method).

    For a model whose bank was aligned, and a box with landmarks: the bank's landmark path (eyes
    levelled, the padded landmark square, the hull mask). Otherwise as `feratt faces` does for a photo
    without landmarks or mask file: GrabCut seeded by the head ellipse around the detection, then the
    square around the mask padded by the bank's margin.
    """
    size = framing.bank_size
    if framing.aligned and box.landmarks is not None:
        affine, outline = align.landmark_alignment(
            box.landmarks, size, framing.bank_margin, framing.bank_forehead
        )
        crop_mask = align.polygon_mask(outline, size).astype(np.uint8) * 255
        return align.warp_image(to_rgb(image), affine, size), crop_mask, affine, "landmarks"
    mask, method = mask_around(image, box)
    affine = align.mask_crop(mask, size, framing.bank_margin)
    crop = align.warp_image(to_rgb(image), affine, size)
    crop_mask = align.warp_mask(mask, affine, size).astype(np.uint8) * 255
    return crop, crop_mask, affine, method


def crop_square(affine: np.ndarray, size: int) -> tuple[float, float, float]:
    """The photo's square (left, top, side) that a 2x3 crop affine maps onto size x size, rotation aside."""
    scale = float(np.sqrt(abs(np.linalg.det(affine[:, :2]))))
    centre = np.linalg.solve(affine[:, :2], np.array([size / 2, size / 2]) - affine[:, 2])
    side = size / scale
    return float(centre[0] - side / 2), float(centre[1] - side / 2), side


def frame_detection(image: np.ndarray, box: FaceBox, framing: Framing) -> FramedFace:
    """The face at `box` framed as the render framed bank faces (`frame_face`, as the real test does)."""
    from feratt.config.rendering import RenderConfig
    from feratt.renderer.sample import frame_face

    crop, crop_mask, affine, method = bank_crop(image, box, framing)
    config = RenderConfig(size=framing.size, fit_mask=framing.fit_mask, grey=framing.grey)
    framed, framed_mask = frame_face(crop, crop_mask, config)
    return FramedFace(framed, framed_mask > 0, crop_square(affine, framing.bank_size), method)


def model_input(face: np.ndarray, in_size: int) -> np.ndarray:
    """A framed face at the model's input size, area-resized as training resizes renders."""
    if face.shape[0] == in_size:
        return np.ascontiguousarray(face)
    return cv2.resize(face, (in_size, in_size), interpolation=cv2.INTER_AREA)
