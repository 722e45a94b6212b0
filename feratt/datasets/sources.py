"""Format names, layout detection and the one entry point that lists the faces of a source."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from feratt.datasets.bu3dfe import BU3DFE_SUBJECT, is_f2d_image, read_bu3dfe
from feratt.datasets.ckplus import (
    CKPLUS_FRAME_NAME,
    EMOTION_DIR,
    IMAGES_DIR,
    read_ckplus,
    read_ckplus_folders,
)
from feratt.datasets.classes import CLASS_ALIASES
from feratt.datasets.demo import DEMO_SOURCE, list_demo
from feratt.datasets.generic import read_csv, read_folders, visible_children
from feratt.datasets.imageio import is_image_file
from feratt.datasets.jaffe import JAFFE_NAME, read_jaffe
from feratt.datasets.records import FaceListing, ReaderOptions
from feratt.errors import FerattError

Reader = Callable[[Path, ReaderOptions], FaceListing]

#: Every on-disk format and the function that lists its faces.
READERS: dict[str, Reader] = {
    "ckplus": read_ckplus,
    "ckplus-folders": read_ckplus_folders,
    "bu3dfe": read_bu3dfe,
    "jaffe": read_jaffe,
    "folders": read_folders,
    "csv": read_csv,
}

#: Every format name a user can give, besides "auto".
FORMATS: tuple[str, ...] = (*READERS, "demo")

#: What detect_format looks for, in the order it tries; shown when nothing matches.
LAYOUT_HINTS: tuple[str, ...] = (
    "ckplus (cohn-kanade-images/ + Emotion/)",
    "ckplus-folders (<class>/S###_###_########.png)",
    "bu3dfe (F0001/F0001_AN04WH_F2D.bmp)",
    "jaffe (KA.AN1.39.tiff)",
    "folders (<class>/<image>)",
    "csv (a .csv file)",
)


def _is_class_name(name: str) -> bool:
    return name.strip().lower() in CLASS_ALIASES


def _class_folder_images(folder: Path) -> list[Path] | None:
    """The images in the class folders under `folder`, or None if no class folder holds one."""
    images: list[Path] = []
    for child in visible_children(folder):
        if child.is_dir() and _is_class_name(child.name):
            images.extend(p for p in visible_children(child) if p.is_file() and is_image_file(p))
    return images or None


def _is_bu3dfe(folder: Path) -> bool:
    for child in visible_children(folder):
        if (
            child.is_dir()
            and BU3DFE_SUBJECT.fullmatch(child.name)
            and any(p.is_file() and is_f2d_image(p) for p in visible_children(child))
        ):
            return True
    return False


def _is_jaffe(folder: Path) -> bool:
    return any(
        p.suffix.lower() in (".tif", ".tiff") and JAFFE_NAME.fullmatch(p.stem) and p.is_file()
        for p in visible_children(folder)
    )


def detect_format(path: Path) -> str:
    """Name the format of the data set at `path`, or raise FerattError listing the layouts looked for."""
    if not path.exists():
        raise FerattError(f"path not found: {path}")
    if path.is_file():
        if path.suffix.lower() == ".csv":
            return "csv"
    elif path.is_dir():
        if (path / IMAGES_DIR).is_dir() and (path / EMOTION_DIR).is_dir():
            return "ckplus"
        images = _class_folder_images(path)
        if images is not None:
            if all(CKPLUS_FRAME_NAME.fullmatch(p.stem) for p in images):
                return "ckplus-folders"
            return "folders"
        if _is_bu3dfe(path):
            return "bu3dfe"
        if _is_jaffe(path):
            return "jaffe"
    raise FerattError(f"no known face data set layout in {path}; looked for: {', '.join(LAYOUT_HINTS)}")


def list_faces(source: str, fmt: str, options: ReaderOptions) -> FaceListing:
    """List the faces of `source` (a path or builtin:demo) read as format `fmt` (or "auto")."""
    if fmt != "auto" and fmt not in FORMATS:
        raise FerattError(f"unknown format {fmt!r}; valid formats: auto, {', '.join(FORMATS)}")
    if source == DEMO_SOURCE or fmt == "demo":
        if source != DEMO_SOURCE:
            raise FerattError(f"format demo reads the built-in demo set; give the source {DEMO_SOURCE}")
        if fmt not in ("auto", "demo"):
            raise FerattError(f"{DEMO_SOURCE} is the built-in demo set; it cannot be read as format {fmt}")
        listing = list_demo(options)
        fmt = "demo"
    else:
        path = Path(source).expanduser()
        if not path.exists():
            raise FerattError(f"path not found: {source}")
        if fmt == "auto":
            fmt = detect_format(path)
        listing = READERS[fmt](path, options)
    if not listing.entries:
        raise FerattError(f"no faces found in {source} (format {fmt})")
    return listing
