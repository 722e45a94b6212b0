"""Background sources (COCO, folder, embedded), decoding, and square crops."""

import json
import os

import numpy as np
import pytest
from fixture_trees import make_coco_tree, photo_array, write_photo_jpeg
from PIL import Image

from feratt.errors import BadInputFile, FerattError
from feratt.renderer.backgrounds import (
    EMBEDDED_PHOTOS,
    Background,
    CropParams,
    apply_crop,
    coco_backgrounds,
    decode_background,
    embedded_backgrounds,
    folder_backgrounds,
    sample_crop,
)


def _ids(background_set):
    return [background.id for background in background_set.backgrounds]


def test_coco_default_drops_people_missing_and_empty_files(tmp_path, capsys):
    annotations, images_dir = make_coco_tree(tmp_path)
    result = coco_backgrounds(annotations, images_dir)
    assert capsys.readouterr().out == ""  # pycocotools' chatter is silenced
    assert result.kind == "coco" and result.source == annotations
    assert _ids(result) == ["1", "3", "4", "5", "8", "10"]  # numeric order, not string order
    assert result.excluded == {"has person": 2, "file missing": 1, "empty file (0 bytes)": 1}
    assert result.skipped == []
    first = result.backgrounds[0]
    assert first == Background("1", os.path.join(images_dir, "000000000001.jpg"), 640, 480)
    lines = result.report_lines()
    assert lines[0] == f"coco backgrounds from {annotations}: kept 6 of 10 images"
    assert lines[1:] == [
        "left out 2: has person",
        "left out 1: empty file (0 bytes)",
        "left out 1: file missing",
    ]


def test_coco_min_side_uses_the_json_sizes(tmp_path):
    annotations, images_dir = make_coco_tree(tmp_path)
    result = coco_backgrounds(annotations, images_dir, min_side=256)
    assert _ids(result) == ["1", "3", "4", "8", "10"]
    assert result.excluded["smaller than 256 px"] == 1
    # 427 is the shorter side of image 4 and image 9: both pass at 427, image 4 goes at 428.
    assert "4" not in _ids(coco_backgrounds(annotations, images_dir, min_side=428))


def test_coco_include_and_exclude_categories(tmp_path):
    annotations, images_dir = make_coco_tree(tmp_path)
    cats = coco_backgrounds(annotations, images_dir, include_categories=("cat",))
    assert _ids(cats) == ["1", "5", "10"]
    assert cats.excluded == {"has person": 2, "has none of cat": 4, "file missing": 1}
    no_filter = coco_backgrounds(annotations, images_dir, exclude_categories=())
    assert _ids(no_filter) == ["1", "2", "3", "4", "5", "8", "9", "10"]
    # An image with a person and a dog counts under the first excluded category that matches.
    both = coco_backgrounds(annotations, images_dir, exclude_categories=("person", "dog"))
    assert _ids(both) == ["1", "4", "5"]
    assert both.excluded == {"has person": 2, "has dog": 3, "file missing": 1, "empty file (0 bytes)": 1}
    people = coco_backgrounds(annotations, images_dir, exclude_categories="dog", include_categories="person")
    assert _ids(people) == ["9"]


