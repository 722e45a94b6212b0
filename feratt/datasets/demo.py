"""The built-in demo set: procedurally drawn faces with known expression geometry and face region."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import cv2
import numpy as np

from feratt.datasets.align import to_uint8, warp_bilinear
from feratt.datasets.classes import SEVEN_CLASSES
from feratt.datasets.records import FaceEntry, FaceListing, ReaderOptions
from feratt.errors import FerattError

DEMO_SOURCE = "builtin:demo"
DEMO_SIZE = 160
#: Bumped whenever the drawing or the bank's path for demo faces changes their bytes: it names the
#: cached default bank, so that an older cache is not reused.
DEMO_REVISION = 2
#: The demo set has no contempt: canonical order minus contempt, as BU-3DFE and JAFFE.
DEMO_CLASSES: tuple[str, ...] = SEVEN_CLASSES

_SUPERSAMPLE = 2
_SHIFT = 4  # cv2 drawing keeps 4 fractional bits of each coordinate
_SKIN_TONES = np.array(
    [[255, 224, 196], [241, 194, 160], [224, 172, 129], [198, 134, 96], [161, 102, 70], [112, 72, 50]],
    dtype=np.float64,
)
_HAIR_COLOURS = np.array(
    [[30, 22, 18], [70, 45, 25], [120, 80, 40], [190, 150, 90], [150, 60, 30], [95, 40, 25]],
    dtype=np.float64,
)
_CLOTHES = np.array(
    [[170, 30, 40], [30, 60, 160], [30, 130, 60], [40, 140, 150], [120, 40, 140], [230, 230, 230]],
    dtype=np.float64,
)
_BACKDROPS = np.array(
    [[70, 110, 170], [60, 140, 110], [150, 150, 160], [120, 90, 150], [40, 60, 80], [180, 200, 215]],
    dtype=np.float64,
)


@dataclass(frozen=True)
class SubjectStyle:
    """What makes one synthetic subject look like itself: face shape, colours and feature placement."""

    face_half_width: float
    face_half_height: float
    jaw_taper: float
    skin: tuple[float, float, float]
    hair: tuple[float, float, float]
    hair_style: int
    hairline: float
    eye_spacing: float
    eye_height: float
    eye_size: float
    brow_gap: float
    brow_thickness: float
    nose_length: float
    mouth_width: float
    mouth_height: float
    iris: tuple[float, float, float]
    clothes: tuple[float, float, float]


@dataclass(frozen=True)
class Expression:
    """Expression geometry: mouth curve and opening, brow height and angle, eye opening."""

    mouth_curve: float = 0.0
    mouth_open: float = 0.0
    mouth_stretch: float = 1.0
    brow_raise: float = 0.0
    brow_inner_tilt: float = 0.0
    eye_open: float = 1.0
    upper_lip_raise: float = 0.0
    nose_wrinkle: float = 0.0
    teeth: float = 0.0


#: Prototype geometry of each class, following the action units that define the expressions.
EXPRESSION_PROTOTYPES: dict[str, Expression] = {
    "neutral": Expression(),
    "anger": Expression(
        mouth_curve=-0.25, mouth_stretch=0.85, brow_raise=-0.7, brow_inner_tilt=-1.0, eye_open=0.65
    ),
    "disgust": Expression(
        mouth_curve=-0.55,
        mouth_open=0.12,
        mouth_stretch=0.95,
        brow_raise=-0.45,
        brow_inner_tilt=-0.35,
        eye_open=0.55,
        upper_lip_raise=1.0,
        nose_wrinkle=1.0,
    ),
    "fear": Expression(
        mouth_curve=-0.25,
        mouth_open=0.45,
        mouth_stretch=1.25,
        brow_raise=0.75,
        brow_inner_tilt=0.8,
        eye_open=1.5,
    ),
    "happy": Expression(
        mouth_curve=1.0, mouth_open=0.35, mouth_stretch=1.25, brow_raise=0.1, eye_open=0.7, teeth=1.0
    ),
    "sadness": Expression(
        mouth_curve=-0.85, mouth_stretch=0.9, brow_raise=0.15, brow_inner_tilt=1.0, eye_open=0.7
    ),
    "surprise": Expression(mouth_open=1.0, mouth_stretch=0.65, brow_raise=1.0, eye_open=1.6),
}


def subject_style(seed: int, subject: int) -> SubjectStyle:
    """Sample the look of demo subject number `subject`."""
    rng = np.random.default_rng([seed, subject, 0x5EED])
    skin = _SKIN_TONES[rng.integers(len(_SKIN_TONES))] * rng.uniform(0.94, 1.04, 3)
    hair = _HAIR_COLOURS[rng.integers(len(_HAIR_COLOURS))] * rng.uniform(0.85, 1.15, 3)
    iris = np.array([[60, 40, 20], [40, 80, 130], [60, 110, 70], [90, 60, 30]])[rng.integers(4)]
    return SubjectStyle(
        face_half_width=rng.uniform(0.25, 0.30),
        face_half_height=rng.uniform(0.32, 0.37),
        jaw_taper=rng.uniform(0.1, 0.5),
        skin=tuple(np.clip(skin, 0, 255)),
        hair=tuple(np.clip(hair, 0, 255)),
        hair_style=int(rng.integers(4)),
        hairline=rng.uniform(0.5, 0.72),
        eye_spacing=rng.uniform(0.34, 0.42),
        eye_height=rng.uniform(-0.14, -0.04),
        eye_size=rng.uniform(0.13, 0.17),
        brow_gap=rng.uniform(0.13, 0.18),
        brow_thickness=rng.uniform(0.08, 0.11),
        nose_length=rng.uniform(0.22, 0.3),
        mouth_width=rng.uniform(0.36, 0.44),
        mouth_height=rng.uniform(0.5, 0.58),
        iris=tuple(float(v) for v in iris),
        clothes=tuple(float(v) for v in _CLOTHES[rng.integers(len(_CLOTHES))]),
    )


def sample_expression(class_name: str, rng: np.random.Generator) -> Expression:
    """Sample one expression of `class_name`: its prototype at a random intensity, plus jitter."""
    proto = EXPRESSION_PROTOTYPES[class_name]
    neutral = EXPRESSION_PROTOTYPES["neutral"]
    intensity = rng.uniform(0.75, 1.0) if class_name != "neutral" else 1.0
    values = {}
    for name, value in asdict(proto).items():
        base = getattr(neutral, name)
        values[name] = base + intensity * (value - base) + rng.normal(0.0, 0.05)
    values["eye_open"] = float(np.clip(values["eye_open"], 0.35, 1.9))
    values["mouth_open"] = float(max(values["mouth_open"], 0.0))
    values["teeth"] = float(np.clip(values["teeth"], 0.0, 1.0))
    return replace(neutral, **values)


def _ellipse(cx: float, cy: float, ax: float, ay: float, angle: float = 0.0, n: int = 72) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    x, y = ax * np.cos(t), ay * np.sin(t)
    c, s = np.cos(angle), np.sin(angle)
    return np.stack([cx + c * x - s * y, cy + s * x + c * y], axis=1)


def _bezier(p0: np.ndarray, p1: np.ndarray, p2: np.ndarray, n: int = 24) -> np.ndarray:
    t = np.linspace(0, 1, n)[:, None]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2


class _Canvas:
    """A supersampled drawing surface in face units: x, y in [-1, 1] across the face box."""

    def __init__(self, size: int, centre: tuple[float, float], unit: float) -> None:
        self.size = size
        self.rgb = np.zeros((size, size, 3), np.uint8)
        self.cover = np.zeros((size, size), np.uint8)
        self.head = np.zeros((size, size), np.uint8)
        self.centre = np.asarray(centre)
        self.unit = unit

    def px(self, points: np.ndarray) -> np.ndarray:
        pixels = self.centre + np.asarray(points, np.float64) * self.unit
        return np.round(pixels * (1 << _SHIFT)).astype(np.int32).reshape(-1, 1, 2)

    def fill(self, points: np.ndarray, colour, *, head: int | None = None, cover: bool = True) -> None:
        poly = [self.px(points)]
        cv2.fillPoly(self.rgb, poly, tuple(float(c) for c in colour), cv2.LINE_AA, _SHIFT)
        if cover:
            cv2.fillPoly(self.cover, poly, 255, cv2.LINE_8, _SHIFT)
        if head is not None:
            cv2.fillPoly(self.head, poly, head, cv2.LINE_8, _SHIFT)

    def fill_region(self, region: np.ndarray, colour, *, head: int | None = None) -> None:
        self.rgb[region] = np.asarray(colour, np.float64).round().astype(np.uint8)
        self.cover[region] = 255
        if head is not None:
            self.head[region] = head

    def region(self, points: np.ndarray) -> np.ndarray:
        mask = np.zeros((self.size, self.size), np.uint8)
        cv2.fillPoly(mask, [self.px(points)], 1, cv2.LINE_8, _SHIFT)
        return mask.astype(bool)

    def line(self, points: np.ndarray, colour, thickness: float) -> None:
        width = max(1, round(thickness * self.unit))
        cv2.polylines(
            self.rgb, [self.px(points)], False, tuple(float(c) for c in colour), width, cv2.LINE_AA, _SHIFT
        )


def _face_outline(style: SubjectStyle) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, 120, endpoint=False)
    x, y = np.cos(t), np.sin(t)
    lower = np.clip(y, 0, None)
    return np.stack([x * (1 - style.jaw_taper * lower**2), y], axis=1)


def _hair_cap(aspect: float) -> np.ndarray:
    return _ellipse(0, -0.15 * aspect, 1.12, 0.98 * aspect)


def _draw_hair_back(canvas: _Canvas, style: SubjectStyle, aspect: float) -> None:
    if style.hair_style == 3:  # long hair falls behind the face to the shoulders
        canvas.fill(_ellipse(0, 0.0, 1.16, 1.0 * aspect), style.hair, head=255)
    else:
        canvas.fill(_hair_cap(aspect), style.hair, head=255)


def _hair_front(style: SubjectStyle) -> np.ndarray:
    """Polygon of the hair that covers the top of the face, above a style-dependent hairline."""
    xs = np.linspace(-1.25, 1.25, 41)
    line = -style.hairline + 0.18 * xs**2
    if style.hair_style == 1:  # fringe with a wavy edge
        line = line + 0.18 + 0.04 * np.sin(xs * 9)
    elif style.hair_style == 2:  # side parting
        line = line + 0.1 * np.tanh(3 * xs)
    top = np.stack([xs[::-1], np.full_like(xs, -1.35)], axis=1)
    return np.concatenate([np.stack([xs, line], axis=1), top])


def _draw_brows(canvas: _Canvas, style: SubjectStyle, expr: Expression, eye_y: float) -> None:
    colour = np.asarray(style.hair) * 0.6
    half = 0.17
    for side in (-1, 1):
        cx = side * style.eye_spacing
        base_y = eye_y - style.eye_size * 0.6 - style.brow_gap - 0.22 * expr.brow_raise
        inner_y = base_y - 0.24 * expr.brow_inner_tilt
        outer_y = base_y + 0.08 * expr.brow_inner_tilt
        inner = np.array([cx - side * half, inner_y])
        outer = np.array([cx + side * half, outer_y])
        peak = np.array([cx + side * 0.02, (inner_y + outer_y) / 2 - 0.05 - 0.04 * max(expr.brow_raise, 0)])
        canvas.line(_bezier(inner, peak, outer), colour, style.brow_thickness)


def _draw_eyes(canvas: _Canvas, style: SubjectStyle, expr: Expression, eye_y: float) -> None:
    skin = np.asarray(style.skin)
    for side in (-1, 1):
        cx = side * style.eye_spacing
        ax = style.eye_size
        ay = style.eye_size * 0.55 * expr.eye_open
        canvas.fill(_ellipse(cx, eye_y, ax * 1.15, ay * 1.35 + 0.02), skin * 0.8)  # socket shadow
        sclera = _ellipse(cx, eye_y, ax, ay)
        canvas.fill(sclera, (245, 245, 240))
        # A centred circle no wider than either semi-axis stays inside the eye opening.
        iris_r = min(ax * 0.5, ay * 0.95)
        canvas.fill(_ellipse(cx, eye_y, iris_r, iris_r), style.iris)
        canvas.fill(_ellipse(cx, eye_y, iris_r * 0.5, iris_r * 0.5), (15, 15, 15))
        canvas.line(sclera[36:], (25, 20, 20), 0.025)


def _draw_nose(canvas: _Canvas, style: SubjectStyle, expr: Expression, eye_y: float) -> None:
    skin = np.asarray(style.skin)
    tip_y = eye_y + style.nose_length
    canvas.line(np.array([[0.05, eye_y + 0.05], [0.09, tip_y - 0.02]]), skin * 0.78, 0.025)
    canvas.fill(_ellipse(0, tip_y, 0.13, 0.06), skin * 0.88)
    for side in (-1, 1):
        canvas.fill(_ellipse(side * 0.06, tip_y + 0.03, 0.035, 0.02), skin * 0.45)
    if expr.nose_wrinkle > 0.3:
        for k in range(3):
            y = eye_y + 0.02 + 0.03 * k
            canvas.line(np.array([[-0.06, y], [0.06, y]]), skin * 0.7, 0.012 * expr.nose_wrinkle)


def _draw_mouth(canvas: _Canvas, style: SubjectStyle, expr: Expression) -> None:
    lip = np.asarray(style.skin) * np.array([0.85, 0.55, 0.55])
    half = style.mouth_width * expr.mouth_stretch
    y = style.mouth_height
    corner_lift = 0.3 * expr.mouth_curve
    left = np.array([-half, y - corner_lift])
    right = np.array([half, y - corner_lift])
    raise_ = 0.06 * expr.upper_lip_raise
    upper_mid = np.array([0.05 * expr.upper_lip_raise, y - raise_ - 0.02 + 0.16 * expr.mouth_curve])
    opening = 0.5 * expr.mouth_open
    lower_mid = np.array([0, y + opening + 0.02 + 0.2 * expr.mouth_curve])
    upper = _bezier(left, upper_mid, right)
    lower = _bezier(right, lower_mid, left)
    upper_lip_top = _bezier(left, upper_mid - np.array([0, 0.1]), right)
    lower_lip_bottom = _bezier(right, lower_mid + np.array([0, 0.11]), left)
    canvas.fill(np.concatenate([upper_lip_top, lower_lip_bottom]), lip)
    if opening > 0.03:
        canvas.fill(np.concatenate([upper, lower]), (45, 15, 20))
        if expr.teeth > 0.3:
            teeth_bottom = _bezier(right, upper_mid + np.array([0, opening * 0.55]), left)
            canvas.fill(np.concatenate([upper, teeth_bottom]), (235, 232, 220))
    else:
        canvas.line(_bezier(left, (upper_mid + lower_mid) / 2, right), lip * 0.4, 0.08)


@dataclass(frozen=True)
class DrawnFace:
    """A drawn demo face and its true regions, for benchmarks and tests of the masks computed from it."""

    image: np.ndarray  # RGB uint8
    head: np.ndarray  # bool: face, ears and hair
    face: np.ndarray  # bool: the face alone, jaw to hairline, less the hair in front of it


def draw_face(
    style: SubjectStyle,
    expr: Expression,
    rng: np.random.Generator,
    size: int = DEMO_SIZE,
) -> DrawnFace:
    """Draw one face, with its true head and face regions."""
    big = size * _SUPERSAMPLE
    unit = style.face_half_width * big
    centre = (big / 2, big * 0.5 + rng.normal(0, 0.01) * big)
    canvas = _Canvas(big, centre, unit)
    skin = np.asarray(style.skin)
    aspect = style.face_half_height / style.face_half_width
    outline = _face_outline(style) * [1, aspect]

    _draw_hair_back(canvas, style, aspect)
    clothes = np.asarray(style.clothes)
    canvas.fill(
        np.array([[-0.42, 0.6 * aspect], [0.42, 0.6 * aspect], [0.46, 2.5], [-0.46, 2.5]]),
        skin * 0.62,
        head=0,
    )  # neck, in shadow under the jaw
    canvas.fill(_ellipse(0, 2.3, 1.9, 0.85), clothes, head=0)  # shoulders
    canvas.fill(
        np.array([[-0.5, 0.8 * aspect], [0.5, 0.8 * aspect], [0.6, 2.0], [-0.6, 2.0]]), clothes, head=0
    )  # a high collar
    for side in (-1, 1):
        canvas.fill(_ellipse(side * 0.97, 0.0, 0.13, 0.22), skin * 0.9, head=255)
    canvas.fill(outline, skin, head=255)
    # Soft shading towards the face's edge makes it read as a rounded surface.
    shade = np.zeros((big, big), np.float32)
    cv2.fillPoly(shade, [canvas.px(outline * 0.8)], 1.0, cv2.LINE_AA, _SHIFT)
    shade = cv2.GaussianBlur(shade, (0, 0), unit * 0.25)
    inside = canvas.region(outline)
    canvas.rgb[inside] = np.clip(canvas.rgb[inside] * (0.86 + 0.14 * shade[inside, None]), 0, 255)

    eye_y = style.eye_height * aspect
    _draw_brows(canvas, style, expr, eye_y)
    _draw_eyes(canvas, style, expr, eye_y)
    _draw_nose(canvas, style, expr, eye_y)
    _draw_mouth(canvas, style, expr)
    hair = canvas.region(_hair_front(style) * [1, aspect]) & canvas.region(_hair_cap(aspect))
    canvas.fill_region(hair, style.hair, head=255)
    face = inside & ~hair
    if style.hair_style == 3:
        for side in (-1, 1):  # locks falling in front of the ears
            lock = np.array([[side * 0.88, -0.5], [side * 1.15, -0.5], [side * 1.1, 0.6], [side * 0.95, 0.6]])
            face &= ~canvas.region(lock * [1, aspect])
            canvas.fill(lock * [1, aspect], style.hair, head=255)

    angle = rng.uniform(-8, 8)
    scale = rng.uniform(0.95, 1.05)
    shift = rng.uniform(-0.03, 0.03, 2) * big
    pose = cv2.getRotationMatrix2D((big / 2, big / 2), angle, scale)
    pose[:, 2] += shift
    # Each layer is warped on its own: the face layer leaves the others' bytes as they were without it.
    layers = np.dstack([canvas.rgb, canvas.cover, canvas.head, face.astype(np.uint8) * 255])
    posed = to_uint8(warp_bilinear(layers, pose, big))
    rgb, cover = posed[..., :3], posed[..., 3]
    head, face_layer = np.ascontiguousarray(posed[..., 4]), np.ascontiguousarray(posed[..., 5])

    backdrop = _BACKDROPS[rng.integers(len(_BACKDROPS))] * rng.uniform(0.85, 1.15, 3)
    ramp = np.linspace(-1, 1, big, dtype=np.float32)
    tilt = rng.uniform(-25, 25, 2)
    background = backdrop + (ramp[:, None, None] * tilt[0] + ramp[None, :, None] * tilt[1])
    alpha = cover[..., None].astype(np.float32) / 255.0
    composite = alpha * rgb + (1 - alpha) * background
    light = 1 + rng.uniform(-0.12, 0.12) * ramp[None, :, None]
    composite = np.clip(composite * light * rng.uniform(0.85, 1.1), 0, 255).astype(np.float32)

    image = cv2.resize(composite, (size, size), interpolation=cv2.INTER_AREA)
    image = image + rng.normal(0, 2.0, image.shape)
    head_region, face_region = (
        cv2.resize(layer, (size, size), interpolation=cv2.INTER_AREA) >= 128 for layer in (head, face_layer)
    )
    return DrawnFace(np.clip(np.rint(image), 0, 255).astype(np.uint8), head_region, face_region)


def demo_source(subject: int, class_name: str, variant: int) -> str:
    """The source string that names one demo face."""
    return f"{DEMO_SOURCE}/D{subject + 1:02d}/{class_name}/{variant}"


def parse_demo_source(source: str) -> tuple[int, str, int]:
    """Split a demo source string into (subject index, class name, variant)."""
    subject, class_name, variant = source[len(DEMO_SOURCE) + 1 :].split("/")
    return int(subject[1:]) - 1, class_name, int(variant)


def draw_demo_face(source: str, seed: int, size: int = DEMO_SIZE) -> DrawnFace:
    """Draw the demo face that `source` names, with its true head and face regions."""
    subject, class_name, variant = parse_demo_source(source)
    rng = np.random.default_rng([seed, subject, DEMO_CLASSES.index(class_name), variant])
    expr = sample_expression(class_name, rng)
    return draw_face(subject_style(seed, subject), expr, rng, size)


def render_demo_face(source: str, seed: int, size: int = DEMO_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Draw the demo face that `source` names; return the image and its true head region."""
    drawn = draw_demo_face(source, seed, size)
    return drawn.image, drawn.head


def list_demo(options: ReaderOptions) -> FaceListing:
    """List the demo set: every subject shows every class `demo_per_class` times."""
    if options.demo_subjects < 1:
        raise FerattError("the demo set needs at least one subject", field="demo_subjects")
    if options.demo_per_class < 1:
        raise FerattError("the demo set needs at least one face per class", field="demo_per_class")
    entries = [
        FaceEntry(
            source=demo_source(subject, name, variant),
            label=label,
            subject=f"D{subject + 1:02d}",
            relpath=f"D{subject + 1:02d}/{name}/{variant}",
        )
        for subject in range(options.demo_subjects)
        for label, name in enumerate(DEMO_CLASSES)
        for variant in range(options.demo_per_class)
    ]
    protocol = {
        "protocol": "demo-7",
        "subjects": options.demo_subjects,
        "per_class": options.demo_per_class,
        "seed": options.seed,
    }
    return FaceListing("demo", DEMO_SOURCE, DEMO_CLASSES, entries, protocol=protocol)
