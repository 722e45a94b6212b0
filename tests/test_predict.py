"""Predictions on image files and folders: probabilities, JSON, attention images, bad input."""

import json
import re

import cv2
import numpy as np
import pytest
import torch
from cli_helpers import assert_user_error, render_tiny, run, train_tiny
from skimage import data

from feratt.codec import encode
from feratt.errors import FerattError
from feratt.inference.predict import predict
from feratt.inference.torch_model import predict_images, prepare_image, read_rgb, unique_stems
from feratt.training.checkpoints import load_trained


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
def test_probabilities_sum_to_one_and_name_every_class(request, which, photos):
    run_dir = request.getfixturevalue(which)
    astronaut, _ = photos
    result = predict(checkpoint=run_dir, images=[astronaut], device="cpu")
    trained = load_trained(run_dir)
    assert result.method == trained.method and result.classes == trained.classes
    assert result.checkpoint == trained.checkpoint
    [prediction] = result.predictions
    assert prediction.path == astronaut
    assert list(prediction.probabilities) == trained.classes
    assert abs(sum(prediction.probabilities.values()) - 1.0) < 1e-6
    probabilities = prediction.probabilities
    assert prediction.prediction == max(probabilities, key=probabilities.get)
    assert prediction.probability == probabilities[prediction.prediction]
    assert [name for name, _ in prediction.ranked()] == sorted(probabilities, key=lambda c: -probabilities[c])
    assert result.attention_written == []


@pytest.mark.parametrize("which", ["feratt_run", "baseline_run"])
def test_command_prints_json_or_one_line_per_image(request, which, photos):
    run_dir = request.getfixturevalue(which)
    astronaut, _ = photos
    document = _json(run("predict", run_dir, astronaut, "--json", "--no-detect", "--device", "cpu"))
    assert document == encode(predict(checkpoint=run_dir, images=[astronaut], detect=False, device="cpu"))
    names = ["checkpoint", "method", "fold", "epoch", "classes", "framing", "detector", "predictions"]
    assert list(document) == [*names, "no_face", "videos"]
    [prediction] = document["predictions"]
    assert prediction["path"] == str(astronaut)
    probabilities = prediction["probabilities"]

    text = run("predict", run_dir, astronaut, "--no-detect", "--device", "cpu")
    assert text.exit_code == 0, text.output
    [line] = text.output.strip().splitlines()
    top = prediction["prediction"]
    assert line.startswith(f"{astronaut}: {top} ({probabilities[top]:.3f})")
    ranked = sorted(probabilities, key=lambda c: -probabilities[c])
    shown = [part.split()[0] for part in line.split("  ", 1)[1].split(", ")]
    assert shown == ranked


def test_predict_matches_the_model_on_the_images(feratt_run, photos):
    astronaut, pair = photos
    document = encode(predict(checkpoint=feratt_run, images=[astronaut, pair], detect=False, device="cpu"))
    paths = [astronaut, pair / "astronaut.png", pair / "camera.png"]
    assert [p["path"] for p in document["predictions"]] == [str(p) for p in paths]
    trained = load_trained(feratt_run)
    result = predict_images(trained, [read_rgb(p) for p in paths])
    assert result.probabilities.dtype == np.float64 and result.probabilities.shape == (3, 7)
    assert np.allclose(result.probabilities.sum(axis=1), 1.0, atol=1e-12)
    cli = np.array([list(p["probabilities"].values()) for p in document["predictions"]])
    # predict runs one image a batch, predict_images all three at once: float32 sums differ in order.
    np.testing.assert_allclose(cli, result.probabilities, rtol=0, atol=1e-6)
    assert [p["prediction"] for p in document["predictions"]] == result.labels
    assert result.attention.shape == (3, 64, 64, 3) and result.attention.dtype == np.uint8


def test_folder_of_two_images_and_other_checkpoint_forms(baseline_run, photos):
    _, pair = photos
    for checkpoint in (baseline_run, baseline_run / "fold-0", baseline_run / "fold-0" / "best.pt"):
        result = predict(checkpoint=checkpoint, images=[pair], detect=False, device="cpu")
        assert [p.path for p in result.predictions] == [pair / "astronaut.png", pair / "camera.png"]


def test_save_attention_writes_inputs_and_attention_at_the_input_size(feratt_run, photos, tmp_path):
    astronaut, pair = photos
    out = tmp_path / "attention"
    result = predict(
        checkpoint=feratt_run, images=[astronaut, pair], save_attention=out, detect=False, device="cpu"
    )
    # Two inputs are named astronaut.png: the second gets a numeric suffix instead of overwriting.
    stems = ["astronaut", "astronaut-1", "camera"]
    expected = {f"{s}-{kind}.png" for s in stems for kind in ("input", "attention")}
    assert {p.name for p in out.iterdir()} == expected == {p.name for p in result.attention_written}
    options = ["--save-attention", tmp_path / "cli", "--no-detect", "--device", "cpu"]
    again = run("predict", feratt_run, astronaut, pair, *options)
    assert again.exit_code == 0, again.output
    assert again.output.splitlines()[-1] == f"wrote 6 images to {tmp_path / 'cli'}"
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
    with pytest.raises(FerattError, match=r"needs a FERAtt model.*no attention image") as error:
        predict(checkpoint=baseline_run, images=[astronaut], save_attention=tmp_path / "att", device="cpu")
    assert error.value.field == "save_attention"
    assert not (tmp_path / "att").exists()
    result = run("predict", baseline_run, astronaut, "--save-attention", tmp_path / "att", "--device", "cpu")
    assert_user_error(result, "--save-attention: saving attention images needs a FERAtt model")
    assert not (tmp_path / "att").exists()


def test_unreadable_image_is_a_clear_error(feratt_run, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"this is not a PNG")
    with pytest.raises(FerattError, match=re.escape(f"{bad}: not a readable image")):
        predict(checkpoint=feratt_run, images=[bad], device="cpu")
    assert_user_error(run("predict", feratt_run, bad, "--device", "cpu"), f"{bad}: not a readable image")


def test_checkpoint_of_another_version_is_a_clear_error(photos, tmp_path):
    old = tmp_path / "old.pt"
    torch.save({"checkpoint_version": 999}, old)
    with pytest.raises(FerattError, match="not a feratt checkpoint of this version"):
        predict(checkpoint=old, images=[photos[0]], device="cpu")


def test_folder_without_images_is_a_clear_error(feratt_run, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no faces here")
    with pytest.raises(FerattError, match="holds no images"):
        predict(checkpoint=feratt_run, images=[tmp_path / "empty"], device="cpu")


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
