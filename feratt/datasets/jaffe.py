"""Reader for JAFFE (`<root>/KA.AN1.39.tiff`)."""

from __future__ import annotations

import re
from pathlib import Path

from feratt.artifacts.bank import Skipped
from feratt.datasets.classes import SEVEN_CLASSES, expression_class
from feratt.datasets.generic import finish_listing, require_folder, visible_children
from feratt.datasets.imageio import is_image_file
from feratt.datasets.records import FaceEntry, FaceListing, ReaderOptions

#: JAFFE has no contempt: the canonical order without it, whichever classes occur.
JAFFE_CLASSES: tuple[str, ...] = SEVEN_CLASSES

#: A JAFFE file stem: subject, expression, pose index, image number (KA.AN1.39).
JAFFE_NAME = re.compile(r"([A-Z]{2})\.([A-Z]{2})(\d+)\.(\d+)", re.IGNORECASE)


def read_jaffe(root: Path, options: ReaderOptions) -> FaceListing:
    """List JAFFE: every image in the folder, with subject and class from its name."""
    require_folder(root, "jaffe")
    index = {cls: i for i, cls in enumerate(JAFFE_CLASSES)}
    skipped: list[Skipped] = []
    entries: list[FaceEntry] = []
    notes: list[str] = []
    folders = 0
    for path in visible_children(root):
        if path.is_dir():
            folders += 1
            continue
        if not is_image_file(path):
            continue  # README and other documents that come with the data set
        match = JAFFE_NAME.fullmatch(path.stem)
        if match is None:
            skipped.append(Skipped(str(path), "name does not match the JAFFE pattern KA.AN1.39.tiff"))
            continue
        subject, code = match.group(1).upper(), match.group(2).upper()
        label = index[expression_class(code, path)]
        entries.append(FaceEntry(source=str(path), label=label, subject=subject, relpath=path.name))
    if folders:
        notes.append(f"{folders} subfolders of {root} ignored (JAFFE images lie directly in the folder)")
    listing = FaceListing(
        format="jaffe",
        root=str(root),
        classes=JAFFE_CLASSES,
        entries=entries,
        skipped=skipped,
        protocol={"protocol": "jaffe-7"},
        notes=notes,
    )
    return finish_listing(listing)
