"""`feratt predict` on videos: frames read with OpenCV, faces tracked, scores smoothed, annotated mp4."""

import json

import cv2
import numpy as np
import pytest
from cli_helpers import assert_user_error, run
from model_helpers import untrained_checkpoint, write_video

from feratt.codec import encode
from feratt.datasets.detect import FaceBox
from feratt.inference.predict import predict
from feratt.inference.scenes import astronaut_portrait, compose, demo_portrait
from feratt.inference.video import IouTracker, Smoother

FRAMES = 8


def moving_faces(frames: int = FRAMES) -> list:
    """Two faces drifting right over scikit-image's coffee photo, 4 px a frame."""
    scenes = []
    for t in range(frames):
        placed = [
            (demo_portrait(0, "happy"), 20 + 4 * t, 50, 100),
            (astronaut_portrait(), 190 + 2 * t, 60, 90),
        ]
        scenes.append(compose("coffee", (360, 240), placed))
    return scenes


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    base = tmp_path_factory.mktemp("video")
    scenes = moving_faces()
    return write_video(base / "clip.mp4", [s.image for s in scenes]), scenes


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return untrained_checkpoint(tmp_path_factory.mktemp("model") / "feratt.pt", "feratt-cls")


def test_every_frame_is_read_and_each_face_keeps_its_track(model, clip, tmp_path):
    path, scenes = clip
    result = predict(checkpoint=model, images=[path], annotate=tmp_path / "out", device="cpu")
    [video] = result.videos
    assert video.frames == FRAMES and video.classified_frames == FRAMES and video.fps == pytest.approx(10.0)
    for record, scene in zip(video.frame_records, scenes, strict=True):
        assert [face.track for face in record.faces] == [1, 2]
        for face, truth in zip(record.faces, scene.faces, strict=True):
            x, y, w, h = face.box
            assert (
                truth.x <= x + w / 2 <= truth.x + truth.width
                and truth.y <= y + h / 2 <= truth.y + truth.height
            )
    assert [t.frames for t in video.tracks] == [FRAMES, FRAMES]
    # The annotated video has every frame, boxes drawn; one JSON line per classified frame.
    capture = cv2.VideoCapture(str(tmp_path / "out" / "clip.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == FRAMES
    ok, first = capture.read()
    assert ok and first.shape == (240, 360, 3)
    capture.release()
    lines = (tmp_path / "out" / "clip.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == encode(video.frame_records)
    assert video.written == [tmp_path / "out" / "clip.mp4", tmp_path / "out" / "clip.jsonl"]


def test_every_k_and_smoothing(model, clip):
    path, _ = clip
    [video] = predict(checkpoint=model, images=[path], every=3, smooth=2, device="cpu").videos
    assert video.frames == FRAMES and [r.frame for r in video.frame_records] == [0, 3, 6]
    assert [r.time for r in video.frame_records] == [0.0, 0.3, 0.6]
    face = video.frame_records[2].faces[0]  # smoothed over the classified frames 3 and 6
    history = np.array([list(r.faces[0].probabilities.values()) for r in video.frame_records[1:]])
    np.testing.assert_allclose(list(face.smoothed.values()), history.mean(axis=0), atol=1e-12)
    assert face.prediction == max(face.smoothed, key=face.smoothed.get)


def test_the_command_prints_one_line_per_face_followed(model, clip):
    path, _ = clip
    result = run("predict", model, path, "--every", "6", "--device", "cpu")
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0] == f"{path}: {FRAMES} frames, 2 classified, 2 faces followed"
    assert lines[1].startswith("  face #1 (frames 0-6): ") and lines[2].startswith("  face #2 (frames 0-6): ")
    document = json.loads(run("predict", model, path, "--every", "6", "--json", "--device", "cpu").stdout)
    [video] = document["videos"]
    assert video["classified_frames"] == 2 and len(video["frame_records"]) == 2


def test_a_corrupt_video_is_one_clear_line(model, tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42 and then nothing a decoder can use" * 3)
    assert_user_error(run("predict", model, bad, "--device", "cpu"), f"{bad}: not a readable video")


def test_an_unreadable_frame_stops_the_video_with_a_warning(model, tmp_path):
    frames = [s.image for s in moving_faces(6)]
    whole = write_video(tmp_path / "whole.avi", frames, fourcc="MJPG")
    data = whole.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) * 3 // 5])  # the index still promises 6 frames
    result = run("predict", model, cut, "--device", "cpu")
    assert result.exit_code == 0, result.output
    [note] = [line for line in result.output.splitlines() if "could not be read" in line]
    prefix = f"warning: {cut}: frame "
    assert note.startswith(prefix) and note.endswith(
        " of 6 could not be read; the video was read up to there"
    )
    read = int(note[len(prefix) :].split()[0])
    assert 0 < read < 6
    assert f"{cut}: {read} frames, {read} classified" in result.output


def test_the_tracker_follows_overlapping_boxes_and_drops_lost_ones():
    tracker = IouTracker(threshold=0.3, patience=1)
    assert tracker.update([FaceBox(0, 0, 50, 50), FaceBox(100, 0, 50, 50)]) == [1, 2]
    assert tracker.update([FaceBox(105, 2, 50, 50), FaceBox(4, 0, 50, 50)]) == [2, 1]
    assert tracker.update([FaceBox(8, 0, 50, 50)]) == [1]  # face 2 missed once: kept
    assert tracker.update([FaceBox(10, 0, 50, 50)]) == [1]  # missed twice: gone
    assert tracker.update([FaceBox(110, 0, 50, 50)]) == [3]
    smoother = Smoother(2)
    smoother.add(1, np.array([1.0, 0.0]))
    smoother.add(1, np.array([0.0, 1.0]))
    np.testing.assert_allclose(smoother.add(1, np.array([0.0, 1.0])), [0.0, 1.0])
