"""`feratt export` to ONNX, and `feratt predict` through onnxruntime without torch."""

import json
import subprocess
import sys

import numpy as np
import pytest
from cli_helpers import assert_user_error, run, write_demo_bank
from model_helpers import DEMO_FRAMING, group_scene, untrained_checkpoint, write_rgb

pytest.importorskip("onnx", reason="the onnx extra is not installed (pip install 'feratt[onnx]')")
pytest.importorskip("onnxruntime", reason="the onnx extra is not installed (pip install 'feratt[onnx]')")
pytest.importorskip("onnxscript", reason="the onnx extra is not installed (pip install 'feratt[onnx]')")

from feratt.codec import encode
from feratt.inference.backends import open_model
from feratt.inference.export import export_onnx
from feratt.inference.predict import predict

METHODS = ("baseline", "feratt-cls")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Each method's untrained checkpoint and its ONNX export (about 10 s a method on 2 cores)."""
    base = tmp_path_factory.mktemp("onnx")
    models = {}
    for method in METHODS:
        checkpoint = untrained_checkpoint(base / f"{method}.pt", method)
        models[method] = (checkpoint, export_onnx(checkpoint=checkpoint, out=base / f"{method}.onnx"))
    return models


@pytest.fixture(scope="module")
def group(tmp_path_factory):
    return write_rgb(tmp_path_factory.mktemp("group") / "group.png", group_scene().image)


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_onnxruntime_matches_torch(exported, method):
    checkpoint, result = exported[method]
    torch_model, onnx_model = open_model(checkpoint, device="cpu"), open_model(result.path)
    rng = np.random.default_rng(0)
    for batch in (1, 5, 33):  # the batch dimension is dynamic, and 33 spans two of its batches of 32
        faces = rng.integers(0, 256, (batch, 64, 64, 3), dtype=np.uint8)
        expected, expected_attention = torch_model(faces)
        got, attention = onnx_model(faces)
        assert got.shape == (batch, 7) and expected.max() > 0.25  # far from uniform (1/7)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)
        if method == "baseline":
            assert attention is None and expected_attention is None
        else:
            assert attention.shape == (batch, 64, 64, 3) and attention.dtype == np.uint8
            assert np.abs(attention.astype(int) - expected_attention).max() <= 1


@pytest.mark.slow
def test_the_model_carries_what_inference_needs(exported):
    import onnx

    _, result = exported["feratt-cls"]
    model = onnx.load(str(result.path))
    meta = {entry.key: entry.value for entry in model.metadata_props}
    assert meta["kind"] == "feratt-classifier" and json.loads(meta["method"]) == "feratt-cls"
    assert json.loads(meta["classes"]) == [
        "neutral",
        "anger",
        "disgust",
        "fear",
        "happy",
        "sadness",
        "surprise",
    ]
    assert json.loads(meta["input_size"]) == 64
    assert json.loads(meta["mean"]) == [0.0, 0.0, 0.0] and json.loads(meta["std"]) == [1.0, 1.0, 1.0]
    assert json.loads(meta["framing"]) == encode(DEMO_FRAMING)
    assert [o.name for o in model.graph.output] == ["logits", "attention"]
    [image] = model.graph.input
    batch = image.type.tensor_type.shape.dim[0]
    assert batch.dim_param and not batch.dim_value  # a named, dynamic batch size
    assert [d.dim_value for d in image.type.tensor_type.shape.dim[1:]] == [3, 64, 64]


@pytest.mark.slow
def test_predict_through_onnx_finds_the_same_faces_and_scores(exported, group):
    checkpoint, result = exported["feratt-cls"]
    by_torch = predict(checkpoint=checkpoint, images=[group], device="cpu")
    by_onnx = predict(checkpoint=result.path, images=[group])
    assert [p.box for p in by_onnx.predictions] == [p.box for p in by_torch.predictions]
    assert len(by_onnx.predictions) == 3 and by_onnx.framing == by_torch.framing
    for a, b in zip(by_onnx.predictions, by_torch.predictions, strict=True):
        np.testing.assert_allclose(list(a.probabilities.values()), list(b.probabilities.values()), atol=1e-4)


