"""The face bank: crops, mask precedence, HDF5 layout, checksum, determinism and atomic writes."""

import json

import cv2
import h5py
import numpy as np
import pytest
from PIL import Image

from feratt.datasets.bank import BankOptions, build_faces, read_bank, write_bank
from feratt.datasets.demo import list_demo
from feratt.datasets.records import FaceEntry, FaceListing, ReaderOptions
from feratt.errors import FerattError


def _write(path, listing, options=None, jobs=1):
    options = options or BankOptions()
    return write_bank(path, listing, build_faces(listing, options, jobs=jobs), options)


@pytest.fixture(scope="module")
def demo_bank(tmp_path_factory):
    path = tmp_path_factory.mktemp("bank") / "demo.h5"
    listing = list_demo(ReaderOptions(demo_subjects=2, demo_per_class=1))
    summary = _write(path, listing, BankOptions(size=96))
    return path, summary


def test_demo_bank_contents(demo_bank):
    path, summary = demo_bank
    bank = read_bank(path)
    assert len(bank) == 14
    assert bank.images.shape == (14, 96, 96, 3) and bank.images.dtype == np.uint8
    assert bank.masks.shape == (14, 96, 96) and set(np.unique(bank.masks)) == {0, 255}
    assert bank.classes == ("neutral", "anger", "disgust", "fear", "happy", "sadness", "surprise")
    assert bank.labels.tolist() == list(range(7)) * 2
    assert bank.subjects == ["D01"] * 7 + ["D02"] * 7
    assert bank.sources[0] == "builtin:demo/D01/neutral/0"
    assert summary.per_class == dict.fromkeys(bank.classes, 2)
    assert summary.per_subject == {"D01": 7, "D02": 7}
    assert sum(summary.per_method.values()) == 14
    assert set(bank.methods) <= {"grabcut", "fallback"}
    # The crop is centred on the mask, whose box spans 1 / (1 + 2 x margin 0.2) of the crop.
    for mask in bank.masks:
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
        read_bank(copy)
    assert len(read_bank(copy, verify=False)) == 14


def test_bank_is_byte_identical_for_any_number_of_jobs(tmp_path):
    listing = list_demo(ReaderOptions(demo_subjects=2, demo_per_class=1))
    one = _write(tmp_path / "one.h5", listing, BankOptions(size=64), jobs=1)
    two = _write(tmp_path / "two.h5", listing, BankOptions(size=64), jobs=2)
    assert one.checksum == two.checksum
    assert (tmp_path / "one.h5").read_bytes() == (tmp_path / "two.h5").read_bytes()


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
    bank = read_bank(tmp_path / "bank.h5")
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
    bank = read_bank(tmp_path / "bank.h5")
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
