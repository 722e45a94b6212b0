"""`feratt predict` on photos: every face found, framed as training did, classified; and bad input."""

import json
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from cli_helpers import assert_user_error, run, write_demo_bank
from model_helpers import DEMO_FRAMING, group_scene, untrained_checkpoint, write_rgb
from skimage import data

from feratt.codec import encode
from feratt.config.framing import Framing
from feratt.datasets.detect import find_faces
from feratt.errors import FerattError
from feratt.inference.backends import open_model
from feratt.inference.crops import frame_detection, model_input
from feratt.inference.predict import predict


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    base = tmp_path_factory.mktemp("models")
    return {
        "feratt": untrained_checkpoint(base / "feratt.pt", "feratt-cls"),
        "baseline": untrained_checkpoint(base / "baseline.pt", "baseline"),
        "old": untrained_checkpoint(base / "old.pt", "feratt-cls", framing=None),
    }


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    base = tmp_path_factory.mktemp("photos")
    return {
        "group": write_rgb(base / "group.png", group_scene().image),
        "astronaut": write_rgb(base / "astronaut.png", data.astronaut()),
        "empty": write_rgb(base / "coffee.png", data.coffee()),
    }


def test_every_face_of_a_group_photo_is_framed_and_classified(models, photos):
    result = predict(checkpoint=models["feratt"], images=[photos["group"]], device="cpu")
    assert [p.face for p in result.predictions] == [0, 1, 2]
    scene = group_scene()
    boxes = find_faces(scene.image)
    assert [p.box for p in result.predictions] == [b.as_list() for b in boxes]
    model = open_model(models["feratt"], device="cpu")
    inputs = np.stack([model_input(frame_detection(scene.image, b, DEMO_FRAMING).image, 64) for b in boxes])
    expected, _ = model(inputs)
    got = np.array([list(p.probabilities.values()) for p in result.predictions])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    assert len({p.prediction for p in result.predictions}) >= 1 and got.max() > 0.5  # far from uniform
    assert result.framing == DEMO_FRAMING and result.no_face == []


def test_table_and_json_name_each_face(models, photos):
    text = run("predict", models["baseline"], photos["group"], photos["empty"], "--device", "cpu")
    assert text.exit_code == 0, text.output
    lines = text.output.strip().splitlines()
    assert len(lines) == 4 and lines[-1] == f"{photos['empty']}: no face found"
    assert lines[0].startswith(f"{photos['group']} face 0 at ")
    document = json.loads(
        run("predict", models["baseline"], photos["group"], "--json", "--device", "cpu").stdout
    )
    names = ["checkpoint", "method", "fold", "epoch", "classes", "framing", "detector", "predictions"]
    assert list(document) == [*names, "no_face", "videos"]
    assert [p["face"] for p in document["predictions"]] == [0, 1, 2]
    first = document["predictions"][0]
    assert list(first) == ["path", "face", "box", "probabilities", "prediction"] and len(first["box"]) == 4
    assert document["epoch"] == 3 and document["method"] == "baseline"


