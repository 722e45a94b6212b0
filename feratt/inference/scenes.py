"""Group photos with known face boxes: demo faces (and the astronaut) pasted onto scikit-image's photos.

Made only from images feratt may ship, for the detection benchmark, the tests and the README's figure.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

from feratt.datasets.detect import FaceBox

#: scikit-image photos without faces (as the renderer's embedded backgrounds).
SCENE_PHOTOS: tuple[str, ...] = ("coffee", "chelsea", "rocket", "brick", "grass", "gravel", "clock", "moon")


@dataclass(frozen=True)
class Portrait:
    """A face to paste: an RGB picture, the region to paste (bool), and the face's box in the picture."""

    image: np.ndarray
    region: np.ndarray
    face: FaceBox


@dataclass(frozen=True)
class Scene:
    """A composed photo and the true boxes of the faces pasted into it, in its pixels."""

    image: np.ndarray
    faces: tuple[FaceBox, ...]


def demo_portrait(subject: int, class_name: str, variant: int = 0, seed: int = 0) -> Portrait:
    """A demo face as drawn for the face bank: its head region (face, ears, hair) and the box around it."""
    from feratt.datasets.demo import demo_source, render_demo_face

    image, region = render_demo_face(demo_source(subject, class_name, variant), seed)
    return Portrait(image, region, _region_box(region))


@functools.lru_cache(maxsize=1)
def astronaut_portrait() -> Portrait:
    """Eileen Collins's head from scikit-image's astronaut photo, cut out by the face bank's own mask."""
    from skimage import data

    from feratt.datasets.facemask import compute_mask

    photo = data.astronaut()
    mask, _ = compute_mask(photo)
    x0, y0, width, height = cv2.boundingRect(mask.astype(np.uint8))
    crop = (slice(y0, y0 + height), slice(x0, x0 + width))
    return Portrait(np.ascontiguousarray(photo[crop]), mask[crop], FaceBox(0.0, 0.0, width, height))


def grey_portrait(portrait: Portrait) -> Portrait:
    """`portrait` made grey (three equal channels), as the faces of most lab expression sets are."""
    grey = cv2.cvtColor(portrait.image, cv2.COLOR_RGB2GRAY)
    return Portrait(np.repeat(grey[:, :, None], 3, axis=2), portrait.region, portrait.face)


def _region_box(region: np.ndarray) -> FaceBox:
    x, y, width, height = cv2.boundingRect(region.astype(np.uint8))
    return FaceBox(float(x), float(y), float(width), float(height))


def background(name: str, size: tuple[int, int]) -> np.ndarray:
    """scikit-image's photo `name`, RGB, scaled to cover `size` (width, height) and centre-cropped."""
    from skimage import data

    photo = getattr(data, name)()
    photo = photo if photo.ndim == 3 else np.repeat(photo[:, :, None], 3, axis=2)
    width, height = size
    scale = max(width / photo.shape[1], height / photo.shape[0])
    resized = cv2.resize(photo[:, :, :3], None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    top, left = (resized.shape[0] - height) // 2, (resized.shape[1] - width) // 2
    return np.ascontiguousarray(resized[top : top + height, left : left + width])


def paste(scene: np.ndarray, portrait: Portrait, x: float, y: float, width: float) -> FaceBox:
    """Paste `portrait` scaled so that its face box is `width` wide, that box's corner at (x, y); the box.

    The region's edge is feathered over 2 pixels, as the renderer's alpha matting does.
    """
    scale = width / portrait.face.width
    affine = np.array([[scale, 0, x - scale * portrait.face.x], [0, scale, y - scale * portrait.face.y]])
    height, full_width = scene.shape[:2]
    image = cv2.warpAffine(portrait.image, affine, (full_width, height), flags=cv2.INTER_AREA)
    region = cv2.warpAffine(portrait.region.astype(np.float32), affine, (full_width, height))
    alpha = cv2.GaussianBlur(region, (0, 0), 1.0)[..., None]
    scene[:] = np.clip(alpha * image + (1 - alpha) * scene, 0, 255).astype(np.uint8)
    return FaceBox(x, y, width, portrait.face.height * scale)


def compose(photo: str, size: tuple[int, int], placed: list[tuple[Portrait, float, float, float]]) -> Scene:
    """A scene: photo `photo` at `size` with each (portrait, x, y, face width) pasted in turn."""
    scene = background(photo, size)
    boxes = tuple(paste(scene, portrait, x, y, width) for portrait, x, y, width in placed)
    return Scene(scene, boxes)


#: The README's group photo: (subject, drawn expression, x, y, face width) of four demo faces, with
#: the astronaut (who smiles) in the middle, on scikit-image's rocket photo at 960 x 540.
README_FACES: tuple[tuple[int, str, float, float, float], ...] = (
    (0, "happy", 40, 170, 150),
    (2, "surprise", 230, 120, 130),
    (-1, "happy", 400, 150, 150),
    (4, "anger", 590, 110, 120),
    (7, "sadness", 760, 170, 140),
)


def readme_group() -> Scene:
    """The group photo of the README's figure (subject -1 is the astronaut)."""
    placed = [
        (astronaut_portrait() if subject < 0 else demo_portrait(subject, expression), x, y, width)
        for subject, expression, x, y, width in README_FACES
    ]
    return compose("rocket", (960, 540), placed)


def random_scene(
    rng: np.random.Generator,
    portraits: list[Portrait],
    count: int,
    size: tuple[int, int] = (640, 480),
    widths: tuple[float, float] = (60.0, 160.0),
) -> Scene:
    """`count` portraits drawn from `portraits`, at random widths and places that do not overlap."""
    photo = SCENE_PHOTOS[int(rng.integers(len(SCENE_PHOTOS)))]
    placed: list[tuple[Portrait, float, float, float]] = []
    taken: list[FaceBox] = []
    for _ in range(count * 50):
        if len(placed) == count:
            break
        portrait = portraits[int(rng.integers(len(portraits)))]
        width = float(rng.uniform(*widths))
        height = width * portrait.face.height / portrait.face.width
        if width >= size[0] or height >= size[1]:
            continue
        x, y = float(rng.uniform(0, size[0] - width)), float(rng.uniform(0, size[1] - height))
        box = FaceBox(x, y, width, height)
        if all(apart(box, other) for other in taken):
            placed.append((portrait, x, y, width))
            taken.append(box)
    return compose(photo, size, placed)


def apart(a: FaceBox, b: FaceBox, gap: float = 8.0) -> bool:
    """Whether two boxes are `gap` pixels apart or more, side by side or one above the other."""
    return (
        a.x + a.width + gap <= b.x
        or b.x + b.width + gap <= a.x
        or a.y + a.height + gap <= b.y
        or b.y + b.height + gap <= a.y
    )


def matches(found: list[FaceBox], truth: tuple[FaceBox, ...] | list[FaceBox]) -> tuple[int, int]:
    """(true faces found, false detections): a detection finds a face when its centre lies in the face's
    box and its width is between 0.3 and 1.5 of the box's; each face and detection counts once."""
    used: set[int] = set()
    hits = 0
    for face in truth:
        for i, box in enumerate(found):
            cx, cy = box.x + box.width / 2, box.y + box.height / 2
            inside = face.x <= cx <= face.x + face.width and face.y <= cy <= face.y + face.height
            if i not in used and inside and 0.3 <= box.width / face.width <= 1.5:
                used.add(i)
                hits += 1
                break
    return hits, len(found) - len(used)
