"""Background photos for the compositor: COCO, a folder, or scikit-image's bundled photos; decode and crop."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from feratt.atomic import atomic_path, atomic_write_bytes
from feratt.codec import encode
from feratt.datasets.imageio import read_image
from feratt.errors import BadInputFile, FerattError
from feratt.jsonfile import read_json
from feratt.names import stays_inside

FOLDER_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
EMBEDDED_SOURCE = "builtin:skimage"
EMBEDDED_VERSION = 1

#: scikit-image photos that ship inside its wheel (no pooch download), as (name, file in skimage's data_dir).
#: Left out on purpose: astronaut, camera (cameraman) and coins (profile heads) show faces; page and text are
#: text pages; cell, ihc, microaneurysms, retina, shepp_logan_phantom (and the downloaded kidney, cells3d,
#: human_mitosis, ...) are microscopy or medical; horse, logo, chessboard are binary or logo graphics;
#: colorwheel is a synthetic graphic, not a photo.
EMBEDDED_PHOTOS: tuple[tuple[str, str], ...] = (
    ("coffee", "coffee.png"),
    ("chelsea", "chelsea.png"),
    ("rocket", "rocket.jpg"),
    ("hubble_deep_field", "hubble_deep_field.jpg"),
    ("brick", "brick.png"),
    ("grass", "grass.png"),
    ("gravel", "gravel.png"),
    ("stereo_motorcycle", "motorcycle_left.png"),
    ("clock", "clock_motion.png"),
    ("moon", "moon.png"),
)
#: A few COCO categories (with their COCO ids) so the embedded set validates the usual category options.
_EMBEDDED_CATEGORIES = (
    (1, "person"),
    (2, "bicycle"),
    (3, "car"),
    (4, "motorcycle"),
    (17, "cat"),
    (18, "dog"),
    (85, "clock"),
)
_EMBEDDED_JSON = "annotations.json"

_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_REDUCED_FLAGS = (
    (8, cv2.IMREAD_REDUCED_COLOR_8),
    (4, cv2.IMREAD_REDUCED_COLOR_4),
    (2, cv2.IMREAD_REDUCED_COLOR_2),
)


@dataclass(frozen=True)
class Background:
    """One usable background image: its id, file and pixel size."""

    id: str
    path: str
    width: int
    height: int


@dataclass
class BackgroundSet:
    """The backgrounds a source offers after filtering, with what was left out and why."""

    source: str
    kind: str
    backgrounds: list[Background]
    excluded: dict[str, int] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def report_lines(self) -> list[str]:
        """How many images were kept, then one line per reason others were left out."""
        total = len(self.backgrounds) + sum(self.excluded.values()) + len(self.skipped)
        lines = [
            f"{self.kind} backgrounds from {self.source}: kept {len(self.backgrounds)} of {total} images"
        ]
        for reason, count in sorted(self.excluded.items(), key=lambda item: (-item[1], item[0])):
            lines.append(f"left out {count}: {reason}")
        by_reason: dict[str, list[str]] = {}
        for path, reason in self.skipped:
            by_reason.setdefault(reason, []).append(path)
        for reason, paths in sorted(by_reason.items(), key=lambda item: (-len(item[1]), item[0])):
            lines.append(f"skipped {len(paths)} unusable file(s): {reason} (e.g. {paths[0]})")
        return lines


def _counts_text(excluded: dict[str, int], skipped: Sequence[tuple[str, str]] = ()) -> str:
    parts = [f"{reason}: {count}" for reason, count in excluded.items()]
    if skipped:
        parts.append(f"unreadable: {len(skipped)}")
    return ", ".join(parts) if parts else "no image at all"


def _names(categories: Sequence[str] | str, option: str) -> tuple[str, ...]:
    if isinstance(categories, str):
        categories = (categories,)
    names = tuple(dict.fromkeys(str(name).strip() for name in categories))
    if any(not name for name in names):
        raise FerattError("a category name is empty", field=option)
    return names


def _load_coco_json(annotations: str) -> dict[str, object]:
    """Read and check a COCO instances JSON (the document pycocotools takes); every problem a FerattError."""
    if not os.path.isfile(annotations):
        raise FerattError(f"COCO annotations file {annotations} does not exist", field="coco_annotations")
    try:
        with open(annotations, "rb") as handle:
            data = json.load(handle)
    except OSError as exc:
        raise FerattError(f"cannot read COCO annotations file {annotations}: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FerattError(f"{annotations} is not a COCO annotations file: not valid JSON ({exc})") from None
    bad = f"{annotations} is not a COCO instances file"
    if not isinstance(data, dict):
        raise FerattError(f"{bad}: the top level is not a JSON object")
    for key in ("images", "categories", "annotations"):
        if not isinstance(data.get(key), list):
            raise FerattError(f'{bad}: it has no "{key}" list')
    for index, image in enumerate(data["images"]):
        if not isinstance(image, dict) or "id" not in image or not isinstance(image.get("file_name"), str):
            raise FerattError(f'{bad}: images[{index}] has no "id" and "file_name"')
        for key in ("width", "height"):
            value = image.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise FerattError(f'{bad}: images[{index}] has no positive "{key}"')
    for index, category in enumerate(data["categories"]):
        if (
            not isinstance(category, dict)
            or "id" not in category
            or not isinstance(category.get("name"), str)
        ):
            raise FerattError(f'{bad}: categories[{index}] has no "id" and "name"')
    for index, annotation in enumerate(data["annotations"]):
        if (
            not isinstance(annotation, dict)
            or "image_id" not in annotation
            or "category_id" not in annotation
        ):
            raise FerattError(f'{bad}: annotations[{index}] has no "image_id" and "category_id"')
        # pycocotools indexes annotations by id; COCO-like files written by other tools sometimes omit it.
        annotation.setdefault("id", ("feratt", index))
    return data


def _id_key(image_id: Any) -> tuple[int, int, str]:
    if isinstance(image_id, int) and not isinstance(image_id, bool):
        return (0, image_id, "")
    return (1, 0, str(image_id))


def _file_problem(path: str) -> str | None:
    """Why the file at `path` cannot be a background, from one stat call (no decoding), or None."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return "file missing"
    except OSError as exc:
        return f"cannot read: {exc.strerror or exc}"
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file"
    if info.st_size == 0:
        return "empty file (0 bytes)"
    return None


