"""Landmark alignment, crops around masks and the warps that apply them."""

import numpy as np

from feratt.datasets import align


def _synthetic_landmarks(angle_degrees: float) -> np.ndarray:
    """68 iBUG-ordered points of an upright face, rotated by `angle_degrees` about (200, 200)."""
    points = np.zeros((68, 2))
    points[0:17] = np.stack(
        [200 - 80 * np.cos(np.linspace(0, np.pi, 17)), 200 + 100 * np.sin(np.linspace(0, np.pi, 17))], 1
    )
    points[17:27] = np.stack([np.linspace(130, 270, 10), np.full(10, 150)], 1)
    points[27:36] = np.stack([np.full(9, 200), np.linspace(170, 230, 9)], 1)
    points[36:42] = np.stack([np.linspace(140, 180, 6), np.full(6, 180)], 1)
    points[42:48] = np.stack([np.linspace(220, 260, 6), np.full(6, 180)], 1)
    points[48:68] = np.stack([np.linspace(170, 230, 20), np.full(20, 260)], 1)
    a = np.radians(angle_degrees)
    rotation = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return (points - 200) @ rotation.T + 200


def test_alignment_levels_inner_eye_corners_and_fits_padded_box():
    points = _synthetic_landmarks(20.0)
    affine, outline = align.landmark_alignment(points, size=160, padding=0.2)
    moved = align.transform_points(affine, points)
    np.testing.assert_allclose(moved[39, 1], moved[42, 1], atol=1e-9)
    assert moved[39, 0] < moved[42, 0]
    np.testing.assert_allclose(outline, moved)
    # The landmark box, padded by 0.2 x the inner-eye distance, becomes the square's longer side.
    eye_distance = np.linalg.norm(moved[42] - moved[39])
    span = moved.max(0) - moved.min(0)
    np.testing.assert_allclose(span.max() + 2 * 0.2 * eye_distance, 160, rtol=1e-9)
    assert moved.min() > 0 and moved.max() < 160


def test_forehead_raise_lifts_brows_by_fraction_of_face_height():
    points = _synthetic_landmarks(0.0)
    affine, raised = align.landmark_alignment(points, 160, 0.2, forehead=0.3)
    moved = align.transform_points(affine, points)
    np.testing.assert_allclose(raised[:68], moved)
    brow_height = moved[8, 1] - moved[17:27, 1].mean()
    np.testing.assert_allclose(moved[17:27, 1] - raised[68:, 1], 0.3 * brow_height)
    mask = align.polygon_mask(raised, 160)
    assert mask[int(raised[68:, 1].min()) + 2, 80]
    assert not align.polygon_mask(moved, 160)[int(raised[68:, 1].min()) + 2, 80]


def test_mask_crop_centres_mask_with_margin():
    mask = np.zeros((100, 200), bool)
    mask[20:60, 50:70] = True  # 20 wide, 40 tall
    affine = align.mask_crop(mask, size=80, margin=0.5)
    # Longer side 40, margin 20 on each side: an 80-pixel square mapped onto 80 pixels.
    np.testing.assert_allclose(affine, [[1, 0, -20], [0, 1, 0]])
    warped = align.warp_mask(mask, affine, 80)
    assert warped.sum() == 20 * 40
    rows, cols = np.nonzero(warped)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (20, 59, 30, 49)


def test_frame_crop_pads_to_square_with_black():
    image = np.full((50, 100, 3), 200, np.uint8)
    out = align.warp_image(image, align.frame_crop((50, 100), 100), 100)
    assert out.shape == (100, 100, 3)
    assert (out[:24] == 0).all() and (out[76:] == 0).all()
    assert (out[26:74] == 200).all()


def test_bilinear_warp_takes_exact_weights_and_zero_outside():
    image = np.array([[0, 100], [200, 60]], np.uint8)
    half_step = np.array([[1.0, 0.0, -0.25], [0.0, 1.0, -0.5]])  # output (x, y) samples (x + .25, y + .5)
    out = align.warp_bilinear(image, half_step, 2)
    assert out[0, 0] == 0.75 * 0.5 * 0 + 0.25 * 0.5 * 100 + 0.75 * 0.5 * 200 + 0.25 * 0.5 * 60
    # The last column's right taps and the last row's lower taps fall outside: they count as 0.
    assert out[1, 1] == 0.75 * 0.5 * 60
    assert align.to_uint8(np.array([0.5, 1.49, 254.5, 300.0, -3.0])).tolist() == [1, 1, 255, 255, 0]


def test_bilinear_warp_matches_opencv_within_one_level_on_a_photo():
    import cv2
    from skimage import data

    photo = data.astronaut()
    rotation = cv2.getRotationMatrix2D((250.3, 240.7), 17.0, 0.8)
    ours = align.to_uint8(align.warp_bilinear(photo, rotation, 320)).astype(int)
    theirs = cv2.warpAffine(photo, rotation, (320, 320), flags=cv2.INTER_LINEAR).astype(int)
    assert np.abs(ours - theirs).max() <= 1
    assert (ours != theirs).mean() < 1e-3
