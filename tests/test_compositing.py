"""The renderer: geometry, Lab luminance matching, alpha matte, compositing, colour augmentation, params."""

import json
import math
from dataclasses import replace

import cv2
import numpy as np
import pytest
from skimage import color, data

from feratt.codec import decode, encode
from feratt.config.rendering import PRESETS, ColourConfig, GeometryConfig, RenderConfig
from feratt.errors import FerattError
from feratt.renderer import functional as F
from feratt.renderer.params import (
    PARAM_FIELDS,
    ColourParams,
    GeometryParams,
    SampleParams,
    params_to_vector,
    vector_to_params,
)
from feratt.renderer.sample import (
    apply_colour,
    frame_face,
    render_sample,
    sample_colour,
    sample_geometry,
    sample_params,
)

SIZE = 128
NO_COLOUR = RenderConfig(colour=ColourConfig.off())


@pytest.fixture(scope="module")
def face_and_mask() -> tuple[np.ndarray, np.ndarray]:
    """A 160x160 crop of the astronaut's face with an elliptic mask over it."""
    face = np.ascontiguousarray(data.astronaut()[40:200, 144:304])
    mask = np.zeros((160, 160), np.uint8)
    cv2.ellipse(mask, (80, 82), (46, 60), 0, 0, 360, 255, -1)
    return face, mask


def _background(image: np.ndarray) -> np.ndarray:
    side = min(image.shape[:2])
    return cv2.resize(image[:side, :side], (SIZE, SIZE), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def coffee() -> np.ndarray:
    return _background(data.coffee())


@pytest.fixture(scope="module")
def chelsea() -> np.ndarray:
    return _background(data.chelsea())


def _mean_l(image: np.ndarray, mask: np.ndarray) -> float:
    return float(color.rgb2lab(image)[..., 0][mask > 0].mean())


GEOMETRY = GeometryParams(
    scale=1.1, flip=True, angle=12.0, tx=0.05, ty=-0.03, corners=(0.02, -0.01, 0.0, 0.03, -0.02, 0.0)
)


# ---------------------------------------------------------------------------------------------- config


def test_config_defaults_and_presets():
    config = RenderConfig()
    assert config.size == 128 and config.feather == 3.0 and config.luminance and not config.grey
    assert config.geometry == GeometryConfig(scale=0.2, flip_p=0.5, rotation=30.0, translation=0.2, warp=0.1)
    assert config.colour.brightness == (0.75, 1.25) and config.colour.noise_sigma == (2.0, 10.0)
    assert PRESETS["train"] == config
    assert (PRESETS["eval"].geometry.rotation, PRESETS["eval"].geometry.translation) == (45.0, 0.3)
    assert PRESETS["eval"].geometry.warp == 0.2


def test_config_round_trips_through_json():
    config = RenderConfig(
        size=96, geometry=GeometryConfig(perspective=0.05), feather=0.0, grey=True, fit_mask=0.1
    )
    as_json = json.loads(json.dumps(encode(config)))
    assert as_json == encode(config)
    assert decode(RenderConfig, as_json, "render.json") == config
    assert decode(RenderConfig, {"colour": {"noise_p": 0}}, "render.json").colour.noise_p == 0.0
    # A Python caller may hand the nested settings over as mappings.
    assert RenderConfig(geometry={"rotation": 10}, colour={"gamma": (0.5, 1.0)}) == RenderConfig(
        geometry=GeometryConfig(rotation=10.0), colour=ColourConfig(gamma=(0.5, 1.0))
    )
    with pytest.raises(FerattError, match=r"^GeometryConfig has no setting rotatoin$"):
        RenderConfig(geometry={"rotatoin": 10})


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"feather": -1}, "RenderConfig: feather must be >= 0, not -1.0"),
        (
            {"luminance_ratio": [1.5, 0.5]},
            "RenderConfig.luminance_ratio must be a finite (low, high) with low",
        ),
        ({"geometry": {"flip_p": 2}}, "GeometryConfig: flip_p must be a probability, not 2.0"),
        ({"colour": {"gamma": [0, 1]}}, "ColourConfig: gamma must be > 0"),
        ({"colour": {"blur_p": -0.1}}, "ColourConfig: blur_p must be a probability, not -0.1"),
        ({"size": 0}, "RenderConfig: size must be a whole number from 1 to 1024, not 0"),
        ({"fit_mask": -0.1}, "RenderConfig: fit_mask must be >= 0, not -0.1"),
        ({"unknown": 1}, "the document has unknown field(s) unknown"),
        ({"size": 1.5}, "size must be a whole number"),
        ({"colour": {"gamma": [1]}}, "colour.gamma must hold 2 values, not 1"),
    ],
)
def test_config_rejects_bad_values(bad, message):
    with pytest.raises(FerattError) as caught:
        decode(RenderConfig, bad, "render.json")
    assert str(caught.value).startswith("render.json: ") and message in str(caught.value)