def test_coco_unknown_category_lists_the_valid_names(tmp_path):
    annotations, images_dir = make_coco_tree(tmp_path)
    with pytest.raises(FerattError, match=r"unknown COCO category persn .*valid names: cat, dog, person$"):
        coco_backgrounds(annotations, images_dir, exclude_categories=("persn",))
    with pytest.raises(FerattError, match=r"among the included categories") as caught:
        coco_backgrounds(annotations, images_dir, include_categories=("zebra",))
    assert caught.value.field == "include_categories"
    with pytest.raises(FerattError, match=r"both included and excluded"):
        coco_backgrounds(annotations, images_dir, include_categories=("person",))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("this is not json", "not valid JSON"),
        ("[1, 2]", "top level is not a JSON object"),
        (json.dumps({"images": [], "categories": []}), 'no "annotations" list'),
        (json.dumps({"images": [{"id": 1}], "categories": [], "annotations": []}), r"images\[0\]"),
        (
            json.dumps({"images": [], "categories": [], "annotations": [{"image_id": 1}]}),
            r"annotations\[0\]",
        ),
    ],
)
def test_not_coco_json_is_one_clear_line(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(FerattError, match=message) as caught:
        coco_backgrounds(str(path), str(tmp_path))
    assert "\n" not in str(caught.value)
    with pytest.raises(FerattError, match="does not exist"):
        coco_backgrounds(str(tmp_path / "absent.json"), str(tmp_path))


def test_nothing_left_after_filtering_is_an_error_with_counts(tmp_path):
    annotations, images_dir = make_coco_tree(tmp_path)
    with pytest.raises(FerattError) as caught:
        coco_backgrounds(annotations, images_dir, min_side=1000)
    assert str(caught.value) == (
        "no background image left after filtering: 0 of 10 kept (has person: 2, smaller than 1000 px: 8)"
    )


def test_folder_backgrounds_recurse_and_skip_unreadable_files(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / ".cache").mkdir()
    write_photo_jpeg(tmp_path / "b.jpg", 96, 80)
    Image.fromarray(photo_array(60, 40)).save(tmp_path / "sub" / "a.PNG")
    Image.fromarray(photo_array(30, 20)).save(tmp_path / "sub" / "tiny.webp")
    write_photo_jpeg(tmp_path / ".hidden.jpg")
    write_photo_jpeg(tmp_path / ".cache" / "c.jpg")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "broken.jpg").write_bytes(b"garbage, not a JPEG")
    (tmp_path / "empty.tif").write_bytes(b"")
    result = folder_backgrounds(str(tmp_path), min_side=32)
    assert result.kind == "folder"
    assert [(b.id, b.width, b.height) for b in result.backgrounds] == [
        ("b.jpg", 96, 80),
        ("sub/a.PNG", 60, 40),
    ]
    assert result.backgrounds[1].path == os.path.join(str(tmp_path), "sub/a.PNG")
    assert result.excluded == {"smaller than 32 px": 1}
    assert result.skipped == [
        (os.path.join(str(tmp_path), "broken.jpg"), "not a readable image"),
        (os.path.join(str(tmp_path), "empty.tif"), "empty file (0 bytes)"),
    ]
    assert result.report_lines()[0].endswith("kept 2 of 5 images")
    with pytest.raises(FerattError, match="no background image left"):
        folder_backgrounds(str(tmp_path), min_side=500)
    (tmp_path / "none").mkdir()
    with pytest.raises(FerattError, match="holds no image file"):
        folder_backgrounds(str(tmp_path / "none"))
    with pytest.raises(FerattError, match="does not exist"):
        folder_backgrounds(str(tmp_path / "absent"))


def test_embedded_backgrounds_are_cached_once(tmp_path):
    cache = tmp_path / "cache"
    first = embedded_backgrounds(str(cache))
    assert first.kind == "embedded"
    names = [os.path.basename(b.path) for b in first.backgrounds]
    assert len(names) >= 5
    for unwanted in ("astronaut", "camera", "page", "text", "coins", "horse", "logo", "retina", "cell"):
        assert f"{unwanted}.jpg" not in names
    assert set(names) <= {f"{name}.jpg" for name, _ in EMBEDDED_PHOTOS}
    document = json.loads((cache / "annotations.json").read_text())
    assert document["annotations"] == [] and {"id": 1, "name": "person"} in document["categories"]
    mtimes = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}
    second = embedded_backgrounds(str(cache))
    assert second == first
    assert {p.name: p.stat().st_mtime_ns for p in cache.iterdir()} == mtimes
    image = decode_background(first.backgrounds[0].path)
    assert image.shape == (first.backgrounds[0].height, first.backgrounds[0].width, 3)
    # An incomplete cache is rebuilt.
    os.remove(first.backgrounds[-1].path)
    assert embedded_backgrounds(str(cache)) == first
    assert os.path.getsize(first.backgrounds[-1].path) > 0


