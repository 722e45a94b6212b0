"""Image and landmark reading: conversions and the reasons bad files are skipped."""

import numpy as np
import pytest
from PIL import Image

from feratt.datasets.imageio import read_image, read_landmarks
from feratt.errors import BadInputFile


def _grey_ramp(height=20, width=30):
    return (np.arange(height * width).reshape(height, width) % 256).astype(np.uint8)


def test_grey_and_rgb_are_read_as_is(tmp_path):
    grey = _grey_ramp()
    Image.fromarray(grey).save(tmp_path / "g.png")
    image, conversion = read_image(tmp_path / "g.png")
    np.testing.assert_array_equal(image, grey)
    assert conversion is None
    rgb = np.dstack([grey, 255 - grey, grey // 2])
    Image.fromarray(rgb).save(tmp_path / "c.bmp")
    image, conversion = read_image(tmp_path / "c.bmp")
    np.testing.assert_array_equal(image, rgb)
    assert conversion is None


def test_sixteen_bit_is_scaled_to_eight(tmp_path):
    values = np.array([[0, 257 * 100], [65535, 257 * 200]], np.uint16)
    Image.fromarray(values).save(tmp_path / "d.png")
    image, conversion = read_image(tmp_path / "d.png")
    assert conversion == "16-bit"
    np.testing.assert_array_equal(image, [[0, 100], [255, 200]])


def test_twelve_bit_data_keeps_its_contrast(tmp_path):
    values = np.array([[0, 4095], [2048, 1024]], np.uint16)
    Image.fromarray(values).save(tmp_path / "d.png")
    image, _ = read_image(tmp_path / "d.png")
    np.testing.assert_array_equal(image, [[0, 255], [128, 64]])


def test_rgba_palette_cmyk_are_converted(tmp_path):
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = 200
    rgb[4:, :, 2] = 50
    Image.fromarray(rgb).convert("RGBA").save(tmp_path / "a.png")
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "p.png")
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "k.jpg", quality=100)
    for name, expected in (("a.png", "RGBA"), ("p.png", "palette"), ("k.jpg", "CMYK")):
        image, conversion = read_image(tmp_path / name)
        assert conversion == expected
        assert image.shape == (8, 8, 3) and image.dtype == np.uint8
        assert abs(int(image[0, 0, 0]) - 200) <= 3, name


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"", "empty file (0 bytes)"), (b"this is not an image", "not a readable image")],
)
def test_bad_files_raise_with_reason(tmp_path, content, reason):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(BadInputFile) as info:
        read_image(path)
    assert info.value.reason == reason


def test_truncated_image_is_reported(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64), np.uint8)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(BadInputFile) as info:
        read_image(tmp_path / "cut.png")
    assert info.value.reason == "truncated image"


def test_landmarks_are_read_and_checked(tmp_path):
    points = np.arange(136, dtype=float).reshape(68, 2) * 1.5
    (tmp_path / "ok.txt").write_text("".join(f"   {x:.7e}   {y:.7e}\n" for x, y in points))
    np.testing.assert_allclose(read_landmarks(tmp_path / "ok.txt"), points)
    (tmp_path / "short.txt").write_text("1 2\n3 4\n")
    with pytest.raises(BadInputFile, match="holds 2 rows, expected 68"):
        read_landmarks(tmp_path / "short.txt")
