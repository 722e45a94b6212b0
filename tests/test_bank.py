"""The face bank: building it through the API, crops, mask precedence, HDF5 layout, checksum, writes."""

import json
from collections import Counter
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
from fixture_trees import (
    make_bu3dfe_tree,
    make_ckplus_folders_tree,
    make_ckplus_tree,
    make_class_folders_tree,
    make_csv_tree,
    make_jaffe_tree,
    write_emotion_file,
)
from PIL import Image
from skimage import data

from feratt.artifacts.bank import FaceBank
from feratt.datasets.bank import BankRequest, BankResult, build_bank, ensure_demo_bank, write_faces
from feratt.datasets.classes import canonical_name
from feratt.datasets.faces import BankOptions, build_faces
from feratt.datasets.records import FaceEntry, FaceListing
from feratt.errors import FerattError

#: content_sha256 of a 2-subject, 1-face-per-class demo bank at 64 px under constraints.txt. The bytes come
#: from third-party code (OpenCV's anti-aliased drawing, resize and GrabCut, scikit-image's cascade,
#: dlib's HOG detector and shape predictor, NumPy's random streams), so a new release of one of them may
#: change it: only the pinned test uses it.
LOCKED_DEMO_BANK_CHECKSUM = "e815c94da5bd9a06ed00783eb1d469be9060c3e200410aeadc8d9e52bc5f022e"
LOCKED_LIBRARIES = ("numpy", "opencv-python-headless", "scikit-image", "scipy", "dlib-bin")


def _write(path, listing, options=None, jobs=1):
    options = options or BankOptions()
    return write_faces(path, listing, build_faces(listing, options, jobs=jobs), options)


def _demo(out, **fields):
    """A bank of the built-in demo set: 2 subjects, one face per class, one worker unless told."""
    return build_bank(
        **{"source": "builtin:demo", "out": out, "demo_subjects": 2, "demo_per_class": 1, "jobs": 1, **fields}
    )


@pytest.fixture(scope="module")
def small_demo_bank(tmp_path_factory):
    """The 64 px 2-subject demo bank, built once with one worker: the reference the other builds match."""
    path = tmp_path_factory.mktemp("small") / "small.h5"
    return path, _demo(path, size=64)


@pytest.fixture(scope="module")
def demo_bank(tmp_path_factory):
    path = tmp_path_factory.mktemp("bank") / "demo.h5"
    return path, _demo(path, size=96)


def test_demo_bank_contents(demo_bank):
    path, summary = demo_bank
    bank = FaceBank.open(path)
    assert len(bank) == 14
    assert bank.images.shape == (14, 96, 96, 3) and bank.images.dtype == np.uint8
    assert bank.masks.shape == (14, 96, 96) and set(np.unique(bank.masks)) == {0, 255}
    assert bank.classes == ("neutral", "anger", "disgust", "fear", "happy", "sadness", "surprise")
    assert bank.labels.tolist() == list(range(7)) * 2
    assert bank.subjects == ["D01"] * 7 + ["D02"] * 7
    assert bank.sources[0] == "builtin:demo/D01/neutral/0"
    assert summary.path == path and summary.format == "demo" and summary.root == "builtin:demo"
    assert summary.total == 14 and summary.classes == bank.classes and summary.notes == []
    assert summary.skipped == [] and summary.conversions == {} and summary.preview is None
    assert summary.per_class == dict.fromkeys(bank.classes, 2)
    assert summary.per_subject == {"D01": 7, "D02": 7}
    assert summary.per_method == dict(sorted(Counter(bank.methods).items()))
    assert set(bank.methods) <= {"grabcut", "fallback", "landmarks"} and "landmarks" in bank.methods
    # Faces cut out by their landmarks keep them, eyes level, inside the crop; the others have NaN rows.
    cut_by_points = np.array(bank.methods) == "landmarks"
    points = bank.landmarks
    assert points.shape == (14, 68, 2) and points.dtype == np.float32
    assert np.isnan(points[~cut_by_points]).all() and not np.isnan(points[cut_by_points]).any()
    assert np.abs(points[cut_by_points, 39, 1] - points[cut_by_points, 42, 1]).max() < 0.01
    assert ((points[cut_by_points] > 0) & (points[cut_by_points] < 96)).all()
    # A GrabCut crop is centred on the mask, whose box spans 1 / (1 + 2 x margin 0.2) of the crop.
    for mask in bank.masks[np.flatnonzero(~cut_by_points)]:
        rows, cols = np.nonzero(mask)
        assert abs((rows.min() + rows.max()) / 2 - 47.5) <= 1.5
        assert abs((cols.min() + cols.max()) / 2 - 47.5) <= 1.5
        longer = max(rows.max() - rows.min(), cols.max() - cols.min()) + 1
        assert abs(longer - 96 / 1.4) <= 2