def coco_backgrounds(
    annotations: str,
    images_dir: str,
    exclude_categories: Sequence[str] | str = ("person",),
    include_categories: Sequence[str] | str = (),
    min_side: int = 0,
) -> BackgroundSet:
    """COCO images usable as backgrounds: none of the excluded categories, one of the included, big enough."""
    from pycocotools.coco import COCO

    excluded_names = _names(exclude_categories, "exclude_categories")
    included_names = _names(include_categories, "include_categories")
    if min_side < 0:
        raise FerattError(f"the minimum side must be 0 or more, not {min_side}", field="min_side")
    if not os.path.isdir(images_dir):
        raise FerattError(f"COCO images folder {images_dir} does not exist", field="coco_images")
    data = _load_coco_json(annotations)
    coco = COCO()
    with contextlib.redirect_stdout(io.StringIO()):
        coco.dataset = data
        coco.createIndex()

    ids_by_name: dict[str, list[Any]] = {}
    for category in coco.cats.values():
        ids_by_name.setdefault(category["name"], []).append(category["id"])
    for option, names in (("exclude_categories", excluded_names), ("include_categories", included_names)):
        unknown = [name for name in names if name not in ids_by_name]
        if unknown:
            valid = ", ".join(sorted(ids_by_name)) or "(none)"
            raise FerattError(
                f"unknown COCO categor{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)} "
                f"among the {option.split('_')[0]}d categories; valid names: {valid}",
                field=option,
            )
    both = [name for name in included_names if name in excluded_names]
    if both:
        message = f"categories {', '.join(both)} are both included and excluded"
        raise FerattError(message, field="include_categories")

    def images_with(name: str) -> set[Any]:
        return {image_id for cat_id in ids_by_name[name] for image_id in coco.catToImgs.get(cat_id, ())}

    exclude_sets = [(f"has {name}", images_with(name)) for name in excluded_names]
    include_set = set().union(*(images_with(name) for name in included_names)) if included_names else None
    excluded: dict[str, int] = {}
    kept: list[tuple[Any, Background]] = []
    for image_id, image in coco.imgs.items():
        reason = next((label for label, ids in exclude_sets if image_id in ids), None)
        if reason is None and include_set is not None and image_id not in include_set:
            reason = f"has none of {', '.join(included_names)}"
        width, height = int(image["width"]), int(image["height"])
        if reason is None and min(width, height) < min_side:
            reason = f"smaller than {min_side} px"
        path = os.path.join(images_dir, image["file_name"])
        if reason is None and not stays_inside(image["file_name"]):
            reason = "file_name leads outside the images folder"
        if reason is None:
            reason = _file_problem(path)
        if reason is not None:
            excluded[reason] = excluded.get(reason, 0) + 1
            continue
        kept.append((image_id, Background(str(image_id), path, width, height)))
    kept.sort(key=lambda item: _id_key(item[0]))
    # Reasons in the order the filters run (file problems last, by name), whatever order images came in.
    stages = [label for label, _ in exclude_sets] + [f"has none of {', '.join(included_names)}"]
    stages.append(f"smaller than {min_side} px")
    rank = {label: index for index, label in enumerate(stages)}
    excluded = dict(sorted(excluded.items(), key=lambda item: (rank.get(item[0], len(rank)), item[0])))
    result = BackgroundSet(annotations, "coco", [bg for _, bg in kept], excluded, [])
    if not result.backgrounds:
        raise FerattError(
            f"no background image left after filtering: 0 of {len(coco.imgs)} kept ({_counts_text(excluded)})"
        )
    return result


