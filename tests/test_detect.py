"""Faces in photos: detection, suppression, the false-positive filters, and framing as training framed."""

import numpy as np
import pytest
from model_helpers import group_scene
from skimage import data

from feratt.config.framing import Framing
from feratt.datasets import align
from feratt.datasets.detect import (
    DetectorSettings,
    FaceBox,
    box_is_grey,
    detect_faces,
    feature_contrast,
    find_faces,
    iou,
    skin_fraction,
    suppress,
)
from feratt.datasets.faces import BankOptions, crop_face
from feratt.datasets.records import FaceRecord
from feratt.errors import FerattError
from feratt.inference.crops import bank_crop, frame_detection
from feratt.inference.scenes import astronaut_portrait, compose, demo_portrait, grey_portrait, matches


def test_the_astronaut_photo_gives_one_face_on_her_face():
    [box] = find_faces(data.astronaut())
    # Her face (brows to chin) lies in x 180-270, y 70-180 of the 512 x 512 photo.
    assert 160 <= box.x <= 190 and 55 <= box.y <= 80
    assert 260 <= box.x + box.width <= 290 and 150 <= box.y + box.height <= 190
    # Without suppression and filters the cascade also fires on her suit and the flag.
    raw = DetectorSettings(detector="cascade", min_neighbours=2, min_skin=0.0, min_contrast=0.0)
    assert len(find_faces(data.astronaut(), raw)) >= 3


@pytest.mark.parametrize("count", [2, 3])
def test_a_group_photo_gives_one_box_per_pasted_face(count):
    pair = [(demo_portrait(2, "surprise"), 60, 120, 150), (astronaut_portrait(), 380, 160, 140)]
    scene = group_scene() if count == 3 else compose("coffee", (640, 480), pair)
    boxes = find_faces(scene.image)
    assert len(boxes) == count == len(scene.faces)
    assert matches(boxes, scene.faces) == (count, 0)
    for truth in scene.faces:  # one box per pasted head, about the face's size
        [box] = [b for b in boxes if iou(b, truth) > 0.2]
        assert 0.5 <= box.width / truth.width <= 1.0


