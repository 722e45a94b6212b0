"""dlib's 68 landmarks (the feratt[landmarks] extra): on a real face, in the bank, and when it is absent."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest
from skimage import data

from feratt.artifacts.bank import FaceBank
from feratt.datasets import align, landmarks
from feratt.datasets.bank import build_bank
from feratt.datasets.detect import DetectorSettings, find_faces
from feratt.datasets.faces import BankOptions, crop_face
from feratt.datasets.records import FaceRecord
from feratt.errors import FerattError

pytestmark = pytest.mark.skipif(
    not landmarks.landmarks_available(), reason="needs the feratt[landmarks] extra (make test installs it)"
)


def _grey(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


def test_the_astronaut_gets_68_points_on_her_eyes_and_a_hull_on_her_face():
    photo = data.astronaut()
    points = landmarks.face_landmarks(photo)
    assert points.shape == (68, 2)
    grey = _grey(photo)
    face = align.polygon_mask(points, 512)
    # Each eye's outline (points 36-41, 42-47) encloses dark iris and lashes, darker than her face.
    for eye in (slice(36, 42), slice(42, 48)):
        inside = align.polygon_mask(points[eye], 512)
        assert 40 <= inside.sum() <= 200
        assert grey[inside].mean() < 0.75 * grey[face].mean()
    # The eyes' inner corners (39, 42) sit between her eyes, level within a few pixels.
    assert 205 <= points[39, 0] < points[42, 0] <= 245 and abs(points[39, 1] - points[42, 1]) < 5
    # The hull, jaw to brows, lies on her skin and within her face (x 170-280, y 80-190 of the photo).
    ycrcb = cv2.cvtColor(photo, cv2.COLOR_RGB2YCrCb)
    skin = cv2.inRange(ycrcb, (0, 133, 77), (255, 173, 127)) > 0
    assert skin[face].mean() > 0.95 and 5000 < face.sum() < 9000
    rows, cols = np.nonzero(face)
    assert cols.min() >= 170 and cols.max() <= 280 and rows.min() >= 80 and rows.max() <= 190


def test_a_48_px_grey_face_is_found_on_an_upscaled_copy():
    crop = cv2.resize(data.astronaut()[60:200, 160:290], (48, 48), interpolation=cv2.INTER_AREA)
    points = landmarks.face_landmarks(_grey(crop))
    assert points is not None
    # The eyes in the 48 px crop: around row 14, the left one left of the right one.
    eyes = points[36:48].mean(axis=0)
    assert 10 <= eyes[1] <= 19 and 18 <= eyes[0] <= 30
    assert points[36:42, 0].mean() < points[42:48, 0].mean()


def test_a_bank_cut_by_landmarks_keeps_its_points_in_crop_pixels(tmp_path):
    photo = data.astronaut()
    face = crop_face(FaceRecord(photo, 0, "happy", "s", "astronaut", None, None, None), BankOptions(size=128))
    assert face.method == "landmarks" and face.landmarks.dtype == np.float32
    # The points are the detected ones carried into the crop: eyes level, the hull is the mask.
    assert abs(face.landmarks[39, 1] - face.landmarks[42, 1]) < 0.01
    outline = align.polygon_mask(face.landmarks.astype(np.float64), 128)
    assert ((face.mask > 0) != outline).mean() < 0.01
    grey = _grey(face.image)
    for eye in (slice(36, 42), slice(42, 48)):
        centre = np.round(face.landmarks[eye].mean(axis=0)).astype(int)
        assert grey[centre[1], centre[0]] < 0.75 * grey[face.mask > 0].mean()
    # Forced GrabCut keeps no points, and an ellipse neither.
    for method in ("grabcut", "ellipse"):
        forced = crop_face(
            FaceRecord(photo, 0, "happy", "s", "astronaut", None, None, None), BankOptions(mask_method=method)
        )
        assert forced.method == method and forced.landmarks is None


def test_grey_faces_are_found_by_auto_and_by_the_cascade():
    from feratt.inference.scenes import astronaut_portrait, compose, demo_portrait, grey_portrait, matches

    placed = [
        (grey_portrait(demo_portrait(2, "surprise")), 60, 120, 150),
        (grey_portrait(astronaut_portrait()), 380, 160, 140),
    ]
    for photo in ("rocket", "brick"):  # tests/test_detect.py takes `auto` through all four photos
        scene = compose(photo, (640, 480), placed)
        grey = cv2.cvtColor(_grey(scene.image), cv2.COLOR_GRAY2RGB)
        for image in (scene.image, grey):
            for detector in ("auto", "cascade"):
                found = find_faces(image, DetectorSettings(detector=detector))
                assert matches(found, scene.faces) == (2, 0), (photo, detector)
            # HOG gives the real face its 68 points.
            [astronaut] = [b for b in find_faces(image) if b.x > 300]
            assert astronaut.landmarks is not None and astronaut.landmarks.shape == (68, 2)


_WITHOUT_DLIB = """
import sys
sys.modules["dlib"] = None  # an import of dlib now fails, as where the extra is not installed
from feratt.cli import main
sys.argv = ["feratt", *sys.argv[1:]]
main()
"""


def _feratt_without_dlib(*args) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", _WITHOUT_DLIB, *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


@pytest.fixture
def without_dlib(monkeypatch):
    """This process as it is without the extra: dlib cannot be imported."""
    monkeypatch.setitem(sys.modules, "dlib", None)
    landmarks.landmarks_available.cache_clear()
    yield
    landmarks.landmarks_available.cache_clear()


def test_without_the_extra_the_cascade_path_runs_and_says_so(without_dlib, tmp_path):
    assert not landmarks.landmarks_available()
    assert DetectorSettings().kind == "cascade"
    [box] = find_faces(data.astronaut())
    assert box.landmarks is None
    lines = []
    result = build_bank(
        source="builtin:demo",
        out=tmp_path / "b.h5",
        demo_subjects=1,
        demo_per_class=1,
        jobs=1,
        log=lines.append,
    )
    assert any(line.startswith("landmarks: not installed") for line in lines)
    assert "landmarks" not in result.per_method
    assert np.isnan(FaceBank.open(tmp_path / "b.h5").landmarks).all()
    with pytest.raises(FerattError, match=r"feratt\[landmarks\]") as caught:
        build_bank(source="builtin:demo", out=tmp_path / "c.h5", mask_method="landmarks")
    assert caught.value.field == "mask_method"
    for detector in ("hog", "cnn"):
        with pytest.raises(FerattError, match=r"feratt\[landmarks\]"):
            DetectorSettings(detector=detector)


def test_without_the_extra_the_cli_says_which_path_it_took(tmp_path):
    done = _feratt_without_dlib(
        "faces", "builtin:demo", "--out", tmp_path / "b.h5", "--demo-subjects", 1, "--demo-per-class", 1
    )
    assert done.returncode == 0, done.stderr
    assert "landmarks: not installed, faces without mask or landmark files get GrabCut masks" in done.stdout
    refused = _feratt_without_dlib(
        "faces", "builtin:demo", "--out", tmp_path / "c.h5", "--mask-method", "landmarks"
    )
    assert refused.returncode == 2 and not (tmp_path / "c.h5").exists()
    [line] = refused.stderr.strip().splitlines()
    assert line.startswith("Error:") and "feratt[landmarks]" in line


def test_predict_frames_a_face_by_its_landmarks_for_a_model_of_an_aligned_bank(tmp_path):
    from model_helpers import untrained_checkpoint

    from feratt.config.framing import Framing
    from feratt.inference.backends import open_model
    from feratt.inference.classify import classify_faces
    from feratt.inference.crops import frame_detection, model_input
    from feratt.inference.predict import predict
    from feratt.inference.scenes import astronaut_portrait, compose

    scene = compose("coffee", (480, 360), [(astronaut_portrait(), 150, 60, 180)])
    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR))
    aligned = Framing(bank_size=96, size=64, fit_mask=0.05, aligned=True)
    model = untrained_checkpoint(tmp_path / "m.pt", "baseline", framing=aligned)
    lines = []
    result = predict(checkpoint=model, images=[photo], device="cpu", log=lines.append)
    assert len(result.predictions) == 1
    assert lines == [] and result.detector.startswith("dlib hog")
    # The model's input is the landmark framing of that face, not the GrabCut one.
    [box] = find_faces(scene.image)
    by_points = frame_detection(scene.image, box, aligned)
    assert by_points.method == "landmarks"
    unaligned = frame_detection(scene.image, box, Framing(bank_size=96, size=64, fit_mask=0.05))
    assert unaligned.method in ("grabcut", "prior")
    assert np.abs(by_points.image.astype(int) - unaligned.image.astype(int)).mean() > 5  # they differ
    classifier = open_model(model, device="cpu")
    [classified] = classify_faces(classifier, scene.image, DetectorSettings())
    np.testing.assert_array_equal(classified.input, model_input(by_points.image, classifier.in_size))
    # The cascade gives no landmarks: predict frames by GrabCut and says so.
    lines.clear()
    cascade = DetectorSettings(detector="cascade")
    predict(checkpoint=model, images=[photo], device="cpu", detector=cascade, log=lines.append)
    assert len(lines) == 1 and "aligned by their landmarks" in lines[0] and "GrabCut" in lines[0]


def test_predict_command_takes_each_detector(tmp_path):
    from cli_helpers import run
    from model_helpers import untrained_checkpoint

    model = untrained_checkpoint(tmp_path / "m.pt", "baseline")
    photo = tmp_path / "astronaut.png"
    cv2.imwrite(str(photo), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    for detector in ("auto", "hog", "cascade"):
        result = run("predict", model, photo, "--detector", detector, "--json", "--device", "cpu")
        assert result.exit_code == 0, result.output
        assert '"face": 0' in result.output and '"face": 1' not in result.output, detector
    refused = run("predict", model, photo, "--detector", "yunet", "--device", "cpu")
    assert refused.exit_code == 2 and "YuNet" in refused.output


def test_the_demo_faces_true_region_and_the_landmark_hull_agree():
    from feratt.datasets.demo import demo_source, draw_demo_face, render_demo_face

    found = 0
    for subject in range(6):
        drawn = draw_demo_face(demo_source(subject, "happy", 0), seed=0)
        image, head = render_demo_face(demo_source(subject, "happy", 0), seed=0)
        np.testing.assert_array_equal(drawn.image, image)  # the face layer changes no pixel
        np.testing.assert_array_equal(drawn.head, head)
        assert (drawn.face & ~drawn.head).sum() == 0 and 0.3 < drawn.face.sum() / drawn.head.sum() < 0.9
        points = landmarks.face_landmarks(drawn.image)
        if points is None:
            continue
        found += 1
        hull = align.polygon_mask(points, drawn.image.shape[0])
        assert (hull & drawn.face).sum() / (hull | drawn.face).sum() > 0.6  # jaw to brows, on the face
    assert found >= 2


def test_the_cnn_detector_finds_the_astronaut_with_her_landmarks():
    [box] = find_faces(data.astronaut(), DetectorSettings(detector="cnn", upsample=0))
    # Her face (brows to chin) lies in x 180-270, y 70-180 of the 512 x 512 photo.
    assert 160 <= box.x <= 190 and 60 <= box.y <= 90 and 80 <= box.width <= 110
    assert box.landmarks is not None and 205 <= box.landmarks[39, 0] < box.landmarks[42, 0] <= 245
