"""Record types shared by every face reader."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np


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


def safe_text(text: str) -> str:
    """`text` as valid UTF-8: the bytes of a file name that is not UTF-8 become backslash escapes."""
    try:
        raw = os.fsencode(text)
    except UnicodeEncodeError:  # a lone surrogate that no file name decoded to
        raw = text.encode("utf-8", "backslashreplace")
    return raw.decode("utf-8", "backslashreplace")


@dataclass(frozen=True)
class Skipped:
    """An input file that was not used, and why."""

    path: str
    reason: str

    def safe(self) -> Skipped:
        """This record with path and reason as valid UTF-8, fit for a bank's string tables."""
        return Skipped(safe_text(self.path), safe_text(self.reason))


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
    protocol: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
