"""Face masks computed from images: the astronaut photo, the demo faces, tight crops, no face."""

import cv2
import numpy as np
import pytest
from skimage import data

from feratt.datasets.demo import DEMO_CLASSES, demo_source, render_demo_face
from feratt.datasets.facemask import Ellipse, clean_mask, compute_mask, detect_faces, inscribed_ellipse


@pytest.fixture(scope="module")
def astronaut_mask():
    return compute_mask(data.astronaut())


def test_astronaut_face_is_detected_once():
    boxes = detect_faces(data.astronaut())
    assert len(boxes) == 1
    box = boxes[0]
    # The face lies between x 175 and 272, y 60 and 185 in the 512x512 photo.
    assert 165 <= box.x <= 190 and 255 <= box.x + box.width <= 285
    assert 55 <= box.y <= 85


def test_astronaut_mask_covers_face_and_nothing_else(astronaut_mask):
    mask, method = astronaut_mask
    assert method == "grabcut"
    face_points = {"left eye": (203, 108), "right eye": (246, 106), "nose": (225, 130), "mouth": (225, 150)}
    for name, (x, y) in face_points.items():
        assert mask[y, x], name
    outside = {
        "corner tl": (0, 0),
        "corner tr": (511, 0),
        "corner bl": (0, 511),
        "corner br": (511, 511),
        "flag stars": (30, 60),
        "flag stripes": (60, 250),
        "suit below chin": (225, 300),
        "suit collar": (160, 230),
        "suit chest": (300, 330),
        "shuttle": (400, 150),
    }
    for name, (x, y) in outside.items():
        assert not mask[y, x], name
    assert 0.04 <= mask.mean() <= 0.20


def test_astronaut_mask_is_one_smooth_component(astronaut_mask):
    mask, _ = astronaut_mask
    count, _ = cv2.connectedComponents(mask.astype(np.uint8))
    assert count == 2  # background and one face
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    assert len(contours) == 1  # no holes


def test_demo_masks_match_drawn_head_region():
    ious = []
    for subject in range(4):
        for name in DEMO_CLASSES:
            image, region = render_demo_face(demo_source(subject, name, 0), seed=0)
            mask, method = compute_mask(image)
            assert method in {"grabcut", "fallback"}
            ious.append((mask & region).sum() / (mask | region).sum())
    ious = np.array(ious)
    assert ious.mean() >= 0.9
    assert np.median(ious) >= 0.95
    assert (ious >= 0.9).mean() >= 0.85


def test_tight_crop_gets_inscribed_ellipse():
    image, _ = render_demo_face(demo_source(0, "happy", 0), seed=0)
    tight = cv2.resize(image[30:130, 30:130], (48, 48), interpolation=cv2.INTER_AREA)
    mask, method = compute_mask(tight)
    assert method == "ellipse"
    np.testing.assert_array_equal(mask, inscribed_ellipse((48, 48)))
    assert mask[24, 24] and not mask[0, 0] and not mask[47, 47]
    assert mask[24, 0] and mask[0, 24]  # touches the middle of each edge


def test_no_face_falls_back_to_centred_prior():
    rng = np.random.default_rng(3)
    image = np.full((200, 200, 3), 90, np.uint8)
    cv2.circle(image, (100, 100), 45, (200, 160, 40), -1)
    image = np.clip(image + rng.normal(0, 3, image.shape), 0, 255).astype(np.uint8)
    mask, method = compute_mask(image)
    assert method == "fallback"
    disc = Ellipse(100, 100, 45, 45).raster((200, 200))
    assert (mask & disc).sum() / (mask | disc).sum() > 0.9


def test_masks_do_not_depend_on_opencv_rng_state():
    image, _ = render_demo_face(demo_source(1, "fear", 0), seed=0)
    first, _ = compute_mask(image)
    cv2.setRNGSeed(12345)
    cv2.randu(np.zeros((10, 10)), 0, 1)
    second, _ = compute_mask(image)
    np.testing.assert_array_equal(first, second)


def test_clean_mask_keeps_largest_component_and_fills_holes():
    mask = np.zeros((60, 60), bool)
    mask[10:40, 10:40] = True
    mask[20:25, 20:25] = False  # a hole
    mask[50:55, 50:55] = True  # a speck
    cleaned = clean_mask(mask, smoothing=0)
    assert cleaned.sum() == 30 * 30
    assert not cleaned[52, 52] and cleaned[22, 22]


def test_a_large_head_is_cut_out_on_a_small_copy_with_the_same_mask(astronaut_mask, monkeypatch):
    import feratt.datasets.facemask as facemask

    sides = []
    grabcut = cv2.grabCut

    def spy(crop, *args):
        sides.append(max(crop.shape[:2]))
        return grabcut(crop, *args)

    monkeypatch.setattr(cv2, "grabCut", spy)
    monkeypatch.setattr(facemask, "_GRABCUT_SIDE", 160)  # the head's box is about 380 px wide
    large = cv2.resize(data.astronaut(), (1024, 1024), interpolation=cv2.INTER_CUBIC)
    mask, method = compute_mask(large)
    assert method == "grabcut" and sides == [160]
    small = cv2.resize(mask.astype(np.uint8), (512, 512), interpolation=cv2.INTER_AREA) > 0
    reference, _ = astronaut_mask
    assert (small & reference).sum() / (small | reference).sum() > 0.9