@pytest.mark.slow
def test_predict_with_an_onnx_model_never_imports_torch(exported, group):
    _, result = exported["baseline"]
    script = (
        "import sys\n"
        "from feratt.cli import main\n"
        "try:\n"
        f"    main(['predict', {str(result.path)!r}, {str(group)!r}, '--json'], standalone_mode=False)\n"
        "finally:\n"
        "    print('torch imported:', 'torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    document, last = done.stdout.rsplit("}", 1)
    assert last.strip() == "torch imported: False"
    assert len(json.loads(document + "}")["predictions"]) == 3


@pytest.mark.slow
def test_export_command_and_its_refusals(exported, tmp_path):
    checkpoint, _ = exported["baseline"]
    out = tmp_path / "model.onnx"
    result = run("export", checkpoint, out)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        f"wrote {out}: baseline, 7 classes, input 64x64, outputs logits",
        "framing: bank crop 160 px around the mask with margin 0.2, then the mask box padded by 0.05 "
        "at 64 px",
    ]
    assert_user_error(run("export", checkpoint, out), f"--overwrite: {out} exists already")
    assert_user_error(run("export", checkpoint, tmp_path / "model.pt"), "must end in .onnx")


def test_export_of_something_that_is_not_a_checkpoint_is_one_line(tmp_path):
    bank = write_demo_bank(tmp_path / "bank.h5", subjects=1)
    assert_user_error(run("export", bank, tmp_path / "m.onnx"), "not a feratt checkpoint")
    assert not (tmp_path / "m.onnx").exists()


def test_an_onnx_model_not_from_feratt_is_one_line(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["image"], ["logits"])],
        "identity",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 7])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 7])],
    )
    foreign = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(foreign))
    photo = write_rgb(tmp_path / "group.png", group_scene().image)
    assert_user_error(
        run("predict", foreign, photo), f"{foreign} is an ONNX model, but not one feratt exported"
    )


#: Metadata a spoofed model may carry, and the line each is refused with (issue 21, item 9).
SPOOFED_METADATA = {
    "input size 6000": ({"input_size": "6000"}, "its input size 6000 is not 1 to 1024 pixels"),
    "100000 classes": ({"classes": json.dumps([f"c{i}" for i in range(100000)])}, "names 100000 classes"),
    "classes not a list": ({"classes": '"happy"'}, "classes"),
    "not JSON": ({"framing": "{not json"}, "unreadable feratt metadata: framing"),
    "a framing of 10^6 px": (
        {
            "framing": json.dumps(
                {"bank_size": 10**6, "bank_margin": 0.2, "size": 64, "fit_mask": None, "grey": False}
            )
        },
        "framing sizes must be whole numbers from 1 to 1024",
    ),
    "a negative std": ({"std": "[0.2, -1, 0.2]"}, "is not positive"),
}


@pytest.mark.parametrize("spoof", list(SPOOFED_METADATA))
def test_spoofed_onnx_metadata_is_one_line_before_anything_is_sized(exported, tmp_path, spoof):
    import onnx

    changes, message = SPOOFED_METADATA[spoof]
    model = onnx.load(str(exported["baseline"][1].path))
    for entry in model.metadata_props:
        if entry.key in changes:
            entry.value = changes[entry.key]
    spoofed = tmp_path / "spoofed.onnx"
    onnx.save(model, str(spoofed))
    photo = write_rgb(tmp_path / "face.png", np.full((64, 64, 3), 128, np.uint8))
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    result = run("predict", spoofed, photo, "--no-detect")
    assert_user_error(result, str(spoofed))
    assert message in result.output.strip().splitlines()[-1]
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir()} == before


@pytest.mark.slow
def test_an_old_checkpoint_exports_with_the_default_framing_and_a_warning(tmp_path):
    old = untrained_checkpoint(tmp_path / "old.pt", "baseline", framing=None)
    result = run("export", old, tmp_path / "old.onnx")
    assert result.exit_code == 0, result.output
    assert "warning: " in result.output and "assuming the face bank's defaults" in result.output
    assert encode(open_model(tmp_path / "old.onnx").framing) == {
        "bank_size": 160, "bank_margin": 0.2, "size": 64, "fit_mask": None, "grey": False,
        "aligned": False, "bank_forehead": 0.0,
    }  # fmt: skip
