"""Shards carry each sample's landmarks, moved by the sample's transform; shards without them still read."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
from cli_helpers import reseal, write_backgrounds, write_demo_bank

from feratt.artifacts.bank import FaceBank, read_faces
from feratt.artifacts.render import RenderSet
from feratt.artifacts.shard import OPTIONAL_SCHEMA, layout_problems, open_shard, schema_problems
from feratt.config.rendering import GeometryConfig, RenderConfig
from feratt.datasets.align import MIRROR_68
from feratt.renderer.inspect import verify_render
from feratt.renderer.render import render
from feratt.training.data import ShardStream, make_loader

SIZE = 64
EYES = {"right eye": slice(36, 42), "left eye": slice(42, 48)}
INNER_CORNERS = (39, 42)

#: The default affine geometry, and a perspective one (its matrices have a projective row).
GEOMETRIES = {"affine": GeometryConfig(), "perspective": GeometryConfig(perspective=0.08)}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """A demo bank of 2 subjects x 7 classes (some faces with landmarks, some without) and 2 backgrounds."""
    base = tmp_path_factory.mktemp("landmark-inputs")
    write_demo_bank(base / "bank.h5", subjects=2)
    write_backgrounds(base / "backgrounds", names=("coffee", "chelsea"))
    return base


@pytest.fixture(scope="module", params=list(GEOMETRIES))
def rendered(inputs, tmp_path_factory, request) -> Path:
    """A 64 px render of the bank, 3 samples a face, under one of GEOMETRIES."""
    out = tmp_path_factory.mktemp(f"landmark-render-{request.param}") / "render"
    config = RenderConfig(size=SIZE, geometry=GEOMETRIES[request.param])
    backgrounds = inputs / "backgrounds"
    result = render(
        bank=inputs / "bank.h5", render=out, backgrounds=backgrounds, config=config, per_face=3, jobs=1
    )
    assert result.complete
    return out


def shard_rows(out: Path) -> dict[str, np.ndarray]:
    """Every shard's datasets that these tests look at, concatenated over the shards in order."""
    names = ("images", "masks", "faces", "face_index", "matrices", "landmarks")
    parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for path in RenderSet(out).shard_files():
        with open_shard(path) as h5:
            assert layout_problems(h5, SIZE, 7) == []
            for name in names:
                parts[name].append(h5[name][()])
    return {name: np.concatenate(rows) for name, rows in parts.items()}