def _walk_images(folder: str) -> Iterable[str]:
    """Relative POSIX paths of the non-hidden image files under `folder`, sorted."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [name for name in dirs if not name.startswith(".")]
        for name in files:
            if name.startswith(".") or os.path.splitext(name)[1].lower() not in FOLDER_EXTENSIONS:
                continue
            found.append(Path(os.path.relpath(os.path.join(root, name), folder)).as_posix())
    return sorted(found)


def _header_size(path: str) -> tuple[int, int]:
    """(width, height) from an image header without decoding the pixels; BadInputFile otherwise."""
    problem = _file_problem(path)
    if problem is not None:
        raise BadInputFile(path, problem)
    try:
        with Image.open(path) as img:
            width, height = img.size
    except UnidentifiedImageError:
        raise BadInputFile(path, "not a readable image") from None
    except Image.DecompressionBombError:
        raise BadInputFile(path, "image too large") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise BadInputFile(path, f"cannot read header: {exc}") from None
    if width <= 0 or height <= 0:
        raise BadInputFile(path, f"image has no pixels ({width}x{height})")
    return width, height


def folder_backgrounds(folder: str, min_side: int = 0) -> BackgroundSet:
    """Every image file under `folder` (recursive, hidden ones ignored), sorted by relative path."""
    if not os.path.isdir(folder):
        raise FerattError(f"background folder {folder} does not exist", field="backgrounds")
    if min_side < 0:
        raise FerattError(f"the minimum side must be 0 or more, not {min_side}", field="min_side")
    backgrounds: list[Background] = []
    excluded: dict[str, int] = {}
    skipped: list[tuple[str, str]] = []
    for relative in _walk_images(folder):
        path = os.path.join(folder, relative)
        try:
            width, height = _header_size(path)
        except BadInputFile as bad:
            skipped.append((bad.path, bad.reason))
            continue
        if min(width, height) < min_side:
            reason = f"smaller than {min_side} px"
            excluded[reason] = excluded.get(reason, 0) + 1
            continue
        backgrounds.append(Background(relative, path, width, height))
    if not backgrounds:
        if not excluded and not skipped:
            extensions = "/".join(sorted(ext[1:] for ext in FOLDER_EXTENSIONS))
            message = f"background folder {folder} holds no image file ({extensions})"
            raise FerattError(message, field="backgrounds")
        total = sum(excluded.values()) + len(skipped)
        raise FerattError(
            f"no background image left after filtering {folder}: 0 of {total} kept "
            f"({_counts_text(excluded, skipped)})"
        )
    return BackgroundSet(folder, "folder", backgrounds, excluded, skipped)


@dataclass(frozen=True)
class _EmbeddedStamp:
    """What the embedded background cache was made of, recorded in its COCO file's info."""

    feratt_embedded_version: int
    skimage: str
    photos: list[str]


def _embedded_stamp(photos: Sequence[str]) -> _EmbeddedStamp:
    import skimage

    return _EmbeddedStamp(EMBEDDED_VERSION, skimage.__version__, list(photos))


def _cache_is_complete(cache: Path, stamp: _EmbeddedStamp) -> bool:
    try:
        data = read_json(cache / _EMBEDDED_JSON)
    except FerattError:
        return False
    if not isinstance(data, dict) or not isinstance(data.get("info"), dict):
        return False
    if data["info"].get("feratt") != encode(stamp) or not isinstance(data.get("images"), list):
        return False
    names = [image.get("file_name") for image in data["images"] if isinstance(image, dict)]
    if names != [f"{name}.jpg" for name in stamp.photos]:
        return False
    return all(isinstance(name, str) and _file_problem(str(cache / name)) is None for name in names)


