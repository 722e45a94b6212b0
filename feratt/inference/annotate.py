"""Boxes and labels drawn on photos and video frames."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

#: One colour per class index (RGB), distinct on photos; cycled past eight classes.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 230, 230),
    (230, 40, 40),
    (160, 80, 220),
    (60, 170, 60),
    (150, 90, 40),
    (250, 200, 20),
    (40, 110, 230),
    (240, 120, 200),
)


def draw_faces(
    image: np.ndarray,
    boxes: Sequence[Sequence[float]],
    labels: Sequence[str],
    classes: Sequence[int],
) -> np.ndarray:
    """A copy of the RGB `image` with each box (x, y, width, height) outlined and its label above it."""
    out = np.ascontiguousarray(image.copy())
    height, width = out.shape[:2]
    thickness = max(2, round(min(height, width) / 300))
    scale = max(0.45, min(height, width) / 900)
    for box, label, index in zip(boxes, labels, classes, strict=True):
        x, y, w, h = (round(float(v)) for v in box)
        colour = PALETTE[index % len(PALETTE)]
        cv2.rectangle(out, (x, y), (x + w, y + h), colour, thickness, cv2.LINE_AA)
        (text_w, text_h), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        top = y - text_h - base - 4 if y - text_h - base - 4 >= 0 else y + h
        cv2.rectangle(out, (x, top), (x + text_w + 6, top + text_h + base + 4), colour, -1)
        ink = (0, 0, 0) if sum(colour) > 380 else (255, 255, 255)
        cv2.putText(
            out, label, (x + 3, top + text_h + 2), cv2.FONT_HERSHEY_SIMPLEX, scale, ink, 1, cv2.LINE_AA
        )
    return out