def test_annotate_draws_a_box_per_face(models, photos, tmp_path):
    out = tmp_path / "annotated"
    result = predict(checkpoint=models["feratt"], images=[photos["group"]], annotate=out, device="cpu")
    assert result.annotated == [out / "group.png"]
    drawn = cv2.cvtColor(cv2.imread(str(out / "group.png")), cv2.COLOR_BGR2RGB)
    original = group_scene().image
    assert drawn.shape == original.shape
    for prediction in result.predictions:  # each box's outline is drawn over the photo
        x, y, _, h = (round(v) for v in prediction.box)
        assert (drawn[y + h // 2, x] != original[y + h // 2, x]).any()
    inside = slice(300, 340), slice(300, 340)  # the cup, far from every face, is left alone
    np.testing.assert_array_equal(drawn[inside], original[inside])
    again = run("predict", models["feratt"], photos["group"], "--annotate", out, "--device", "cpu")
    assert_user_error(again, f"--overwrite: {out / 'group.png'} exists already")
    replaced = run(
        "predict", models["feratt"], photos["group"], "--annotate", out, "--overwrite", "--device", "cpu"
    )
    assert replaced.exit_code == 0 and "wrote 1 annotated files to" in replaced.output


def test_save_attention_keeps_working_per_face(models, photos, tmp_path):
    result = predict(
        checkpoint=models["feratt"], images=[photos["group"]], save_attention=tmp_path / "att", device="cpu"
    )
    names = {p.name for p in (tmp_path / "att").iterdir()}
    assert names == {f"group-face{k}-{kind}.png" for k in range(3) for kind in ("input", "attention")}
    assert len(result.attention_written) == 6
    attention = cv2.imread(str(tmp_path / "att" / "group-face0-attention.png"))
    assert attention.shape == (64, 64, 3)


def test_no_detect_keeps_the_whole_image_behaviour(models, photos):
    result = predict(checkpoint=models["feratt"], images=[photos["astronaut"]], detect=False, device="cpu")
    [prediction] = result.predictions
    assert prediction.box is None and result.framing is None and result.detector is None
    text = run("predict", models["feratt"], photos["astronaut"], "--no-detect", "--device", "cpu")
    [line] = text.output.strip().splitlines()
    assert line.startswith(f"{photos['astronaut']}: {prediction.prediction} ({prediction.probability:.3f})")


def test_an_image_without_a_face_is_not_an_error_but_all_without_is(models, photos):
    result = predict(
        checkpoint=models["baseline"], images=[photos["astronaut"], photos["empty"]], device="cpu"
    )
    assert result.no_face == [photos["empty"]] and len(result.predictions) == 1
    assert_user_error(
        run("predict", models["baseline"], photos["empty"], "--device", "cpu"),
        "no face found in the image; --no-detect takes face crops whole",
    )


def test_an_old_checkpoint_falls_back_to_the_bank_defaults_with_a_warning(models, photos, tmp_path):
    with pytest.warns(UserWarning, match="does not record how its training faces were framed"):
        model = open_model(models["old"], device="cpu")
    assert model.framing == Framing(size=64, recorded=False)
    text = run("predict", models["old"], photos["astronaut"], "--device", "cpu")
    assert text.exit_code == 0
    assert "warning: " in text.output and "assuming the face bank's defaults" in text.output
    render = tmp_path / "render"
    render.mkdir()
    legacy_index = Path(__file__).parent / "data" / "legacy-0.1.0" / "render" / "index.json"
    legacy = json.loads(legacy_index.read_text())
    del legacy["framing"]  # as a render indexed before the framing record existed
    legacy["render_config"].update(size=64, fit_mask=0.05)
    (render / "index.json").write_text(json.dumps(legacy))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        framed = open_model(models["old"], device="cpu", render=render)
    assert framed.framing == DEMO_FRAMING


def test_a_checkpoint_of_another_kind_is_one_clear_line(photos, tmp_path):
    bank = write_demo_bank(tmp_path / "bank.h5", subjects=1)
    assert_user_error(run("predict", bank, photos["astronaut"]), f"{bank} is an HDF5 file (a face bank")
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    assert_user_error(run("predict", foreign, photos["astronaut"]), "not a feratt checkpoint of this version")
    bad_onnx = tmp_path / "model.onnx"
    bad_onnx.write_bytes(b"not a protobuf")
    with pytest.raises(FerattError, match=r"is not a loadable ONNX model|needs onnxruntime"):
        predict(checkpoint=bad_onnx, images=[photos["astronaut"]])


def test_an_unreadable_image_is_one_clear_line(models, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 truncated")
    assert_user_error(
        run("predict", models["baseline"], bad, "--device", "cpu"), f"{bad}: not a readable image"
    )


def test_training_records_the_framing_in_every_checkpoint(tmp_path):
    from cli_helpers import render_tiny, train_tiny

    from feratt.artifacts.bank import FaceBank
    from feratt.artifacts.checkpoint import Checkpoint
    from feratt.jsonfile import read_json

    render = render_tiny(tmp_path, config={"fit_mask": 0.05})
    index = read_json(render / "index.json")
    bank = FaceBank.open(render.parent / "bank.h5")
    assert bank.aligned  # most demo faces were cut out by their dlib landmarks
    assert index["framing"] == {
        "bank_size": 96, "bank_margin": 0.2, "size": 64, "fit_mask": 0.05, "grey": False, "bank_read": True,
        "aligned": True, "bank_forehead": 0.0,
    }  # fmt: skip
    run_dir = train_tiny(render, tmp_path / "run", "baseline")
    for name in ("best.pt", "last.pt"):
        assert Checkpoint.load(run_dir / "fold-0" / name).framing == Framing(
            bank_size=96, size=64, fit_mask=0.05, aligned=True
        )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning: the checkpoint says how it was framed
        framing = open_model(run_dir, device="cpu").framing
        assert framing == Framing(bank_size=96, size=64, fit_mask=0.05, aligned=True)


def test_an_experiment_bound_to_a_render_indexed_before_the_framing_record_still_matches(tmp_path):
    from feratt.experiments.experiment import DataChecksums
    from feratt.jsonfile import write_json

    index = {
        "schema_version": 1,
        "classes": ["a", "b"],
        "subjects": {"D01": 4},
        "bank_sha256": "b" * 64,
        "config_sha256": "c" * 64,
        "totals": {"samples": 4, "shards": 1, "subjects": 1, "class_counts": {"a": 2, "b": 2}},
    }
    write_json(tmp_path / "index.json", index)
    before = DataChecksums.of(tmp_path)
    write_json(tmp_path / "index.json", {**index, "framing": encode(Framing(size=64))})
    assert DataChecksums.of(tmp_path) == before
    totals = {**index["totals"], "samples": 5}
    write_json(tmp_path / "index.json", {**index, "totals": totals, "framing": encode(Framing(size=64))})
    assert DataChecksums.of(tmp_path).index_sha256 != before.index_sha256