def embedded_backgrounds(cache_dir: str) -> BackgroundSet:
    """scikit-image's bundled photos (no faces, text or microscopy), cached as a small COCO set."""
    from skimage.data import data_dir

    available = [(name, os.path.join(data_dir, file)) for name, file in EMBEDDED_PHOTOS]
    # Only files already inside the installed package: anything else would need a download through pooch.
    available = [(name, path) for name, path in available if os.path.isfile(path)]
    if not available:
        raise FerattError(f"scikit-image ships none of its sample photos here ({data_dir})")
    cache = Path(cache_dir)
    stamp = _embedded_stamp([name for name, _ in available])
    if not _cache_is_complete(cache, stamp):
        try:
            cache.mkdir(parents=True, exist_ok=True)
            images = []
            for index, (name, source) in enumerate(available, start=1):
                with Image.open(source) as img:
                    rgb = img.convert("RGB")
                file_name = f"{name}.jpg"
                with atomic_path(cache / file_name) as tmp:
                    rgb.save(tmp, format="JPEG", quality=95)
                images.append({"id": index, "file_name": file_name, "width": rgb.width, "height": rgb.height})
            document = {
                "info": {
                    "description": "scikit-image sample photos used as backgrounds",
                    "feratt": encode(stamp),
                },
                "images": images,
                "categories": [{"id": cat_id, "name": name} for cat_id, name in _EMBEDDED_CATEGORIES],
                "annotations": [],
            }
            atomic_write_bytes(cache / _EMBEDDED_JSON, (json.dumps(document, indent=1) + "\n").encode())
        except OSError as exc:
            raise FerattError(
                f"cannot write the embedded background cache in {cache_dir}: {exc.strerror or exc}"
            ) from None
    result = coco_backgrounds(str(cache / _EMBEDDED_JSON), str(cache))
    return replace(result, source=EMBEDDED_SOURCE, kind="embedded")


def _jpeg_size(data: bytes) -> tuple[int, int] | str:
    """(height, width) of a baseline or progressive JPEG from its markers, or why it is unusable."""
    pos, end = 2, len(data)
    size: tuple[int, int] | None = None
    while True:
        if pos >= end:
            return "truncated image"
        if data[pos] != 0xFF:
            return "corrupt JPEG header"
        while pos < end and data[pos] == 0xFF:
            pos += 1
        if pos >= end:
            return "truncated image"
        marker = data[pos]
        pos += 1
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:
            continue
        if marker == 0xD9:
            return "JPEG holds no image data"
        if pos + 2 > end:
            return "truncated image"
        length = (data[pos] << 8) | data[pos + 1]
        if length < 2:
            return "corrupt JPEG header"
        if marker in _JPEG_SOF:
            if pos + 7 > end:
                return "truncated image"
            size = ((data[pos + 3] << 8) | data[pos + 4], (data[pos + 5] << 8) | data[pos + 6])
        if marker == 0xDA:
            scan = pos + length
            break
        pos += length
    if size is None:
        return "JPEG has no frame header"
    # Entropy-coded data never holds FF D9 (0xFF bytes are stuffed), so a file without it after the first
    # scan was cut short. Searching rather than checking the last bytes accepts data appended after the end.
    if data.find(b"\xff\xd9", scan) < 0:
        return "truncated image"
    return size


def decode_background(path: str, max_side: int | None = None) -> np.ndarray:
    """Decode a background as RGB uint8 HxWx3; a JPEG may decode at 1/2, 1/4 or 1/8 scale (see below).

    `max_side` is the most pixels the caller needs along the image's shorter side: a JPEG is then decoded
    by libjpeg at the strongest reduction (8, 4 or 2) whose shorter side, ceil(side / factor), is still at
    least `max_side`, so the result can be smaller than the file: sample crops on the returned shape, or
    scale them. None decodes at full size. Other formats always decode at full size. EXIF orientation is
    ignored, so the shape matches COCO's (and PIL's) width and height.
    """
    name = str(path)
    if max_side is not None and max_side < 1:
        raise ValueError(f"max_side must be at least 1, not {max_side}")
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise BadInputFile(name, f"cannot read: {exc.strerror or exc}") from None
    if not data:
        raise BadInputFile(name, "empty file (0 bytes)")
    flags = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
    if data[:3] == b"\xff\xd8\xff":
        size = _jpeg_size(data)
        if isinstance(size, str):
            raise BadInputFile(name, size)
        shorter = min(size)
        if max_side is not None and shorter > 0:
            for factor, reduced in _REDUCED_FLAGS:
                if math.ceil(shorter / factor) >= max_side:
                    flags = reduced | cv2.IMREAD_IGNORE_ORIENTATION
                    break
    try:
        bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    except cv2.error:
        bgr = None
    if bgr is not None and bgr.ndim == 3 and bgr.shape[2] == 3 and bgr.size:
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    # Formats or variants this OpenCV build cannot read: PIL, whose failures carry a reason.
    try:
        array, _ = read_image(name)
    except Image.DecompressionBombError:
        raise BadInputFile(name, "image too large") from None
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    return np.ascontiguousarray(array)