@pytest.mark.parametrize("photo", ["coffee", "rocket", "chelsea", "brick"])
def test_grey_faces_are_found_in_colour_and_in_grey_photos(photo):
    import cv2

    placed = [
        (grey_portrait(demo_portrait(2, "surprise")), 60, 120, 150),
        (grey_portrait(astronaut_portrait()), 380, 160, 140),
    ]
    scene = compose(photo, (640, 480), placed)
    assert matches(find_faces(scene.image), scene.faces) == (2, 0)
    grey = cv2.cvtColor(cv2.cvtColor(scene.image, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    assert matches(find_faces(grey), scene.faces) == (2, 0)
    # A grey box in a colour photo is judged by its own colour: no skin to check, stronger features.
    for truth in scene.faces:
        assert box_is_grey(scene.image, truth)
    # The same faces in colour keep the skin rule.
    coloured = compose(photo, (640, 480), [(demo_portrait(2, "surprise"), 60, 120, 150)])
    assert not box_is_grey(coloured.image, coloured.faces[0])


def test_the_readme_group_photo_has_every_face_found():
    from feratt.inference.scenes import README_FACES, readme_group

    scene = readme_group()
    assert matches(find_faces(scene.image), scene.faces) == (len(README_FACES), 0)


def test_photos_without_faces_give_none():
    for photo in (data.coffee(), data.rocket(), data.brick()):
        assert find_faces(photo) == []


def test_suppression_merges_overlaps_and_drops_boxes_inside_a_face():
    face = FaceBox(100, 100, 80, 80)
    shifted = FaceBox(104, 98, 82, 82)  # the same face found again: IoU 0.86
    inner = FaceBox(120, 110, 30, 30)  # an eye found as a face, inside the face
    apart = FaceBox(300, 50, 60, 60)
    kept = suppress([face, shifted, inner, apart], 0.3)
    assert len(kept) == 2
    merged = next(b for b in kept if b.x < 200)
    assert merged.score == 2 and merged.x == pytest.approx(102) and merged.width == pytest.approx(81)
    assert any(b.x == 300 for b in kept)
    # YuNet boxes carry scores: the better one wins, nothing is averaged.
    scored = suppress([FaceBox(100, 100, 80, 80, 0.6), FaceBox(104, 98, 82, 82, 0.9)], 0.3, merge=False)
    assert scored == [FaceBox(104, 98, 82, 82, 0.9)]


def test_skin_and_feature_filters_measure_what_they_say():
    skin = np.zeros((100, 100, 3), np.uint8)
    skin[:] = (224, 172, 129)  # a skin tone of the demo palette
    box = FaceBox(0, 0, 100, 100)
    assert skin_fraction(skin, box) == 1.0
    assert skin_fraction(np.full((100, 100, 3), (40, 90, 200), np.uint8), box) == 0.0
    assert feature_contrast(skin, box) == 0.0
    skin[30:40, 25:40] = 30  # two dark eyes in the eye band (rows 20-50)
    skin[30:40, 60:75] = 30
    assert feature_contrast(skin, box) > 0.5


def test_the_bank_detection_is_unchanged_on_the_astronaut():
    # The face bank's masks depend on this box (320 px copy, boxes averaged): it must not move.
    [box] = detect_faces(data.astronaut())
    assert [round(v, 1) for v in (box.x, box.y, box.width, box.height)] == [176.8, 64.8, 96.8, 96.8]


def test_detector_settings_refuse_bad_values(tmp_path):
    with pytest.raises(FerattError, match="no YuNet model file") as error:
        DetectorSettings(model=str(tmp_path / "missing.onnx"))
    assert error.value.field == "detector_model"
    with pytest.raises(FerattError, match="at least 48 px"):
        DetectorSettings(side=20)


def test_a_file_that_is_not_a_yunet_model_is_one_clear_error(tmp_path):
    bogus = tmp_path / "yunet.onnx"
    bogus.write_bytes(b"not an onnx model")
    with pytest.raises(FerattError, match=r"cannot load .* as a YuNet face detector"):
        find_faces(data.astronaut(), DetectorSettings(model=str(bogus)))


def test_yunet_rows_become_boxes_by_score(monkeypatch, tmp_path):
    from feratt.datasets import detect

    class FakeYuNet:  # OpenCV's FaceDetectorYN gives rows: x, y, w, h, 10 landmark values, score
        def setInputSize(self, size):
            self.size = size

        def setScoreThreshold(self, threshold):
            self.threshold = threshold

        def detect(self, image):
            rows = np.zeros((3, 15), np.float32)
            rows[0, [0, 1, 2, 3, 14]] = (10, 20, 50, 60, 0.95)
            rows[1, [0, 1, 2, 3, 14]] = (12, 22, 50, 60, 0.80)  # the same face, less sure
            rows[2, [0, 1, 2, 3, 14]] = (200, 40, 40, 40, 0.75)
            return 1, rows

    model = tmp_path / "face_detection_yunet.onnx"
    model.write_bytes(b"stand-in")
    monkeypatch.setattr(detect, "_yunet", lambda path: FakeYuNet())
    boxes = find_faces(np.zeros((120, 300, 3), np.uint8), DetectorSettings(model=str(model)))
    assert [(b.x, b.y, b.width, b.height, round(b.score, 2)) for b in boxes] == [
        (10, 20, 50, 60, 0.95),
        (200, 40, 40, 40, 0.75),
    ]


def _square(affine: np.ndarray, size: int) -> np.ndarray:
    scale = affine[0, 0]
    return np.array([-affine[0, 2] / scale, -affine[1, 2] / scale, size / scale])


@pytest.mark.parametrize(
    "subject,expression,width", [(0, "happy", 110), (2, "surprise", 90), (4, "anger", 130)]
)
def test_framing_matches_the_bank_crop_of_the_same_face(subject, expression, width):
    """An unaligned bank (GrabCut masks): predict's crop of a face is the bank's, within 2 pixels."""
    scene = compose("brick", (320, 240), [(demo_portrait(subject, expression), 100, 40, width)])
    options = BankOptions(mask_method="grabcut")
    bank = crop_face(FaceRecord(scene.image, 0, "x", "s", "scene", None, None, None), options)
    [box] = find_faces(scene.image, DetectorSettings(detector="cascade"))
    crop, mask, affine, method = bank_crop(scene.image, box, Framing())
    assert method == bank.method == "grabcut"
    # The bank's square around the mask, from its own detection, against ours: within 2 pixels.
    from feratt.datasets.facemask import compute_mask

    bank_mask, _ = compute_mask(scene.image)
    expected = _square(align.mask_crop(bank_mask, options.size, options.margin), options.size)
    np.testing.assert_allclose(_square(affine, options.size), expected, atol=2.0)
    assert np.abs(crop.astype(int) - bank.image.astype(int)).mean() < 4.0
    assert (mask > 0).mean() == pytest.approx((bank.mask > 0).mean(), abs=0.03)


@pytest.mark.parametrize("grey", [False, True])
def test_framing_matches_the_aligned_bank_crop_of_a_real_face(grey):
    """An aligned bank (landmarks): predict aligns and crops a photo's face as the bank did, to a pixel."""
    portrait = astronaut_portrait()
    portrait = grey_portrait(portrait) if grey else portrait
    scene = compose("coffee", (480, 360), [(portrait, 150, 60, 180)])
    bank = crop_face(FaceRecord(scene.image, 0, "x", "s", "scene", None, None, None), BankOptions())
    assert bank.method == "landmarks" and bank.landmarks is not None
    [box] = find_faces(scene.image)
    assert box.landmarks is not None and box.landmarks.shape == (68, 2)
    crop, mask, affine, method = bank_crop(scene.image, box, Framing(aligned=True))
    assert method == "landmarks"
    # The bank and predict detect on their own (HOG without and with upsampling): the points, and so the
    # crops, agree within a few pixels of the 160 px crop.
    ours = align.transform_points(affine, box.landmarks)
    error = np.linalg.norm(ours - bank.landmarks, axis=1)
    assert np.median(error) < 2.0 and error.max() < 5.0
    assert ((mask > 0) != (bank.mask > 0)).mean() < 0.05
    assert np.abs(crop.astype(int) - bank.image.astype(int)).mean() < 10.0
    # The eyes are level in both crops.
    assert abs(ours[39, 1] - ours[42, 1]) < 0.5 and abs(bank.landmarks[39, 1] - bank.landmarks[42, 1]) < 0.5


def test_frame_detection_frames_as_the_render_does():
    from feratt.config.rendering import RenderConfig
    from feratt.renderer.sample import frame_face

    scene = group_scene()
    box = find_faces(scene.image)[0]
    framing = Framing(size=64, fit_mask=0.05)
    framed = frame_detection(scene.image, box, framing)
    crop, mask, _, _ = bank_crop(scene.image, box, framing)
    image, framed_mask = frame_face(crop, mask, RenderConfig(size=64, fit_mask=0.05))
    np.testing.assert_array_equal(framed.image, image)
    assert framed.image.shape == (64, 64, 3) and framed.mask.dtype == bool
    np.testing.assert_array_equal(framed.mask, framed_mask > 0)
    # fit_mask 0.05: the face mask spans the frame but for the 5% padding on its longer side.
    rows, cols = np.nonzero(framed.mask)
    assert max(np.ptp(rows), np.ptp(cols)) + 1 >= 0.85 * 64
    whole = frame_detection(scene.image, box, Framing(size=64))
    rows, cols = np.nonzero(whole.mask)
    assert max(np.ptp(rows), np.ptp(cols)) + 1 < 0.8 * 64  # the bank's 0.2 margin stays around the face
