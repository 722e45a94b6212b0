"""Robust image and landmark reading that turns every bad file into a BadInputFile with a reason."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from feratt.errors import BadInputFile

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".pgm", ".ppm"})

_CONVERTIBLE = {
    "RGBA": ("RGB", "RGBA"),
    "LA": ("L", "grey+alpha"),
    "P": (None, "palette"),
    "PA": (None, "palette"),
    "CMYK": ("RGB", "CMYK"),
    "YCbCr": ("RGB", "YCbCr"),
    "1": ("L", "1-bit"),
}


def is_image_file(path: str | os.PathLike[str]) -> bool:
    """Whether `path` has an image extension and is not a hidden file."""
    path = Path(path)
    return not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS


def _sixteen_bit_to_uint8(array: np.ndarray) -> np.ndarray:
    peak = int(array.max()) if array.size else 0
    if peak <= 255:
        return array.astype(np.uint8)
    # 12-bit sensors store into 16 bits; scaling them by 65535 would leave a black image.
    full_scale = 4095 if peak <= 4095 else 65535
    scaled = np.rint(array.astype(np.float64) * (255.0 / full_scale))
    return np.clip(scaled, 0, 255).astype(np.uint8)


def read_image(path: str | os.PathLike[str], notes: list[str] | None = None) -> tuple[np.ndarray, str | None]:
    """Read an image as uint8 HxW (grey) or HxWx3 (RGB); return it with the conversion made, if any.

    The decoder's warnings (a corrupt EXIF block, say) go to `notes`, or into the reason of a
    BadInputFile when the image is unusable; never to stderr.
    """
    path = Path(path)
    name = str(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise BadInputFile(name, f"cannot read: {exc.strerror or exc}") from None
    if size == 0:
        raise BadInputFile(name, "empty file (0 bytes)")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = _decode(path, name)
        except BadInputFile as exc:
            warned = _warning_messages(caught)
            if not warned:
                raise
            raise BadInputFile(name, f"{exc.reason} ({'; '.join(warned)})") from None
    if notes is not None:
        notes.extend(f"{name}: decoder warning: {text}" for text in _warning_messages(caught))
    return result


def _warning_messages(caught: list[warnings.WarningMessage]) -> list[str]:
    """The distinct messages of `caught`, each on one line, less PIL's size warning."""
    # An image over PIL's size limit is refused with its own reason; its warning would only repeat it.
    return list(
        dict.fromkeys(
            " ".join(str(w.message).split())
            for w in caught
            if not issubclass(w.category, Image.DecompressionBombWarning)
        )
    )


def _too_large(name: str, width: int, height: int) -> BadInputFile | None:
    """A BadInputFile if the image has more pixels than PIL decodes safely (a decompression bomb)."""
    limit = Image.MAX_IMAGE_PIXELS
    if limit is None or width * height <= limit:
        return None
    return BadInputFile(
        name, f"too large to decode safely: {width}x{height} px, over the limit of {limit} pixels"
    )


def _decode(path: Path, name: str) -> tuple[np.ndarray, str | None]:
    try:
        with Image.open(path) as img:
            too_large = _too_large(name, img.width, img.height)
            if too_large is not None:
                raise too_large
            img.load()
            return _to_uint8(img, name)
    except Image.DecompressionBombError as exc:
        raise BadInputFile(name, f"too large to decode safely: {exc}") from None
    except UnidentifiedImageError:
        raise BadInputFile(name, "not a readable image") from None
    except OSError as exc:
        message = str(exc)
        if "truncated" in message.lower() or "broken data stream" in message.lower():
            raise BadInputFile(name, "truncated image") from None
        raise BadInputFile(name, f"cannot decode: {message}") from None
    except (ValueError, SyntaxError) as exc:
        raise BadInputFile(name, f"cannot decode: {exc}") from None


def _to_uint8(img: Image.Image, name: str) -> tuple[np.ndarray, str | None]:
    mode = img.mode
    if mode in ("L", "RGB"):
        return np.asarray(img, dtype=np.uint8).copy(), None
    if mode.startswith("I;16") or mode == "I":
        array = np.asarray(img)
        if mode == "I" and (array.min() < 0 or array.max() > 65535):
            raise BadInputFile(name, "32-bit integer image out of 16-bit range")
        return _sixteen_bit_to_uint8(array.astype(np.uint16)), "16-bit"
    if mode in _CONVERTIBLE:
        target, label = _CONVERTIBLE[mode]
        if target is None:
            palette_mode = img.palette.mode if img.palette is not None else "RGB"
            target = "L" if palette_mode == "L" else "RGB"
        return np.asarray(img.convert(target), dtype=np.uint8).copy(), label
    if mode in ("RGBX", "RGBa"):
        return np.asarray(img.convert("RGB"), dtype=np.uint8).copy(), mode
    raise BadInputFile(name, f"unsupported image mode {mode}")


def read_landmarks(path: str | os.PathLike[str], expected: int = 68) -> np.ndarray:
    """Read a landmarks file of one 'x y' pair per line as a float array (expected, 2)."""
    name = str(path)
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInputFile(name, f"cannot read landmarks: {exc}") from None
    try:
        rows = [[float(v) for v in line.split()] for line in text.splitlines() if line.strip()]
    except ValueError:
        raise BadInputFile(name, "landmarks file holds a value that is not a number") from None
    if len(rows) != expected or any(len(r) != 2 for r in rows):
        raise BadInputFile(name, f"landmarks file holds {len(rows)} rows, expected {expected} x y pairs")
    points = np.asarray(rows, dtype=np.float64)
    if not np.isfinite(points).all():
        raise BadInputFile(name, "landmarks file holds a non-finite value")
    return points