def test_bank_file_layout(demo_bank):
    path, summary = demo_bank
    with h5py.File(path, "r") as h5:
        assert h5["images"].attrs["CLASS"] == b"IMAGE"
        assert h5["images"].attrs["IMAGE_SUBCLASS"] == b"IMAGE_TRUECOLOR"
        assert h5["images"].attrs["INTERLACE_MODE"] == b"INTERLACE_PIXEL"
        assert h5["masks"].attrs["IMAGE_SUBCLASS"] == b"IMAGE_GRAYSCALE"
        assert h5["images"].chunks == (1, 96, 96, 3)
        assert h5["images"].compression == "gzip"
        assert h5["labels"].dtype == np.int16
        assert h5.attrs["format"] == "demo"
        assert json.loads(h5.attrs["class_names"])[0] == "neutral"
        assert json.loads(h5.attrs["protocol"]) == {
            "per_class": 1,
            "protocol": "demo-7",
            "seed": 0,
            "subjects": 2,
        }
        assert h5.attrs["content_sha256"] == summary.checksum
        assert h5.attrs["face_size"] == 96
        assert h5.attrs["feratt_version"]


def test_corrupted_bank_is_detected(demo_bank, tmp_path):
    path, _ = demo_bank
    copy = tmp_path / "copy.h5"
    copy.write_bytes(path.read_bytes())
    with h5py.File(copy, "a") as h5:
        h5["images"][3, 10, 10, 0] ^= 0xFF
    with pytest.raises(FerattError, match="does not match its checksum"):
        FaceBank.open(copy)
    assert len(FaceBank.open(copy, verify=False)) == 14


def test_bank_is_byte_identical_for_any_number_of_jobs(small_demo_bank, tmp_path):
    one_path, one = small_demo_bank
    two = _demo(tmp_path / "two.h5", size=64, jobs=2)
    assert one.checksum == two.checksum
    assert one_path.read_bytes() == (tmp_path / "two.h5").read_bytes()


def _installed(name):
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "absent"


def test_demo_bank_checksum_pinned_for_the_locked_libraries(small_demo_bank):
    """A golden value: it holds under constraints.txt; a new release of a library it names may move it."""
    _, result = small_demo_bank
    versions = ", ".join(f"{name} {_installed(name)}" for name in LOCKED_LIBRARIES)
    assert result.checksum == LOCKED_DEMO_BANK_CHECKSUM, (
        f"the demo bank's bytes changed: with {versions}. If only a third-party release differs from "
        "constraints.txt, that library changed the pixels (see the README's 'Reproducible installs'); "
        "otherwise feratt's bank path did"
    )


def test_demo_bank_does_not_use_opencvs_warp(monkeypatch, tmp_path):
    """OpenCV's bilinear warp rounds differently from release to release; the bank path avoids it."""

    def refuse(*args, **kwargs):
        raise AssertionError("cv2.warpAffine called while building a face bank")

    monkeypatch.setattr(cv2, "warpAffine", refuse)
    assert sum(_demo(tmp_path / "b.h5", size=64, demo_subjects=1).per_class.values()) == 7


def _landmark_face(tmp_path):
    """A grey 'frame' with a bright face disc and 68 landmarks on it, tilted by 10 degrees."""
    image = np.full((240, 320), 40, np.uint8)
    cv2.ellipse(image, (160, 120), (60, 80), 10, 0, 360, 200, -1)
    t = np.linspace(0, np.pi, 17)
    points = np.zeros((68, 2))
    points[0:17] = np.stack([160 - 55 * np.cos(t), 120 + 70 * np.sin(t)], 1)
    points[17:27] = np.stack([np.linspace(110, 210, 10), np.full(10, 85)], 1)
    points[27:36] = np.stack([np.full(9, 160), np.linspace(100, 140, 9)], 1)
    points[36:42] = np.stack([np.linspace(120, 145, 6), np.full(6, 100)], 1)
    points[42:48] = np.stack([np.linspace(175, 200, 6), np.full(6, 100)], 1)
    points[48:68] = np.stack([np.linspace(135, 185, 20), np.full(20, 160)], 1)
    a = np.radians(10)
    rotation = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    points = (points - [160, 120]) @ rotation.T + [160, 120]
    Image.fromarray(image).save(tmp_path / "frame.png")
    np.savetxt(tmp_path / "frame_landmarks.txt", points, fmt="%.7e")
    return points