# ------------------------------------------------------------------------------------------------- params


def test_params_vector_round_trip_with_none_as_nan():
    params = sample_params(RenderConfig(geometry=GeometryConfig(perspective=0.1)), np.random.default_rng(3))
    vector = params_to_vector(params)
    assert vector.dtype == np.float32 and vector.shape == (len(PARAM_FIELDS),)
    assert vector_to_params(vector) == params
    off = SampleParams(GEOMETRY, ColourParams(gamma=1.1, noise_seed=7))
    vector = params_to_vector(off)
    fields = dict(zip(PARAM_FIELDS, vector, strict=True))
    assert (
        math.isnan(fields["brightness"])
        and math.isnan(fields["corner_6"])
        and fields["gamma"] == np.float32(1.1)
    )
    assert fields["flip"] == 1 and fields["perspective"] == 0 and fields["noise_seed"] == 7
    assert decode(SampleParams, json.loads(json.dumps(encode(off))), "params") == off


def test_sampled_geometry_stays_in_its_ranges():
    config = GeometryConfig()
    draws = [sample_geometry(config, np.random.default_rng(seed)) for seed in range(300)]
    assert all(
        0.8 <= g.scale <= 1.2 and abs(g.angle) <= 30 and abs(g.tx) <= 0.2 and abs(g.ty) <= 0.2 for g in draws
    )
    assert all(len(g.corners) == 6 and max(map(abs, g.corners)) <= 0.1 and not g.perspective for g in draws)
    assert 0.35 < np.mean([g.flip for g in draws]) < 0.65
    zero = GeometryConfig(scale=0, flip_p=0, rotation=0, translation=0, warp=0)
    assert sample_geometry(zero, np.random.default_rng(0)) == GeometryParams()


@pytest.mark.parametrize("name", ["brightness", "contrast", "gamma", "blur", "noise"])
def test_augmentation_with_probability_zero_is_skipped(name, chelsea):
    field = {"blur": "blur_sigma", "noise": "noise_sigma"}.get(name, name)
    off = replace(ColourConfig(), **{f"{name}_p": 0.0})
    on = replace(ColourConfig.off(), **{f"{name}_p": 1.0})
    for seed in range(20):
        assert getattr(sample_colour(off, np.random.default_rng(seed)), field) is None
        value = getattr(sample_colour(on, np.random.default_rng(seed)), field)
        low, high = getattr(on, field)
        assert low <= value <= high
    params = sample_colour(ColourConfig.off(), np.random.default_rng(0))
    assert params == ColourParams(noise_seed=params.noise_seed)
    assert np.array_equal(apply_colour(chelsea, params), chelsea)


# --------------------------------------------------------------------------------------------- geometry


