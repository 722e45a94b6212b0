"""Classify the faces of one photo or frame: detect, frame as training did, run the model."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from feratt.datasets.detect import DetectorSettings, FaceBox, find_faces
from feratt.inference.backends import Classifier
from feratt.inference.crops import frame_detection, model_input
from feratt.inference.inputs import prepare_image


@dataclass(frozen=True)
class FaceResult:
    """One face: where it is (None for a whole image), the model's input, its probabilities and I_att."""

    box: FaceBox | None
    input: np.ndarray  # in_size square RGB uint8
    probabilities: np.ndarray  # (C,) float64
    attention: np.ndarray | None  # in_size square RGB uint8, FERAtt only


def classify_faces(
    model: Classifier, image: np.ndarray, detector: DetectorSettings | None
) -> list[FaceResult]:
    """The faces `detector` finds in the RGB `image`, each framed as training framed faces and classified.

    With no detector the whole image, centre-cropped to a square, is one face (a face crop already).
    """
    if detector is None:
        boxes: list[FaceBox | None] = [None]
        inputs = [prepare_image(image, model.in_size)]
    else:
        found = find_faces(image, detector)
        boxes = list(found)
        inputs = [
            model_input(frame_detection(image, box, model.framing).image, model.in_size) for box in found
        ]
    if not inputs:
        return []
    probabilities, attention = model(np.stack(inputs))
    return [
        FaceResult(box, face, probabilities[i], None if attention is None else attention[i])
        for i, (box, face) in enumerate(zip(boxes, inputs, strict=True))
    ]


def label_of(classes: list[str], probabilities: np.ndarray) -> str:
    """The most probable class's name."""
    return classes[int(np.argmax(probabilities))]


def face_label(classes: list[str], probabilities: np.ndarray, track: int | None = None) -> str:
    """The text drawn beside a face: its class and probability, and its track in a video."""
    index = int(np.argmax(probabilities))
    prefix = "" if track is None else f"#{track} "
    return f"{prefix}{classes[index]} {probabilities[index]:.2f}"