def test_landmarks_align_and_give_hull_mask(tmp_path):
    _landmark_face(tmp_path)
    entry = FaceEntry(
        str(tmp_path / "frame.png"), 0, "S001", "frame.png", str(tmp_path / "frame_landmarks.txt")
    )
    listing = FaceListing("ckplus", str(tmp_path), ("happy",), [entry])
    _write(tmp_path / "bank.h5", listing, BankOptions(size=128))
    bank = FaceBank.open(tmp_path / "bank.h5")
    assert bank.methods == ["landmarks"]
    mask = bank.masks[0] > 0
    # Levelled: the hull is symmetric about the vertical centre line.
    assert abs(int(mask[:, :64].sum()) - int(mask[:, 64:].sum())) < 0.03 * mask.sum()
    # Jaw to brows only: the top padding rows are outside, the face centre is inside.
    assert not mask[:8].any() and mask[64, 64]
    assert (bank.images[0][mask] > 150).mean() > 0.95  # the hull lies on the bright face


def test_mask_file_takes_precedence_and_bad_ones_are_skipped(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    (images / "happy").mkdir(parents=True)
    (masks / "happy").mkdir(parents=True)
    for name in ("a", "b"):
        Image.fromarray(np.full((100, 120, 3), 128, np.uint8)).save(images / "happy" / f"{name}.jpg")
    user_mask = np.zeros((100, 120), np.uint8)
    user_mask[20:80, 30:90] = 255
    Image.fromarray(user_mask).save(masks / "happy" / "a.png")
    Image.fromarray(user_mask[:50]).save(masks / "happy" / "b.png")  # wrong size
    entries = [FaceEntry(str(images / "happy" / f"{n}.jpg"), 0, n, f"happy/{n}.jpg") for n in ("a", "b")]
    listing = FaceListing("folders", str(images), ("happy",), entries)
    options = BankOptions(size=60, margin=0.0, masks_root=str(masks))
    summary = _write(tmp_path / "bank.h5", listing, options)
    bank = FaceBank.open(tmp_path / "bank.h5")
    assert bank.methods == ["file"] and bank.subjects == ["a"]
    assert (bank.masks[0] == 255).all()  # the 60x60 box fills the crop exactly
    assert [s.reason for s in summary.skipped] == [
        f"mask {masks / 'happy' / 'b.png'} is 120x50, image is 120x100"
    ]
    assert [s.path for s in bank.skipped] == [str(images / "happy" / "b.jpg")]


def test_failed_write_leaves_nothing_behind(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    entry = FaceEntry(str(tmp_path / "empty.png"), 0, "s", "empty.png")
    listing = FaceListing("folders", str(tmp_path), ("happy",), [entry])
    with pytest.raises(FerattError, match="none of the 1 faces"):
        _write(tmp_path / "bank.h5", listing)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.png"]


def test_written_files_get_ordinary_permissions(tmp_path):
    import os

    from feratt.atomic import atomic_write_bytes

    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "x.bin", b"abc")
    finally:
        os.umask(old)
    assert (tmp_path / "x.bin").read_bytes() == b"abc"
    assert (tmp_path / "x.bin").stat().st_mode & 0o777 == 0o644


def test_build_bank_reports_progress_and_log_lines(small_demo_bank, tmp_path):
    calls, lines = [], []
    result = _demo(
        tmp_path / "b.h5", size=64, progress=lambda done, total: calls.append((done, total)), log=lines.append
    )
    assert calls == [(done, 14) for done in range(15)]
    landmarks = "landmarks: dlib HOG detector and 68-point shape predictor (feratt[landmarks])"
    assert lines == ["detected format: demo", "14 faces listed in builtin:demo (7 classes)", landmarks]
    assert result.checksum == small_demo_bank[1].checksum
    lines.clear()
    _demo(tmp_path / "c.h5", size=64, format="demo", log=lines.append, mask_method="grabcut")
    assert lines == ["14 faces listed in builtin:demo (7 classes)"]  # no format detected, no landmarks


def test_build_bank_takes_a_request_and_field_overrides(small_demo_bank, tmp_path):
    request = BankRequest(
        "builtin:demo", tmp_path / "a.h5", size=64, demo_subjects=2, demo_per_class=1, jobs=1
    )
    result = build_bank(request, out=tmp_path / "b.h5")
    assert isinstance(result, BankResult) and result.path == tmp_path / "b.h5"
    assert result.checksum == small_demo_bank[1].checksum
    assert sorted(p.name for p in tmp_path.iterdir()) == [".b.h5.lock", "b.h5"]
    assert request.reader_options().demo_subjects == 2 and request.bank_options().size == 64
    with pytest.raises(FerattError, match="BankRequest has no field"):
        build_bank(request, sizes=64)


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"size": 16}, "size", "the face size must be 32 to 1024 pixels, got 16"),
        ({"margin": -0.1}, "margin", "the margin must be 0 to 2, got -0.1"),
        ({"forehead": 1.5}, "forehead", "the forehead raise must be 0 to 1, got 1.5"),
        (
            {"jobs": 0},
            "jobs",
            "the number of parallel workers must not be 0 (1 or more; -1: all cores, -2: all but one, ...)",
        ),
        ({"demo_subjects": 0}, "demo_subjects", "the demo set needs at least one subject"),
        ({"demo_per_class": 0}, "demo_per_class", "the demo set needs at least one face per class"),
        ({"masks_root": "no-masks"}, "masks_root", "masks folder no-masks does not exist"),
        (
            {"out": "missing-dir/bank.h5"},
            "out",
            "cannot write missing-dir/bank.h5: folder missing-dir does not exist",
        ),
        ({"out": "."}, "out", "cannot write .: . is a folder"),
        ({"preview": "nodir/x.png"}, "preview", "cannot write nodir/x.png: folder nodir does not exist"),
    ],
)
def test_bad_requests_name_their_field_and_write_nothing(tmp_path, monkeypatch, fields, field, message):
    monkeypatch.chdir(tmp_path)
    fields = {"out": "bank.h5", **fields}
    with pytest.raises(FerattError) as info:
        _demo(**fields)
    assert str(info.value) == message and info.value.field == field
    assert list(tmp_path.iterdir()) == []