def test_decode_background_reads_rgb_and_reduces_jpegs(tmp_path):
    rgb = photo_array(320, 260)
    Image.fromarray(rgb).save(tmp_path / "p.png")
    np.testing.assert_array_equal(decode_background(str(tmp_path / "p.png")), rgb)
    Image.fromarray(rgb[:, :, 0]).save(tmp_path / "g.png")
    grey = decode_background(str(tmp_path / "g.png"), max_side=10)  # PNGs always decode at full size
    assert grey.shape == (260, 320, 3) and grey.dtype == np.uint8
    np.testing.assert_array_equal(grey[:, :, 2], rgb[:, :, 0])
    np.testing.assert_array_equal(grey[:, :, 0], grey[:, :, 1])
    jpeg = tmp_path / "p.jpg"
    Image.fromarray(rgb).save(jpeg, quality=95)
    full = decode_background(str(jpeg))
    assert full.shape == (260, 320, 3)
    with Image.open(jpeg) as reference:
        assert np.abs(full.astype(int) - np.asarray(reference)).mean() < 1
    assert decode_background(str(jpeg), max_side=260).shape == (260, 320, 3)
    assert decode_background(str(jpeg), max_side=130).shape == (130, 160, 3)  # 1/2
    assert decode_background(str(jpeg), max_side=100).shape == (130, 160, 3)  # 1/4 would leave 65
    assert decode_background(str(jpeg), max_side=65).shape == (65, 80, 3)  # 1/4
    assert decode_background(str(jpeg), max_side=1).shape == (33, 40, 3)  # 1/8, rounded up
    # Bytes appended after the end-of-image marker do not make a JPEG truncated.
    (tmp_path / "tail.jpg").write_bytes(jpeg.read_bytes() + b"appended trailer")
    np.testing.assert_array_equal(decode_background(str(tmp_path / "tail.jpg")), full)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: p.write_bytes(b""), "empty file (0 bytes)"),
        (lambda p: p.write_bytes(b"\xff\xd8\xff" + b"\x00" * 50), "corrupt JPEG header"),
        (lambda p: p.write_bytes(b"not an image at all"), "not a readable image"),
    ],
)
def test_decode_background_rejects_bad_files(tmp_path, make, reason):
    path = tmp_path / "bad.jpg"
    make(path)
    with pytest.raises(BadInputFile) as caught:
        decode_background(str(path))
    assert caught.value.reason == reason and caught.value.path == str(path)


def test_decode_background_rejects_truncated_files(tmp_path):
    write_photo_jpeg(tmp_path / "t.jpg", 200, 150)
    data = (tmp_path / "t.jpg").read_bytes()
    (tmp_path / "t.jpg").write_bytes(data[: len(data) - 400])
    Image.fromarray(photo_array(200, 150)).save(tmp_path / "t.png")
    data = (tmp_path / "t.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    for name in ("t.jpg", "t.png"):
        with pytest.raises(BadInputFile, match="truncated"):
            decode_background(str(tmp_path / name))
    with pytest.raises(BadInputFile, match="cannot read"):
        decode_background(str(tmp_path / "absent.jpg"))


def test_sample_crop_stays_inside_and_is_reproducible():
    first = [sample_crop(480, 640, (0.5, 0.9), np.random.default_rng(7)) for _ in range(2)]
    assert first[0] == first[1]
    rng = np.random.default_rng(3)
    crops = [sample_crop(300, 200, (0.25, 1.0), rng) for _ in range(500)]
    for crop in crops:
        assert 50 <= crop.side <= 200
        assert crop.x >= 0 and crop.x + crop.side <= 200
        assert crop.y >= 0 and crop.y + crop.side <= 300
    assert crops[0] != crops[1]
    whole = sample_crop(300, 200, (1.0, 1.0), rng)
    assert whole.side == 200 and whole.x == 0
    with pytest.raises(ValueError):
        sample_crop(300, 200, (0.0, 1.0), rng)


def _gradient(height=100, width=160):
    image = np.zeros((height, width, 3), np.uint8)
    image[:, :, 0] = (np.arange(width) % 64 * 4)[None, :]
    image[:, :, 1] = (np.arange(height) * 2)[:, None]
    image[:, :, 2] = 99
    return image


def test_apply_crop_returns_the_expected_pixels():
    image = _gradient()
    np.testing.assert_array_equal(apply_crop(image, CropParams(10, 20, 50), 50), image[20:70, 10:60])
    # Shrinking by 2: each output pixel is the mean of a 2x2 block.
    half = apply_crop(image, CropParams(0, 36, 64), 32)
    assert half.shape == (32, 32, 3) and half.dtype == np.uint8
    np.testing.assert_array_equal(half[0, :4, 0], [2, 10, 18, 26])
    np.testing.assert_array_equal(half[:4, 0, 1], [73, 77, 81, 85])
    assert (half[:, :, 2] == 99).all()
    # Shrinking by 1.5 keeps the mean of a linear ramp.
    third = apply_crop(image, CropParams(0, 0, 60), 40)
    assert abs(float(third[:, :, 0].mean()) - float(image[:60, :60, 0].mean())) < 0.6
    # Growing by 2 samples between pixels: half-way values along the ramp.
    double = apply_crop(image, CropParams(0, 0, 50), 100)
    np.testing.assert_array_equal(double[0, :6, 0], [0, 1, 3, 5, 7, 9])
    # A sub-pixel shift of half a pixel averages neighbours.
    shifted = apply_crop(image, CropParams(0.5, 0, 20), 20)
    np.testing.assert_array_equal(shifted[0, :5, 0], [2, 6, 10, 14, 18])
    with pytest.raises(ValueError, match="does not lie inside"):
        apply_crop(image, CropParams(120, 0, 50), 32)
