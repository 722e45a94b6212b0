"""Record types shared by every face reader."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from feratt.artifacts.bank import Skipped
from feratt.codec import JSONObject


@dataclass(frozen=True)
class FaceEntry:
    """One face a reader found: where it lies and what it shows; its pixels are read later."""

    source: str
    label: int
    subject: str
    relpath: str
    landmarks: str | None = None


@dataclass
class FaceRecord:
    """One loaded face: uint8 image (HxW or HxWx3), its class, subject, source and optional mask."""

    image: np.ndarray
    label: int
    class_name: str
    subject: str
    source: str
    mask: np.ndarray | None = None
    landmarks: np.ndarray | None = None
    conversion: str | None = None
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ReaderOptions:
    """Protocol options for the readers; each reader uses the ones that concern its data set."""

    seed: int = 0
    neutral_subjects: int = 33
    last_frames: int = 1
    include_neutral: bool = True
    bu_intensity: int = 4
    subject_regex: str = r"^([^_.\-]+)"
    demo_subjects: int = 24
    demo_per_class: int = 2


@dataclass
class FaceListing:
    """What a reader found in a data set: entries, class list, skipped files and protocol choices."""

    format: str
    root: str
    classes: tuple[str, ...]
    entries: list[FaceEntry]
    skipped: list[Skipped] = field(default_factory=list)
    protocol: JSONObject = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