def test_demo_bank_with_preview(tmp_path):
    out, sheet = tmp_path / "bank.h5", tmp_path / "sheet.png"
    result = _demo(out, preview=sheet, demo_subjects=3, size=96)
    assert result.preview == sheet and result.path == out
    assert result.per_class["happy"] == 3
    assert result.per_subject == {"D01": 7, "D02": 7, "D03": 7}
    assert result.skipped == []
    bank = FaceBank.open(out)
    assert len(bank) == 21 and sorted(set(bank.subjects)) == ["D01", "D02", "D03"]
    picture = np.asarray(Image.open(sheet))
    assert picture.shape[0] == 7 * (96 + 14) + 6 * 2  # a row per class
    assert sorted(p.name for p in tmp_path.iterdir()) == [".bank.h5.lock", "bank.h5", "sheet.png"]


def test_ensure_demo_bank_keeps_a_valid_bank(tmp_path):
    path = tmp_path / "cache" / "demo.h5"
    path.parent.mkdir()
    _demo(path, size=64)
    written = path.stat().st_mtime_ns
    assert ensure_demo_bank(path) == path
    assert path.stat().st_mtime_ns == written


def test_astronaut_in_a_class_folder(tmp_path):
    (tmp_path / "faces" / "happy").mkdir(parents=True)
    Image.fromarray(data.astronaut()).save(tmp_path / "faces" / "happy" / "eileen_1.png")
    lines = []
    result = build_bank(
        source=tmp_path / "faces", out=tmp_path / "bank.h5", preview=tmp_path / "a.png", log=lines.append
    )
    assert lines[0] == "detected format: folders"
    assert result.format == "folders" and result.per_method == {"landmarks": 1}
    bank = FaceBank.open(tmp_path / "bank.h5")
    assert bank.subjects == ["eileen"] and bank.classes == ("happy",)
    assert 0.3 < (bank.masks[0] > 0).mean() < 0.7
    grabcut = build_bank(source=tmp_path / "faces", out=tmp_path / "g.h5", mask_method="grabcut")
    assert grabcut.per_method == {"grabcut": 1}
    assert np.isnan(FaceBank.open(tmp_path / "g.h5").landmarks).all()


