"""A detected face's box (and its landmarks, when the detector gives them)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class FaceBox:
    """A detected face: top-left corner and size in pixels, and the detector's support for it."""

    x: float
    y: float
    width: float
    height: float
    score: float = 1.0  # the cascade: detections merged into this box; YuNet, HOG, CNN: their confidence
    #: (68, 2) iBUG landmarks in the photo's pixels, when the detector path gives them (feratt[landmarks])
    landmarks: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def area(self) -> float:
        return self.width * self.height

    def as_list(self) -> list[float]:
        """[x, y, width, height], rounded to a tenth of a pixel, for JSON."""
        return [round(float(v), 1) for v in (self.x, self.y, self.width, self.height)]
