"""Reading a face bank: the schema checked on open, metadata read eagerly, pixels and checksum streamed."""

import contextlib
import hashlib
import json
import pickle
import shutil
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest
from cli_helpers import assert_user_error, run, write_backgrounds

from feratt.artifacts.bank import BankFace, FaceBank
from feratt.artifacts.render import RenderSet
from feratt.artifacts.render_records import RenderIndex, RenderTotals
from feratt.codec import encode
from feratt.datasets.bank import write_faces
from feratt.datasets.faces import BankOptions, FaceResult
from feratt.datasets.records import FaceListing
from feratt.errors import FerattError
from feratt.jsonfile import write_json

CLASSES = ("neutral", "anger", "disgust", "fear", "happy", "sadness", "surprise")


def write_random_bank(path, faces: int, size: int = 64, seed: int = 0):
    """A bank of `faces` random-pixel faces, 10 subjects, written by the library's own writer."""
    rng = np.random.default_rng(seed)
    listing = FaceListing("folders", "synthetic", CLASSES, [])

    def results():
        for i in range(faces):
            mask = np.zeros((size, size), np.uint8)
            mask[size // 4 : -size // 4, size // 4 : -size // 4] = 255
            image = rng.integers(0, 256, (size, size, 3), np.uint8)
            face = BankFace(
                image, mask, i % len(CLASSES), f"S{i % 10:02d}", f"synthetic/{i}.png", "file", False, ""
            )
            yield FaceResult(face)

    return write_faces(path, listing, results(), BankOptions(size=size))


@pytest.fixture(scope="module")
def small_bank(tmp_path_factory):
    path = tmp_path_factory.mktemp("bank") / "small.h5"
    return path, write_random_bank(path, 30, size=32)


def _raw_checksum(h5) -> str:
    """The bank checksum recomputed from whatever the file holds, as a forger of a damaged bank would."""
    digest = hashlib.sha256(h5.attrs["class_names"].encode())
    subjects, sources = h5["subjects"].asstr()[()], h5["sources"].asstr()[()]
    for i in range(len(h5["labels"])):
        digest.update(np.asarray(h5["images"][i]).tobytes())
        digest.update(np.asarray(h5["masks"][i]).tobytes())
        digest.update(np.int16(h5["labels"][i]).tobytes())
        digest.update(subjects[i].encode() + b"\0")
        digest.update(sources[i].encode() + b"\0")
    if "landmarks" in h5:
        digest.update(np.asarray(h5["landmarks"][()], np.float32).tobytes())
    return digest.hexdigest()


def _replace(h5, name, data, **kwargs):
    del h5[name]
    h5.create_dataset(name, data=data, **kwargs)


def _some_points(faces, point):
    """Landmarks NaN but for face 3, whose 68 points are all `point` (x, y)."""
    points = np.full((faces, 68, 2), np.nan, np.float32)
    points[3] = point
    return points


def _strings(values):
    return np.array(values, dtype=object)


# Each damage keeps the checksum consistent where it still can be computed, so only the schema check
# stands between the damaged bank and a KeyError, JSONDecodeError or IndexError further on.
DAMAGES = {
    "no masks": (lambda h5: h5.__delitem__("masks"), "it has no masks dataset"),
    "no labels": (lambda h5: h5.__delitem__("labels"), "it has no labels dataset"),
    "no skipped files": (lambda h5: h5.__delitem__("skipped"), "it has no skipped/path dataset"),
    "garbage class_names": (
        lambda h5: h5.attrs.__setitem__("class_names", "{neutral, anger"),
        "class_names attribute is not a JSON list",
    ),
    "class_names not a list of names": (
        lambda h5: h5.attrs.__setitem__("class_names", json.dumps([1, 2, 3])),
        "class_names attribute is not a JSON list",
    ),
    "no class_names": (lambda h5: h5.attrs.__delitem__("class_names"), "lacks the attribute class_names"),
    "no checksum or size": (
        lambda h5: (h5.attrs.__delitem__("content_sha256"), h5.attrs.__delitem__("face_size")),
        "lacks the attributes content_sha256, face_size",
    ),
    "checksum not a digest": (
        lambda h5: h5.attrs.__setitem__("content_sha256", "abc"),
        "content_sha256 attribute is not a sha256",
    ),
    "newer schema": (lambda h5: h5.attrs.__setitem__("schema_version", 99), "its schema_version is 99"),
    "grey images": (
        lambda h5: _replace(h5, "images", h5["images"][()][..., 0]),
        "its images are 30 x 32 x 32 uint8, not N x 32 x 32 x 3 uint8",
    ),
    "float images": (
        lambda h5: _replace(h5, "images", h5["images"][()].astype(np.float32)),
        "its images are 30 x 32 x 32 x 3 float32",
    ),
    "images of another size": (
        lambda h5: h5.attrs.__setitem__("face_size", 48),
        "its images are 30 x 32 x 32 x 3 uint8, not N x 48 x 48 x 3 uint8",
    ),
    "masks of the wrong shape": (
        lambda h5: _replace(h5, "masks", h5["masks"][()][:, :16]),
        "its masks are 30 x 16 x 32 uint8",
    ),
    "fewer masks": (lambda h5: _replace(h5, "masks", h5["masks"][:29]), "it has 30 images but 29 masks"),
    "fewer labels": (lambda h5: _replace(h5, "labels", h5["labels"][:20]), "it has 30 images but 20 labels"),
    "more subjects": (
        lambda h5: _replace(h5, "subjects", _strings(["S00"] * 31), dtype=h5py.string_dtype()),
        "it has 30 images but 31 subjects",
    ),
    "fewer skip reasons": (
        lambda h5: _replace(h5, "skipped/reason", _strings(["x"]), dtype=h5py.string_dtype()),
        "it has 0 skipped/path but 1 skipped/reason",
    ),
    "label out of range": (
        lambda h5: h5["labels"].__setitem__(4, 7),
        "face 4 has label 7, outside the 7 classes",
    ),
    "negative label": (lambda h5: h5["labels"].__setitem__(0, -1), "face 0 has label -1"),
    "landmarks of the wrong shape": (
        lambda h5: _replace(h5, "landmarks", np.zeros((30, 5, 2), np.float32)),
        "its landmarks are 30 x 5 x 2 float32, not N x 68 x 2 float32",
    ),
    "fewer landmarks": (
        lambda h5: _replace(h5, "landmarks", np.zeros((29, 68, 2), np.float32)),
        "it has 30 images but 29 landmarks",
    ),
    "a face with some landmarks": (
        lambda h5: _replace(h5, "landmarks", _some_points(30, [2.0, np.nan])),
        "a face has only some landmarks",
    ),
    "landmarks far outside the crop": (
        lambda h5: _replace(h5, "landmarks", _some_points(30, [1e6, 1e6])),
        "its landmarks lie far outside the 32 px crops",
    ),
    "float labels": (
        lambda h5: _replace(h5, "labels", h5["labels"][()].astype(np.float32)),
        "its labels are not integers",
    ),
    "numeric sources": (
        lambda h5: _replace(h5, "sources", np.arange(30)),
        "its sources dataset does not hold",
    ),
    "sources not UTF-8": (
        lambda h5: _replace(
            h5, "sources", np.array([b"\xff\xfe"] * 30, dtype=object), dtype=h5py.string_dtype()
        ),
        "its sources dataset holds strings that are not UTF-8",
    ),
}


def damaged_copy(bank_path, folder, damage: str):
    """A copy of the bank with one damage; its checksum recomputed where the damage allows."""
    copy = folder / f"{damage.replace(' ', '-')}.h5"
    shutil.copyfile(bank_path, copy)
    with h5py.File(copy, "a") as h5:
        DAMAGES[damage][0](h5)
        stated = h5.attrs.get("content_sha256")
        with contextlib.suppress(Exception):  # where the damage makes it uncomputable, leave it
            if isinstance(stated, str) and len(stated) == 64:
                h5.attrs["content_sha256"] = _raw_checksum(h5)
    return copy


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_a_damaged_bank_is_named_on_open(small_bank, tmp_path, damage):
    copy = damaged_copy(small_bank[0], tmp_path, damage)
    for verify in (True, False):
        with pytest.raises(FerattError) as caught:
            FaceBank.open(copy, verify=verify)
        message = str(caught.value)
        assert message.startswith(f"{copy} is not a valid feratt face bank: "), message
        assert DAMAGES[damage][1] in message and "\n" not in message


def test_a_damaged_bank_stops_render_with_one_line(small_bank, tmp_path):
    copy = damaged_copy(small_bank[0], tmp_path, "no masks")
    backgrounds = write_backgrounds(tmp_path / "backgrounds", names=("coffee",))
    before = hashlib.sha256(copy.read_bytes()).hexdigest()
    args = ("render", copy, "--out", tmp_path / "out", "--backgrounds", backgrounds, "--jobs", 1)
    result = run(*args)
    assert_user_error(result, "not a valid feratt face bank: it has no masks dataset")
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and errors[0].startswith(f"Error: {copy} is not a valid feratt face bank")
    assert hashlib.sha256(copy.read_bytes()).hexdigest() == before


def test_a_damaged_bank_stops_the_real_test(small_bank, tmp_path):
    from feratt.training.realtest import load_real_faces

    copy = damaged_copy(small_bank[0], tmp_path, "label out of range")
    with pytest.raises(FerattError, match="not a valid feratt face bank: face 4 has label 7"):
        load_real_faces(copy, ["S00"], RenderSet(tmp_path))


def test_the_real_test_reads_only_its_subjects_pixels(small_bank, monkeypatch, tmp_path):
    from feratt.artifacts.bank import FaceBank
    from feratt.config.rendering import RenderConfig
    from feratt.training.realtest import load_real_faces

    path, summary = small_bank
    asked = []
    iter_faces = FaceBank.iter_faces

    def recording(self, indices=None):
        asked.append(None if indices is None else list(indices))
        return iter_faces(self, indices)

    monkeypatch.setattr(FaceBank, "iter_faces", recording)
    index = RenderIndex(
        schema_version=1, classes=CLASSES, subjects={"S03": 3}, totals=RenderTotals(3, 1, 1, {}),
        config_sha256="", bank_sha256=summary.checksum, render_config=RenderConfig(size=32),
    )  # fmt: skip
    write_json(tmp_path / "index.json", encode(index))
    faces, _ = load_real_faces(path, ["S03"], RenderSet.open(tmp_path))
    assert asked == [None, [3, 13, 23]]  # the streamed checksum, then the test subject's faces only
    assert len(faces) == 3 and faces.subjects == ("S03",) * 3


def test_another_hdf5_file_is_not_a_bank(tmp_path):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as h5:
        h5["x"] = [1]
    with pytest.raises(FerattError, match="is not a feratt face bank"):
        FaceBank.open(other)


# Pixels on demand.


def test_pixels_are_read_on_demand_and_match_the_file(small_bank):
    path, _ = small_bank
    bank = FaceBank.open(path)
    with h5py.File(path, "r") as h5:
        images, masks = h5["images"][()], h5["masks"][()]
    assert bank.images.shape == images.shape and bank.images.dtype == np.uint8 and len(bank.masks) == 30
    np.testing.assert_array_equal(bank.images[3], images[3])
    np.testing.assert_array_equal(bank.masks[-1], masks[-1])
    np.testing.assert_array_equal(bank.images[[9, 2, 9, 28]], images[[9, 2, 9, 28]])
    np.testing.assert_array_equal(bank.images[5:12:3], images[5:12:3])
    np.testing.assert_array_equal(bank.images[4, 10, :, 1], images[4, 10, :, 1])
    np.testing.assert_array_equal(bank.masks[bank.labels == 2], masks[bank.labels == 2])
    np.testing.assert_array_equal(np.asarray(bank.images), images)
    np.testing.assert_array_equal(np.stack(list(bank.masks)), masks)
    picked = [17, 3, 4, 5, 17, 29]
    got = list(bank.iter_faces(picked))
    assert [i for i, _, _ in got] == picked
    np.testing.assert_array_equal(np.stack([image for _, image, _ in got]), images[picked])
    np.testing.assert_array_equal(np.stack([mask for _, _, mask in got]), masks[picked])
    with pytest.raises(IndexError):
        bank.images[30]


def test_a_bank_holds_no_open_file_and_pickles(small_bank):
    def open_files() -> int:
        return h5py.h5f.get_obj_count(h5py.h5f.OBJ_ALL, h5py.h5f.OBJ_FILE)

    before = open_files()
    bank = FaceBank.open(small_bank[0])
    bank.images[0]
    list(bank.iter_faces([1, 2]))
    assert open_files() == before, "a worker forked now must not inherit an open HDF5 file"
    copy = pickle.loads(pickle.dumps(bank))
    np.testing.assert_array_equal(copy.images[7], bank.images[7])


def test_the_streamed_checksum_is_the_writers(tmp_path):
    result = write_random_bank(tmp_path / "bank.h5", 700, size=32)  # 256 faces a block: 3 blocks
    bank = FaceBank.open(tmp_path / "bank.h5")
    assert bank.content_checksum() == result.checksum == bank.checksum
    with h5py.File(tmp_path / "bank.h5", "r") as h5:
        assert _raw_checksum(h5) == result.checksum  # the checksum of the whole bank read at once


def test_a_corrupted_block_is_found_by_the_streamed_checksum(tmp_path):
    write_random_bank(tmp_path / "bank.h5", 700, size=32)
    with h5py.File(tmp_path / "bank.h5", "a") as h5:
        h5["masks"][650, 3, 3] ^= 0xFF
    with pytest.raises(FerattError, match="does not match its checksum"):
        FaceBank.open(tmp_path / "bank.h5")


# Memory: opening and verifying grows with the metadata, not the pixels.

_PEAK_PROBE = textwrap.dedent(
    """
    import sys, tracemalloc
    from feratt.artifacts.bank import FaceBank
    FaceBank.open(sys.argv[1])  # warm up: imports and caches
    for path in sys.argv[2:]:
        tracemalloc.start()
        bank = FaceBank.open(path)
        print(tracemalloc.get_traced_memory()[1], len(bank))
        tracemalloc.stop()
        del bank
    """
)


def test_opening_a_bank_does_not_load_its_pixels(tmp_path):
    sizes = (200, 2000)
    for faces in sizes:
        write_random_bank(tmp_path / f"bank-{faces}.h5", faces, size=64)
    paths = [str(tmp_path / f"bank-{faces}.h5") for faces in sizes]
    probe = subprocess.run(
        [sys.executable, "-c", _PEAK_PROBE, paths[0], *paths], capture_output=True, text=True, check=True
    )
    peaks = {int(faces): int(peak) for peak, faces in (line.split() for line in probe.stdout.splitlines())}
    pixel_bytes = 2000 * 64 * 64 * 4  # images and masks of the larger bank: 32.8 MB
    assert peaks[2000] < 3 * peaks[200], peaks
    assert peaks[2000] < pixel_bytes / 4, peaks