def test_bad_images_are_skipped_and_converted_ones_kept(tmp_path):
    root = tmp_path / "faces"
    (root / "happy").mkdir(parents=True)
    (root / "sadness").mkdir(parents=True)
    face = np.asarray(data.astronaut()[40:220, 130:310])
    Image.fromarray(face).save(root / "happy" / "s1_ok.png")
    Image.fromarray(face).convert("RGBA").save(root / "happy" / "s2_rgba.png")
    Image.fromarray(face).convert("P", palette=Image.Palette.ADAPTIVE).save(root / "happy" / "s3_pal.png")
    Image.fromarray(face).convert("CMYK").save(root / "sadness" / "s4_cmyk.jpg")
    grey16 = np.asarray(Image.fromarray(face).convert("L")).astype(np.uint16) * 257
    Image.fromarray(grey16).save(root / "sadness" / "s5_16.png")
    (root / "sadness" / "s6_empty.png").write_bytes(b"")
    full = (root / "happy" / "s1_ok.png").read_bytes()
    (root / "sadness" / "s7_cut.png").write_bytes(full[: len(full) // 3])
    (root / "sadness" / "s8_junk.jpg").write_bytes(b"GIF89a but not really")
    result = build_bank(source=root, out=tmp_path / "b.h5", jobs=2)
    assert sorted((s.path, s.reason) for s in result.skipped) == [
        (str(root / "sadness" / "s6_empty.png"), "empty file (0 bytes)"),
        (str(root / "sadness" / "s7_cut.png"), "truncated image"),
        (str(root / "sadness" / "s8_junk.jpg"), "not a readable image"),
    ]
    assert result.conversions == {"RGBA": 1, "palette": 1, "CMYK": 1, "16-bit": 1}
    bank = FaceBank.open(tmp_path / "b.h5")
    assert bank.subjects == ["s1", "s2", "s3", "s4", "s5"]
    with h5py.File(tmp_path / "b.h5") as h5:
        conversions = [c.decode() for c in h5["conversions"][()]]
        assert conversions == ["", "RGBA", "palette", "CMYK", "16-bit"]
        assert h5["grey"][()].tolist() == [False, False, False, False, True]
        reasons = sorted(r.decode() for r in h5["skipped/reason"][()])
    assert reasons == ["empty file (0 bytes)", "not a readable image", "truncated image"]


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    base = tmp_path_factory.mktemp("trees")
    return {
        "ckplus": make_ckplus_tree(base / "ckplus", n_subjects=3, size=(96, 80)),
        "ckplus-folders": make_ckplus_folders_tree(base / "ckplus-folders", n_subjects=2),
        "bu3dfe": make_bu3dfe_tree(base / "bu3dfe", n_subjects=2, intensities=(4,)),
        "jaffe": make_jaffe_tree(base / "jaffe", subjects=("KA", "YM"), per_expression=1),
        "folders": make_class_folders_tree(base / "folders", {"happy": 2, "sad": 1}),
        "csv": make_csv_tree(base / "csv", {"fear": 2, "surprise": 1}),
    }


@pytest.mark.parametrize("fmt", ["ckplus-folders", "bu3dfe", "jaffe", "folders", "csv"])
def test_build_bank_detects_each_layout(tmp_path, trees, fmt):
    tree = trees[fmt]
    lines = []
    result = build_bank(source=tree.root, out=tmp_path / "b.h5", size=64, jobs=1, log=lines.append)
    assert lines[0] == f"detected format: {fmt}" and result.format == fmt
    bank = FaceBank.open(tmp_path / "b.h5")
    expected = {file.relpath: file for file in tree.files if file.class_name is not None}
    assert len(bank) == len(expected)
    assert set(bank.subjects) == {file.subject for file in expected.values()}
    labelled = sorted(zip(bank.subjects, (bank.classes[i] for i in bank.labels), strict=True))
    assert labelled == sorted((f.subject, canonical_name(f.class_name)) for f in expected.values())
    assert bank.header.format == fmt


def test_ckplus_bank_uses_landmarks_and_counts_unlabelled(tmp_path, trees):
    tree = trees["ckplus"]
    lines = []
    result = build_bank(
        source=tree.root, out=tmp_path / "b.h5", size=64, neutral_subjects=2, log=lines.append
    )
    assert lines[0] == "detected format: ckplus"
    unlabelled = len(tree.unlabelled())
    assert f"{unlabelled} sequences without an emotion file (unlabelled), not used" in result.notes
    bank = FaceBank.open(tmp_path / "b.h5")
    assert len(bank) == len(tree.labelled()) + 2
    assert bank.classes == ("neutral", "anger", "contempt", "disgust", "fear", "happy", "sadness", "surprise")
    assert set(bank.methods) == {"landmarks"}
    assert (bank.labels == 0).sum() == 2
    assert len(json.loads(bank.header.protocol)["neutral_sequences"]) == 2


def test_unknown_emotion_code_writes_no_bank(tmp_path):
    tree = make_ckplus_tree(tmp_path / "ck", n_subjects=1, landmarks=False)
    write_emotion_file(Path(tree.labelled()[0].emotion_file), 9)
    with pytest.raises(
        FerattError, match=r"emotion code .* is not a CK\+ code; valid codes: 0 neutral, 1 anger, 2 contempt"
    ):
        build_bank(source=tree.root, out=tmp_path / "b.h5")
    assert not (tmp_path / "b.h5").exists()
