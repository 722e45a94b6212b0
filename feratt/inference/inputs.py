"""What `feratt predict` reads and writes: image and video files, centre crops, PNGs; no torch here."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from feratt.atomic import atomic_path
from feratt.datasets.imageio import IMAGE_EXTENSIONS, is_image_file, read_image
from feratt.errors import BadInputFile, FerattError

VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"})


def is_video_file(path: str | os.PathLike[str]) -> bool:
    """Whether `path` has a video extension and is not a hidden file."""
    path = Path(path)
    return not path.name.startswith(".") and path.suffix.lower() in VIDEO_EXTENSIONS


def prepare_image(image: np.ndarray, size: int) -> np.ndarray:
    """An RGB (or grey) uint8 image centre-cropped to a square, then area-resized to `size` x `size` RGB."""
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an HxW or HxWx3 image, got shape {image.shape}")
    height, width = image.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = np.ascontiguousarray(image[top : top + side, left : left + side], dtype=np.uint8)
    if side == size:
        return square
    return cv2.resize(square, (size, size), interpolation=cv2.INTER_AREA)


def read_rgb(path: str | os.PathLike[str]) -> np.ndarray:
    """An image file as RGB uint8 HxWx3; a FerattError naming the file when it cannot be read."""
    try:
        image, _ = read_image(path)
    except BadInputFile as exc:
        raise FerattError(str(exc)) from None
    return image if image.ndim == 3 else np.repeat(image[:, :, None], 3, axis=2)


def list_images(folder: str | os.PathLike[str], videos: bool = False) -> list[Path]:
    """The image (and with `videos`, video) files directly inside `folder`, no hidden files, by name."""
    return sorted(
        p
        for p in Path(folder).iterdir()
        if p.is_file() and (is_image_file(p) or (videos and is_video_file(p)))
    )


def expand_image_paths(paths: Sequence[str | os.PathLike[str]], videos: bool = False) -> list[Path]:
    """Each path that is a file, and the images (videos) of each that is a folder; FerattError if empty."""
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            images = list_images(path, videos)
            if not images:
                extensions = IMAGE_EXTENSIONS | (VIDEO_EXTENSIONS if videos else frozenset())
                names = ", ".join(sorted(e[1:] for e in extensions))
                raise FerattError(f"folder {path} holds no images ({names})")
            found.extend(images)
        elif path.exists():
            found.append(path)
        else:
            raise FerattError(f"{path} does not exist")
    return found


def unique_stems(paths: Sequence[str | os.PathLike[str]]) -> list[str]:
    """The file stems of `paths`, with -1, -2, ... added where two would be the same."""
    used: set[str] = set()
    stems = []
    for path in paths:
        stem = candidate = Path(path).stem
        number = 0
        while candidate in used:
            number += 1
            candidate = f"{stem}-{number}"
        used.add(candidate)
        stems.append(candidate)
    return stems


def make_folder(folder: str | os.PathLike[str]) -> Path:
    """`folder`, created if needed; a FerattError naming it when it cannot be."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FerattError(f"cannot create {folder}: {exc}") from None
    return folder


def write_png(target: Path, image: np.ndarray) -> Path:
    """Write an RGB image as a PNG atomically; a FerattError naming the file when it cannot be."""
    from feratt.datasets.preview import encode_png

    try:
        with atomic_path(target) as tmp:
            tmp.write_bytes(encode_png(image))
    except OSError as exc:
        raise FerattError(f"cannot write {target}: {exc.strerror or exc}") from None
    return target