def test_identity_geometry_is_just_the_resize(face_and_mask):
    face, mask = face_and_mask
    k = SIZE / 160
    resize = np.array([[k, 0, 0.5 * k - 0.5], [0, k, 0.5 * k - 0.5], [0, 0, 1]])
    matrix = F.geometry_matrix(GeometryParams(), 160, SIZE)
    np.testing.assert_allclose(matrix, resize, atol=1e-12)
    warped, _ = F.warp_face(face, mask, matrix, SIZE)
    expected = cv2.resize(face, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
    assert np.abs(warped.astype(int) - expected).max() <= 1
    same, same_mask = F.warp_face(face, mask, F.geometry_matrix(GeometryParams(), 160, 160), 160)
    assert np.array_equal(same, face) and np.array_equal(same_mask, mask)


def test_mask_square_pads_the_bounding_box():
    mask = np.zeros((100, 100), np.uint8)
    mask[20:40, 50:60] = 255  # 10 wide, 20 tall
    assert F.mask_square(mask, 0.0) == (45.0, 20.0, 20.0)
    assert F.mask_square(mask, 0.5) == (35.0, 10.0, 40.0)
    assert F.mask_square(np.zeros((30, 30), np.uint8), 0.2) == (-6.0, -6.0, 42.0)


def test_fit_mask_frames_the_face_by_its_mask():
    rng = np.random.default_rng(5)
    face = rng.integers(0, 256, (100, 100, 3), dtype=np.uint8)
    mask = np.zeros((100, 100), np.uint8)
    mask[20:40, 50:70] = 255
    background = np.full((40, 40, 3), 7, np.uint8)
    config = RenderConfig(size=40, colour=ColourConfig.off(), luminance=False, feather=0.0, fit_mask=0.0)
    sample = render_sample(face, mask, background, SampleParams(GeometryParams(), ColourParams()), config)
    # The 20x20 box fills the 40x40 frame: a resize by 2 of exactly those pixels.
    assert (sample.mask == 255).all()
    expected = cv2.resize(face[20:40, 50:70], (40, 40), interpolation=cv2.INTER_LINEAR)
    assert np.abs(sample.image[1:-1, 1:-1].astype(int) - expected[1:-1, 1:-1]).max() <= 1
    corners = sample.matrix @ np.array([[49.5, 19.5, 1.0], [69.5, 39.5, 1.0]]).T
    np.testing.assert_allclose(corners[:2].T, [[-0.5, -0.5], [39.5, 39.5]], atol=1e-12)
    # A margin of 0.5 leaves the box in the middle half, background around it.
    padded = render_sample(face, mask, background, sample.params, replace(config, fit_mask=0.5))
    assert (padded.mask[10:30, 10:30] == 255).all() and not padded.mask[:10].any()
    assert (padded.image[:10] == 7).all()


def test_frame_face_gives_the_unrendered_face_framed_like_the_render(face_and_mask):
    face, mask = face_and_mask
    image, framed_mask = frame_face(face, mask, RenderConfig(size=160))
    assert np.array_equal(image, face) and np.array_equal(framed_mask, mask)
    config = RenderConfig(size=64, fit_mask=0.0, grey=True)
    image, framed_mask = frame_face(face, mask, config)
    # The mask's 93x121 box, squared to 121, fills the frame: its top and bottom rows touch the edges.
    assert framed_mask[0].any() and framed_mask[-1].any() and not framed_mask[:, :3].any()
    assert (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all()
    rendered = render_sample(face, mask, np.zeros((64, 64, 3), np.uint8), SampleParams(), config)
    assert np.array_equal(rendered.mask, framed_mask)


def test_geometry_matrix_composes_in_the_documented_order():
    """Resize, scale, flip, rotation, translation, warp: rebuilt from OpenCV's own matrices."""
    k, c, n = SIZE / 160, (SIZE - 1) / 2, SIZE

    def shift(tx: float, ty: float) -> np.ndarray:
        return np.array([[1, 0, tx], [0, 1, ty], [0, 0, 1.0]])

    def about_centre(m: np.ndarray) -> np.ndarray:
        return shift(c, c) @ m @ shift(-c, -c)

    for seed in range(20):
        g = sample_geometry(GeometryConfig(), np.random.default_rng(seed))
        resize = np.array([[k, 0, 0.5 * k - 0.5], [0, k, 0.5 * k - 0.5], [0, 0, 1]])
        scale = about_centre(np.diag([g.scale, g.scale, 1]))
        flip = about_centre(np.diag([-1.0 if g.flip else 1.0, 1, 1]))
        rotation = np.vstack([cv2.getRotationMatrix2D((c, c), g.angle, 1.0), [0, 0, 1]])
        corners = np.float32([[0, 0], [0, n], [n, 0]])
        moved = corners + np.float32(g.corners).reshape(3, 2) * n
        warp = np.vstack([cv2.getAffineTransform(corners, moved), [0, 0, 1]])
        expected = warp @ shift(g.tx * n, g.ty * n) @ rotation @ flip @ scale @ resize
        np.testing.assert_allclose(F.geometry_matrix(g, 160, SIZE), expected, atol=1e-4)


def _marked(size: int, x: int, y: int) -> tuple[np.ndarray, np.ndarray]:
    face = np.full((size, size, 3), 40, np.uint8)
    face[y, x] = (250, 10, 130)
    mask = np.zeros((size, size), np.uint8)
    mask[y, x] = 255
    return face, mask


def test_translation_moves_image_and_mask_together():
    face, mask = _marked(SIZE, 50, 70)
    params = GeometryParams(tx=10 / SIZE, ty=-5 / SIZE)
    matrix = F.geometry_matrix(params, SIZE, SIZE)
    np.testing.assert_allclose(matrix @ [50, 70, 1], [60, 65, 1])
    warped, warped_mask = F.warp_face(face, mask, matrix, SIZE)
    assert tuple(warped[65, 60]) == (250, 10, 130)
    assert np.argwhere(warped_mask == 255).tolist() == [[65, 60]]
    assert np.array_equal(warped[65 - 5 : 65 + 5, 55:65].reshape(-1, 3).max(0), [250, 40, 130])
    # The strips uncovered on the left (10 px) and at the bottom (5 px) are the zero border.
    assert not warped[:, :10].any() and not warped[-5:].any() and warped[:-5, 10:].all()


def test_flip_and_rotation_move_a_marked_pixel_where_the_matrix_says():
    face, mask = _marked(SIZE, 30, 40)
    flipped, flipped_mask = F.warp_face(
        face, mask, F.geometry_matrix(GeometryParams(flip=True), SIZE, SIZE), SIZE
    )
    assert tuple(flipped[40, SIZE - 1 - 30]) == (250, 10, 130) and flipped_mask[40, SIZE - 1 - 30] == 255
    quarter = F.geometry_matrix(GeometryParams(angle=90.0), SIZE, SIZE)
    x, y, _ = np.rint(quarter @ [30, 40, 1]).astype(int)
    # Counter-clockwise as displayed: the top-left quadrant goes to the bottom-left.
    assert x < SIZE / 2 < y
    turned, turned_mask = F.warp_face(face, mask, quarter, SIZE)
    assert tuple(turned[y, x]) == (250, 10, 130) and np.argwhere(turned_mask).tolist() == [[y, x]]


def test_perspective_maps_mask_with_the_face(face_and_mask):
    face, mask = face_and_mask
    config = GeometryConfig(perspective=0.08)
    params = sample_geometry(config, np.random.default_rng(5))
    assert params.perspective and len(params.corners) == 8
    matrix = F.geometry_matrix(params, 160, SIZE)
    assert not np.allclose(matrix[2, :2], 0, atol=1e-9)
    warped, warped_mask = F.warp_face(face, mask, matrix, SIZE)
    assert np.array_equal(warped, cv2.warpPerspective(face, matrix, (SIZE, SIZE), flags=cv2.INTER_LINEAR))
    assert np.array_equal(
        warped_mask, cv2.warpPerspective(mask, matrix, (SIZE, SIZE), flags=cv2.INTER_NEAREST)
    )
    x, y = np.rint(cv2.perspectiveTransform(np.array([[[80.0, 82.0]]]), matrix)[0, 0]).astype(int)
    assert warped_mask[y, x] == 255


# -------------------------------------------------------------------------------------------------- Lab


def test_lab_agrees_with_skimage():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    lab = F.rgb_to_lab(image)
    assert lab.dtype == np.float32
    reference = color.rgb2lab(image)
    assert np.abs(lab[..., 0] - reference[..., 0]).max() < 1.0
    assert np.abs(lab[..., 1:] - reference[..., 1:]).max() < 2.0
    assert np.abs(F.lab_to_rgb(lab).astype(int) - image).max() <= 1


def test_luminance_match_moves_face_lightness_to_the_background(face_and_mask, coffee, chelsea):
    face, mask = (cv2.resize(a, (SIZE, SIZE), interpolation=cv2.INTER_NEAREST) for a in face_and_mask)
    for background in (coffee, chelsea):
        target = _mean_l(background, mask)
        matched, w = F.luminance_match(face, background, mask, (0.5, 1.5), (0.0, 100.0))
        assert 0.5 < w < 1.5
        assert abs(_mean_l(matched, mask) - target) < 1.0 < abs(_mean_l(face, mask) - target)
        assert np.array_equal(matched[mask == 0], face[mask == 0])
    # Against itself the gain is 1 and only the Lab round trip's rounding remains.
    same, w = F.luminance_match(face, face, mask, (0.5, 1.5), (0.0, 100.0))
    assert w == pytest.approx(1.0, abs=1e-6) and np.abs(same.astype(int) - face).max() <= 1


def test_luminance_match_clips_the_gain_and_the_lightness(face_and_mask):
    face, mask = (cv2.resize(a, (SIZE, SIZE), interpolation=cv2.INTER_NEAREST) for a in face_and_mask)
    black, white = np.full_like(face, 3), np.full_like(face, 252)
    darker, w = F.luminance_match(face, black, mask, (0.5, 1.5), (10.0, 90.0))
    assert w == 0.5
    assert _mean_l(darker, mask) == pytest.approx(0.5 * _mean_l(face, mask), abs=2.0)
    dull = np.full_like(face, 60)
    brighter, w = F.luminance_match(dull, white, mask, (0.5, 1.5), (10.0, 90.0))
    assert w == 1.5
    assert _mean_l(brighter, mask) == pytest.approx(1.5 * _mean_l(dull, mask), abs=0.5)
    # The lightness clip: the gain would take L to ~127 (white) and ~0.4 (black); it stops at 90 and 10.
    for background, face_value, bound in ((white, 220, 90.0), (black, 2, 10.0)):
        flat = np.full_like(face, face_value)
        out, _ = F.luminance_match(flat, background, mask, (0.01, 100.0), (10.0, 90.0))
        assert _mean_l(out, mask) == pytest.approx(bound, abs=0.5)


def test_luminance_match_with_empty_mask_is_a_no_op(face_and_mask, coffee):
    face = cv2.resize(face_and_mask[0], (SIZE, SIZE))
    out, w = F.luminance_match(face, coffee, np.zeros((SIZE, SIZE), np.uint8), (0.5, 1.5), (10.0, 90.0))
    assert math.isnan(w) and np.array_equal(out, face)


# ------------------------------------------------------------------------------------------- alpha, composite


def test_alpha_hard_and_feathered():
    mask = np.zeros((64, 64), np.uint8)
    cv2.circle(mask, (32, 32), 20, 255, -1)
    hard = F.alpha_from_mask(mask, 0.0)
    assert hard.dtype == np.float32 and set(np.unique(hard)) == {0.0, 1.0}
    assert np.array_equal(hard > 0, mask > 0)
    soft = F.alpha_from_mask(mask, 3.0)
    inside = cv2.distanceTransform(mask, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    outside = cv2.distanceTransform(255 - mask, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    assert (soft[inside > 3.5] == 1).all() and (soft[outside > 3.5] == 0).all()
    edge = (inside == 1) | (outside == 1)
    assert ((soft[edge] > 0.1) & (soft[edge] < 0.9)).all()
    assert soft[mask > 0].min() > 0.25 and soft[mask == 0].max() < 0.75
    # Symmetric about the boundary: the soft matte covers the same area as the hard one.
    assert soft.sum() == pytest.approx(hard.sum(), rel=0.01)
    assert (F.alpha_from_mask(np.full((8, 8), 255, np.uint8), 3.0) == 1).all()
    assert not F.alpha_from_mask(np.zeros((8, 8), np.uint8), 3.0).any()


def test_composite_blends_and_rounds(chelsea, coffee):
    alpha = np.zeros((SIZE, SIZE), np.float32)
    alpha[:, 40:80] = 1
    alpha[:, 80:100] = 0.5
    out = F.composite(chelsea, coffee, alpha)
    assert np.array_equal(out[:, :40], coffee[:, :40]) and np.array_equal(out[:, 100:], coffee[:, 100:])
    assert np.array_equal(out[:, 40:80], chelsea[:, 40:80])
    half = (chelsea[:, 80:100].astype(float) + coffee[:, 80:100]) / 2
    assert np.abs(out[:, 80:100] - half).max() <= 0.5 + 1e-9


# --------------------------------------------------------------------------------------------------- colour


def test_colour_ops_identity_and_effect(chelsea):
    rng = np.random.default_rng(1)
    assert np.array_equal(F.adjust_brightness(chelsea, 1.0), chelsea)
    assert np.array_equal(F.adjust_contrast(chelsea, 1.0), chelsea)
    assert np.array_equal(F.adjust_gamma(chelsea, 1.0), chelsea)
    assert np.array_equal(F.gaussian_blur(chelsea, 0.0), chelsea)
    assert np.array_equal(F.add_gaussian_noise(chelsea, 0.0, rng), chelsea)
    assert F.adjust_brightness(chelsea, 1.2).mean() > chelsea.mean() * 1.15
    assert F.adjust_gamma(chelsea, 0.8).mean() > chelsea.mean() > F.adjust_gamma(chelsea, 1.25).mean()
    grey = np.full((16, 16, 3), 100, np.uint8)
    assert np.array_equal(F.adjust_contrast(grey, 1.25), grey)
    assert F.adjust_contrast(chelsea, 1.25).std() > chelsea.std() * 1.2
    assert F.gaussian_blur(chelsea, 1.5).astype(float).var() < chelsea.astype(float).var()
    flat = np.full((128, 128, 3), 128, np.uint8)
    noisy = F.add_gaussian_noise(flat, 6.0, 42)
    assert np.array_equal(noisy, F.add_gaussian_noise(flat, 6.0, np.random.default_rng(42)))
    assert noisy.astype(float).std() == pytest.approx(6.0, rel=0.05) and abs(noisy.mean() - 128) < 0.2
    g = F.to_grey3(chelsea)
    assert np.array_equal(g[..., 0], g[..., 1]) and np.array_equal(g[..., 1], g[..., 2])


# --------------------------------------------------------------------------------------------- render_sample


def _inside_outside(sample_mask: np.ndarray, margin: float) -> tuple[np.ndarray, np.ndarray]:
    inside = cv2.distanceTransform(sample_mask, cv2.DIST_L2, cv2.DIST_MASK_PRECISE) > margin
    outside = cv2.distanceTransform(255 - sample_mask, cv2.DIST_L2, cv2.DIST_MASK_PRECISE) > margin
    return inside, outside


def test_render_sample_composites_face_over_background(face_and_mask, coffee):
    face, mask = face_and_mask
    params = SampleParams(GEOMETRY, ColourParams())
    sample = render_sample(face, mask, coffee, params, NO_COLOUR)
    matrix = F.geometry_matrix(GEOMETRY, 160, SIZE)
    np.testing.assert_array_equal(sample.matrix, matrix)
    warped, warped_mask = F.warp_face(face, mask, matrix, SIZE)
    assert np.array_equal(sample.mask, warped_mask) and set(np.unique(sample.mask)) == {0, 255}
    alpha = F.alpha_from_mask(sample.mask, 3.0)
    # The gain is measured under the mask and applied wherever alpha > 0 (the soft rim included).
    matched, w = F.luminance_match(warped, coffee, warped_mask, (0.5, 1.5), (10.0, 90.0), region=alpha > 0)
    assert sample.luminance_ratio == pytest.approx(w) and 0.5 <= w <= 1.5
    inside, outside = _inside_outside(sample.mask, 3.0)
    assert inside.sum() > 2000 and outside.sum() > 5000
    assert np.array_equal(sample.image[inside], matched[inside])
    assert np.array_equal(sample.image[outside], coffee[outside])
    edge = (alpha > 0) & (alpha < 1)
    assert edge.sum() > 300
    low = np.minimum(matched, coffee).astype(int)
    high = np.maximum(matched, coffee).astype(int)
    assert ((sample.image[edge] >= low[edge]) & (sample.image[edge] <= high[edge])).all()
    blend = alpha[..., None] * matched + (1 - alpha[..., None]) * coffee.astype(float)
    assert np.abs(sample.image - blend).max() <= 0.5 + 1e-3
    mixed = edge & (alpha > 0.2) & (alpha < 0.8) & (np.abs(matched.astype(int) - coffee).min(axis=2) > 30)
    assert mixed.sum() > 20
    assert (np.abs(sample.image[mixed].astype(int) - matched[mixed]).min(axis=1) > 3).all()
    assert (np.abs(sample.image[mixed].astype(int) - coffee[mixed]).min(axis=1) > 3).all()


def test_hard_cut_and_target_face(face_and_mask, chelsea):
    face, mask = face_and_mask
    params = SampleParams(GEOMETRY, ColourParams())
    hard = render_sample(face, mask, chelsea, params, replace(NO_COLOUR, feather=0.0))
    warped, _ = F.warp_face(face, mask, hard.matrix, SIZE)
    matched, _ = F.luminance_match(warped, chelsea, hard.mask, (0.5, 1.5), (10.0, 90.0))
    inside = hard.mask > 0
    assert np.array_equal(hard.image[inside], matched[inside])
    assert np.array_equal(hard.image[~inside], chelsea[~inside])
    # The target: the warped face on black, the same whatever the luminance and colour settings.
    assert not hard.face[~inside].any() and np.array_equal(hard.face[inside], warped[inside])
    busy = SampleParams(GEOMETRY, ColourParams(1.2, 0.8, 1.2, 1.0, 8.0, 3))
    for config in (replace(NO_COLOUR, luminance=False), RenderConfig(), replace(NO_COLOUR, feather=5.0)):
        other = render_sample(face, mask, chelsea, busy, config)
        assert np.array_equal(other.face, hard.face)
    unmatched = render_sample(face, mask, chelsea, params, replace(NO_COLOUR, luminance=False, feather=0.0))
    assert math.isnan(unmatched.luminance_ratio)
    assert np.array_equal(unmatched.image[inside], warped[inside])


def test_render_sample_is_deterministic_and_pure(face_and_mask, coffee):
    face, mask = face_and_mask
    config = PRESETS["eval"]
    inputs = [a.copy() for a in (face, mask, coffee)]
    for seed in range(4):
        params = sample_params(config, np.random.default_rng(seed))
        params = replace(params, colour=replace(params.colour, noise_sigma=5.0))
        first = render_sample(face, mask, coffee, params, config)
        second = render_sample(face.copy(), mask.copy(), coffee.copy(), params, config)
        for name in ("image", "mask", "face", "matrix"):
            assert np.array_equal(getattr(first, name), getattr(second, name)), name
        assert first.image.dtype == np.uint8 and first.image.shape == (SIZE, SIZE, 3)
    assert all(np.array_equal(a, b) for a, b in zip(inputs, (face, mask, coffee), strict=True))


def test_grey_mode_gives_equal_channels(face_and_mask, chelsea):
    face, mask = face_and_mask
    params = sample_params(RenderConfig(), np.random.default_rng(11))
    sample = render_sample(face, mask, chelsea, params, replace(RenderConfig(), grey=True))
    for image in (sample.image, sample.face):
        assert np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 1], image[..., 2])
    assert not sample.face[sample.mask == 0].any()


def test_render_sample_rejects_mismatched_inputs(face_and_mask, coffee):
    face, mask = face_and_mask
    with pytest.raises(ValueError, match="background"):
        render_sample(face, mask, coffee[:100], SampleParams(), RenderConfig())
    with pytest.raises(ValueError, match="mask"):
        render_sample(face, mask[:100], coffee, SampleParams(), RenderConfig())
