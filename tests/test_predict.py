"""`feratt predict` on image files and folders: probabilities, JSON, attention images, bad input."""

import json

import cv2
import numpy as np
import pytest
import torch
from cli_helpers import assert_user_error, render_tiny, run, train_tiny
from skimage import data

from feratt.experiments.predict import predict_images, prepare_image, read_rgb, unique_stems
from feratt.experiments.runs import load_trained


@pytest.fixture(scope="module")
def render(tmp_path_factory):
    """A render of 4 demo subjects, 2 samples a face at 64 px."""
    return render_tiny(tmp_path_factory.mktemp("predict-inputs"))


@pytest.fixture(scope="module")
def feratt_run(render, tmp_path_factory):
    return train_tiny(render, tmp_path_factory.mktemp("feratt") / "run", "feratt-rep-cls")


@pytest.fixture(scope="module")
def baseline_run(render, tmp_path_factory):
    return train_tiny(render, tmp_path_factory.mktemp("baseline") / "run", "baseline")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """astronaut.png (RGB) alone in one folder, and with a grey camera.png in another."""
    base = tmp_path_factory.mktemp("photos")
    single, pair = base / "single", base / "pair"
    single.mkdir()
    pair.mkdir()
    astronaut = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    cv2.imwrite(str(single / "astronaut.png"), astronaut)
    cv2.imwrite(str(pair / "astronaut.png"), astronaut)
    cv2.imwrite(str(pair / "camera.png"), data.camera())
    (pair / "notes.txt").write_text("not an image, and not listed")
    return single / "astronaut.png", pair


def _json(result):
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize("which", ["feratt_run", "baseline_run"])
def test_probabilities_sum_to_one_and_json_names_every_class(request, which, photos):
    run_dir = request.getfixturevalue(which)
    astronaut, _ = photos
    document = _json(run("predict", run_dir, astronaut, "--json", "--device", "cpu"))
    trained = load_trained(run_dir)
    assert document["method"] == trained.method and document["classes"] == trained.classes
    assert document["checkpoint"] == str(trained.checkpoint)
    [prediction] = document["predictions"]
    assert prediction["path"] == str(astronaut)
    assert list(prediction["probabilities"]) == trained.classes
    assert abs(sum(prediction["probabilities"].values()) - 1.0) < 1e-6
    probabilities = prediction["probabilities"]
    assert prediction["prediction"] == max(probabilities, key=probabilities.get)

    text = run("predict", run_dir, astronaut, "--device", "cpu")
    assert text.exit_code == 0, text.output
    [line] = text.output.strip().splitlines()
    top = prediction["prediction"]
    assert line.startswith(f"{astronaut}: {top} ({probabilities[top]:.3f})")
    ranked = sorted(probabilities, key=lambda c: -probabilities[c])
    shown = [part.split()[0] for part in line.split("  ", 1)[1].split(", ")]
    assert shown == ranked


def test_cli_matches_the_library(feratt_run, photos):
    astronaut, pair = photos
    document = _json(run("predict", feratt_run, astronaut, pair, "--json", "--device", "cpu"))
    paths = [astronaut, pair / "astronaut.png", pair / "camera.png"]
    assert [p["path"] for p in document["predictions"]] == [str(p) for p in paths]
    trained = load_trained(feratt_run)
    result = predict_images(trained, [read_rgb(p) for p in paths])
    assert result.probabilities.dtype == np.float64 and result.probabilities.shape == (3, 7)
    assert np.allclose(result.probabilities.sum(axis=1), 1.0, atol=1e-12)
    cli = np.array([list(p["probabilities"].values()) for p in document["predictions"]])
    np.testing.assert_allclose(cli, result.probabilities, rtol=0, atol=1e-9)
    assert [p["prediction"] for p in document["predictions"]] == result.labels
    assert result.attention.shape == (3, 64, 64, 3) and result.attention.dtype == np.uint8


def test_folder_of_two_images_and_other_checkpoint_forms(baseline_run, photos):
    _, pair = photos
    for checkpoint in (baseline_run, baseline_run / "fold-0", baseline_run / "fold-0" / "best.pt"):
        document = _json(run("predict", checkpoint, pair, "--json", "--device", "cpu"))
        assert [p["path"] for p in document["predictions"]] == [
            str(pair / "astronaut.png"),
            str(pair / "camera.png"),
        ]


def test_save_attention_writes_inputs_and_attention_at_the_input_size(feratt_run, photos, tmp_path):
    astronaut, pair = photos
    out = tmp_path / "attention"
    result = run("predict", feratt_run, astronaut, pair, "--save-attention", out, "--device", "cpu")
    assert result.exit_code == 0, result.output
    # Two inputs are named astronaut.png: the second gets a numeric suffix instead of overwriting.
    stems = ["astronaut", "astronaut-1", "camera"]
    expected = {f"{s}-{kind}.png" for s in stems for kind in ("input", "attention")}
    assert {p.name for p in out.iterdir()} == expected
    for name in expected:
        image = cv2.imread(str(out / name), cv2.IMREAD_UNCHANGED)
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    trained = load_trained(feratt_run)
    prepared = predict_images(trained, [read_rgb(astronaut)])
    saved = cv2.cvtColor(cv2.imread(str(out / "astronaut-attention.png")), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(saved, prepared.attention[0])
    saved_input = cv2.cvtColor(cv2.imread(str(out / "astronaut-input.png")), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(saved_input, prepare_image(read_rgb(astronaut), 64))


def test_baseline_has_no_attention_to_save(baseline_run, photos, tmp_path):
    astronaut, _ = photos
    result = run("predict", baseline_run, astronaut, "--save-attention", tmp_path / "att", "--device", "cpu")
    assert_user_error(result, "no attention image")
    assert not (tmp_path / "att").exists()


def test_unreadable_image_is_a_clear_error(feratt_run, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"this is not a PNG")
    assert_user_error(run("predict", feratt_run, bad, "--device", "cpu"), f"{bad}: not a readable image")


def test_checkpoint_of_another_version_is_a_clear_error(photos, tmp_path):
    old = tmp_path / "old.pt"
    torch.save({"checkpoint_version": 999}, old)
    result = run("predict", old, photos[0], "--device", "cpu")
    assert_user_error(result, "not a feratt checkpoint of this version")


def test_folder_without_images_is_a_clear_error(feratt_run, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no faces here")
    assert_user_error(run("predict", feratt_run, tmp_path / "empty", "--device", "cpu"), "holds no images")


def test_prepare_image_centre_crops_then_resizes():
    image = np.zeros((60, 100, 3), np.uint8)
    image[:, 20:80] = 200  # the centre square of a 60 x 100 image
    prepared = prepare_image(image, 32)
    assert prepared.shape == (32, 32, 3) and prepared.dtype == np.uint8
    assert (prepared == 200).all()
    grey = prepare_image(np.full((40, 40), 7, np.uint8), 40)
    assert grey.shape == (40, 40, 3) and (grey == 7).all()


def test_unique_stems_never_repeat():
    assert unique_stems(["a/x.png", "b/x.jpg", "c/x-1.png", "y.png"]) == ["x", "x-1", "x-1-1", "y"]