@dataclass(frozen=True)
class CropParams:
    """A square crop in background pixel coordinates: left edge x, top edge y, side length."""

    x: float
    y: float
    side: float


def sample_crop(
    height: int, width: int, scale_range: tuple[float, float], rng: np.random.Generator
) -> CropParams:
    """A whole-pixel square crop of side U(scale_range) x the shorter side, placed uniformly inside."""
    low, high = float(scale_range[0]), float(scale_range[1])
    if not 0 < low <= high <= 1:
        raise ValueError(f"scale_range must satisfy 0 < low <= high <= 1, not {scale_range}")
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, not {height}x{width}")
    # Whole pixels let apply_crop slice and resize once instead of resampling a finer grid.
    side = min(max(1, round(rng.uniform(low, high) * min(height, width))), min(height, width))
    x = rng.integers(0, width - side + 1)
    y = rng.integers(0, height - side + 1)
    return CropParams(float(x), float(y), float(side))


def apply_crop(image: np.ndarray, crop: CropParams, size: int) -> np.ndarray:
    """Cut `crop` out of an RGB uint8 image and resample it to size x size (area when shrinking)."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"apply_crop needs an RGB uint8 HxWx3 image, not {image.dtype} {image.shape}")
    if size < 1:
        raise ValueError(f"crop size must be at least 1, not {size}")
    height, width = image.shape[:2]
    tolerance = 1e-6 * max(height, width)
    if crop.side <= 0 or crop.x < -tolerance or crop.y < -tolerance:
        raise ValueError(f"{crop} does not lie inside a {width}x{height} image")
    if crop.x + crop.side > width + tolerance or crop.y + crop.side > height + tolerance:
        raise ValueError(f"{crop} does not lie inside a {width}x{height} image")
    if all(float(v).is_integer() for v in (crop.x, crop.y, crop.side)):
        x, y, side = int(crop.x), int(crop.y), int(crop.side)
        box = image[y : y + side, x : x + side]
        if side == size:
            return np.ascontiguousarray(box)
        # Area averaging is needed once a shrink skips pixels; below 2x bilinear is as good and 10x cheaper.
        interpolation = cv2.INTER_AREA if side >= 2 * size else cv2.INTER_LINEAR
        return cv2.resize(box, (size, size), interpolation=interpolation)
    # Resample bilinearly onto a grid k times finer than the output (k the smallest integer with at least one
    # sample per source pixel), then average k x k blocks: exact sub-pixel geometry and no aliasing when
    # shrinking; k is 1 when growing, which is a single bilinear warp. Pixel i covers [i, i + 1).
    factor = max(1, math.ceil(crop.side / size - 1e-9))
    grid = size * factor
    step = crop.side / grid
    matrix = np.array(
        [[step, 0.0, crop.x + 0.5 * step - 0.5], [0.0, step, crop.y + 0.5 * step - 0.5]], dtype=np.float64
    )
    fine = cv2.warpAffine(
        np.ascontiguousarray(image),
        matrix,
        (grid, grid),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE,
    )
    if factor == 1:
        return fine
    return cv2.resize(fine, (size, size), interpolation=cv2.INTER_AREA)


def background_pyramid(image: np.ndarray, size: int) -> list[np.ndarray]:
    """The image and its successive halvings, down to the last level whose shorter side is >= `size`."""
    levels = [image]
    while min(levels[-1].shape[:2]) >= 2 * size:
        height, width = levels[-1].shape[:2]
        levels.append(cv2.resize(levels[-1], (width // 2, height // 2), interpolation=cv2.INTER_AREA))
    return levels


def apply_crop_pyramid(levels: list[np.ndarray], crop: CropParams, size: int) -> np.ndarray:
    """`apply_crop` on the coarsest pyramid level that still shrinks to `size`, which is much cheaper."""
    level = 0
    while level + 1 < len(levels) and crop.side / 2 ** (level + 1) >= size:
        level += 1
    if level == 0:
        return apply_crop(levels[0], crop, size)
    image = levels[level]
    height, width = image.shape[:2]
    scale = 2**level
    side = min(max(1, round(crop.side / scale)), height, width)
    x = min(round(crop.x / scale), width - side)
    y = min(round(crop.y / scale), height - side)
    return apply_crop(image, CropParams(float(x), float(y), float(side)), size)