def projected(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """`points` (K, 2) under a 3x3 matrix, with the projective divide."""
    homogeneous = np.c_[points.astype(np.float64), np.ones(len(points))] @ matrix.T
    return homogeneous[:, :2] / homogeneous[:, 2:]


def inside(point: np.ndarray, border: float) -> bool:
    """Whether a sample-pixel point lies at least `border` pixels inside the frame."""
    return bool(np.all(point >= border) and np.all(point <= SIZE - 1 - border))


def blob_centre(point: np.ndarray, matrix: np.ndarray, side: int) -> np.ndarray:
    """Where OpenCV's warp puts a Gaussian spot drawn at `point` of a side x side bank crop: its centroid."""
    yy, xx = np.mgrid[:side, :side].astype(np.float64)
    spot = np.exp(-((xx - point[0]) ** 2 + (yy - point[1]) ** 2) / (2 * 1.5**2)).astype(np.float32)
    warped = cv2.warpPerspective(spot, matrix, (SIZE, SIZE), flags=cv2.INTER_LINEAR)
    oy, ox = np.mgrid[:SIZE, :SIZE]
    return np.array([(warped * ox).sum(), (warped * oy).sum()]) / warped.sum()


def source_order(matrix: np.ndarray) -> np.ndarray:
    """The bank point each stored point comes from: iBUG's mirror order where the sample is flipped."""
    flipped = np.linalg.det(matrix[:2, :2]) < 0
    return MIRROR_68 if flipped else np.arange(68)


def test_shards_hold_the_bank_landmarks_under_each_samples_matrix(inputs, rendered):
    bank = FaceBank.open(inputs / "bank.h5")
    rows = shard_rows(rendered)
    landmarks = rows["landmarks"]
    assert landmarks.dtype == np.float32 and landmarks.shape == (3 * len(bank), 68, 2)
    bank_points = bank.landmarks[rows["face_index"]]
    has_points = ~np.isnan(bank_points[:, 0, 0])
    # The demo bank has faces both ways, so both kinds of row are checked.
    assert 0 < has_points.sum() < len(has_points)
    assert np.isnan(landmarks[~has_points]).all()
    assert not np.isnan(landmarks[has_points]).any()
    flips = 0
    for i in np.flatnonzero(has_points):
        order = source_order(rows["matrices"][i])
        want = projected(bank_points[i][order], rows["matrices"][i])
        np.testing.assert_allclose(landmarks[i], want, atol=1e-3, err_msg=f"sample {i}")
        # Flipped or not, point 36 is the outer corner of the eye on the image's left, 45 on its right.
        assert landmarks[i, 36, 0] < landmarks[i, 45, 0] and landmarks[i, 0, 0] < landmarks[i, 16, 0]
        flips += int(order[0] != 0)
    assert flips > 0


def test_landmarks_follow_the_pixels_the_warp_moved(inputs, rendered):
    bank = FaceBank.open(inputs / "bank.h5")
    rows = shard_rows(rendered)
    checked = 0
    for i in np.flatnonzero(~np.isnan(bank.landmarks[rows["face_index"], 0, 0])):
        points = bank.landmarks[rows["face_index"][i]]
        order = source_order(rows["matrices"][i])
        for index in INNER_CORNERS:
            stored = rows["landmarks"][i, index]
            if inside(stored, 6):  # a spot cut by the frame edge has its centroid pulled inwards
                found = blob_centre(points[order[index]], rows["matrices"][i], bank.size)
                np.testing.assert_allclose(stored, found, atol=0.1, err_msg=f"sample {i} point {index}")
                checked += 1
    assert checked >= 20


def test_eye_landmarks_land_on_the_rendered_eyes(inputs, rendered):
    rows = shard_rows(rendered)
    with_points = np.flatnonzero(~np.isnan(rows["landmarks"][:, 0, 0]))
    checked = 0
    for i in with_points:
        mask, face = rows["masks"][i] > 0, rows["faces"][i].astype(np.float64).mean(axis=2)
        for name, eye in EYES.items():
            centre = rows["landmarks"][i, eye].mean(axis=0)
            if not inside(centre, 1):
                continue
            x, y = np.rint(centre).astype(int)
            assert mask[y, x], f"sample {i} {name} centre {centre} is off the face mask"
            # Demo eyes are dark pupils (and brows) on a light face: the eye is darker than the face.
            pupil = face[y - 1 : y + 2, x - 1 : x + 2].min()
            assert pupil < 0.7 * face[mask].mean(), f"sample {i} {name} centre {centre} is not on a pupil"
            checked += 1
        for index in INNER_CORNERS:
            corner = rows["landmarks"][i, index]
            if inside(corner, 0):
                x, y = np.rint(corner).astype(int)
                assert mask[y, x], f"sample {i} point {index} {corner} is off the face mask"
    assert checked >= 0.8 * 2 * len(with_points)


def test_a_render_with_landmarks_verifies(rendered):
    assert verify_render(rendered) == []


@pytest.fixture
def old_render(rendered, tmp_path) -> Path:
    """A copy of the render whose shards lack `landmarks`, as renders before it wrote them."""
    out = tmp_path / "old"
    shutil.copytree(rendered, out)
    for shard in RenderSet(out).shard_files():
        with h5py.File(shard, "r+") as h5:
            del h5["landmarks"]
        reseal(out, str(shard.relative_to(out)))
    return out


def test_shards_without_landmarks_verify_and_train(old_render):
    shards = RenderSet(old_render).shard_files()
    for shard in shards:
        with open_shard(shard) as h5:
            assert "landmarks" not in h5
            assert layout_problems(h5, SIZE, 7) == []
    assert verify_render(old_render) == []
    refs = RenderSet.open(old_render).shards(sorted(RenderSet.open(old_render).subjects))
    stream = ShardStream(refs, shuffle=True, verify=True)
    batch = next(iter(make_loader(stream, 8, 0)))
    assert tuple(batch["image"].shape) == (8, 3, SIZE, SIZE) and tuple(batch["label"].shape) == (8,)


@pytest.mark.parametrize(
    ("landmarks", "problem"),
    [
        (lambda n: np.zeros((n, 68, 2), np.float64), "dataset landmarks is float64"),
        (lambda n: np.zeros((n, 5, 2), np.float32), "dataset landmarks is float32 ({n}, 5, 2)"),
        (lambda n: np.zeros((n - 1, 68, 2), np.float32), "dataset landmarks is float32 ({m}, 68, 2)"),
    ],
)
def test_landmarks_of_the_wrong_type_or_shape_break_the_schema(rendered, tmp_path, landmarks, problem):
    shard = tmp_path / "shard.h5"
    shutil.copy(RenderSet(rendered).shard_files()[0], shard)
    with h5py.File(shard, "r+") as h5:
        n = len(h5["labels"])
        del h5["landmarks"]
        h5.create_dataset("landmarks", data=landmarks(n))
    assert [p for p in schema_problems(shard, SIZE, 7) if p.startswith(problem.format(n=n, m=n - 1))]


def test_a_bank_without_landmarks_gives_nan_rows(inputs, tmp_path):
    bank = tmp_path / "old-bank.h5"
    shutil.copy(inputs / "bank.h5", bank)
    with h5py.File(bank, "r+") as h5:
        del h5["landmarks"]
    images, masks, points, labels = read_faces(bank, [0, 3, 4])
    assert images.shape[0] == masks.shape[0] == 3 and len(labels) == 14
    assert points.shape == (3, 68, 2) and points.dtype == np.float32 and np.isnan(points).all()


def test_readme_shard_table_lists_the_optional_datasets():
    section = (Path(__file__).parents[1] / "README.md").read_text().split("### A shard, for someone", 1)[1]
    rows = dict(re.findall(r"^\| `(\w+)` \| (\(N[^)]*\) \w+) \|", section.split("\n#", 1)[0], re.MULTILINE))
    for name, (dtype, tail) in OPTIONAL_SCHEMA.items():
        assert rows.get(name) == f"(N, {', '.join(map(str, tail))}) {dtype}", name
