"""Reader for BU-3DFE's 2D frontal images (`<root>/F0001/F0001_AN04WH_F2D.bmp`)."""

from __future__ import annotations

import re
from pathlib import Path

from feratt.artifacts.bank import Skipped
from feratt.datasets.classes import SEVEN_CLASSES, expression_class
from feratt.datasets.generic import finish_listing, require_folder, visible_children
from feratt.datasets.imageio import is_image_file
from feratt.datasets.records import FaceEntry, FaceListing, ReaderOptions
from feratt.errors import FerattError

#: BU-3DFE has no contempt: the canonical order without it, whichever classes occur.
BU3DFE_CLASSES: tuple[str, ...] = SEVEN_CLASSES

#: A subject folder: F0001-F0056 (female), M0001-M0044 (male).
BU3DFE_SUBJECT = re.compile(r"[FM]\d{4}")

#: A 2D frontal image name: subject, expression, intensity, ethnicity, F2D.
BU3DFE_F2D_NAME = re.compile(r"([FM]\d{4})_([A-Z]{2})(\d{2})([A-Z]{2})_F2D", re.IGNORECASE)

NEUTRAL_CODE = "NE"
INTENSITIES = range(1, 5)


def is_f2d_image(path: Path) -> bool:
    """Whether `path` is named like a BU-3DFE 2D frontal image (`*_F2D` with an image extension)."""
    return is_image_file(path) and path.stem.upper().endswith("_F2D")


def read_bu3dfe(root: Path, options: ReaderOptions) -> FaceListing:
    """List BU-3DFE by the paper's protocol: six expressions at one intensity plus each neutral image."""
    require_folder(root, "bu3dfe")
    intensity = options.bu_intensity
    if intensity not in INTENSITIES:
        raise FerattError(f"the BU-3DFE intensity must be 1 to 4, got {intensity}", field="bu_intensity")
    index = {cls: i for i, cls in enumerate(BU3DFE_CLASSES)}
    skipped: list[Skipped] = []
    entries: list[FaceEntry] = []
    notes: list[str] = []
    other_intensity = 0
    ignored: list[str] = []
    for subject_dir in visible_children(root):
        if not (subject_dir.is_dir() and BU3DFE_SUBJECT.fullmatch(subject_dir.name)):
            ignored.append(subject_dir.name)
            continue
        for path in visible_children(subject_dir, skipped):
            if not (path.is_file() and is_f2d_image(path)):
                continue  # 3D meshes, landmark files and other views are not used
            match = BU3DFE_F2D_NAME.fullmatch(path.stem)
            if match is None:
                skipped.append(Skipped(str(path), "name does not match F0001_AN04WH_F2D"))
                continue
            subject, code, level_text = match.group(1).upper(), match.group(2).upper(), match.group(3)
            cls = expression_class(code, path)
            if subject != subject_dir.name:
                skipped.append(
                    Skipped(str(path), f"name says subject {subject} but it lies in {subject_dir.name}/")
                )
                continue
            level = int(level_text)
            if code == NEUTRAL_CODE:
                if level != 0:
                    skipped.append(Skipped(str(path), f"neutral image with intensity {level_text}, not 00"))
                    continue
            elif level not in INTENSITIES:
                skipped.append(Skipped(str(path), f"intensity {level_text} out of range 01-04"))
                continue
            elif level != intensity:
                other_intensity += 1
                continue
            entries.append(
                FaceEntry(
                    source=str(path),
                    label=index[cls],
                    subject=subject,
                    relpath=f"{subject_dir.name}/{path.name}",
                )
            )
    if other_intensity:
        notes.append(
            f"{other_intensity} expression images at intensities other than {intensity:02d} not used"
        )
    if ignored:
        shown = ", ".join(ignored[:5]) + (", ..." if len(ignored) > 5 else "")
        notes.append(
            f"{len(ignored)} entries in {root} are not subject folders (F0001, M0001), ignored: {shown}"
        )
    listing = FaceListing(
        format="bu3dfe",
        root=str(root),
        classes=BU3DFE_CLASSES,
        entries=entries,
        skipped=skipped,
        protocol={"protocol": "bu3dfe-7", "intensity": intensity},
        notes=notes,
    )
    return finish_listing(listing)
