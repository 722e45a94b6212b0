"""Robustness to noise on tiny trained runs: the sigma-0 reference, seeded noise, outputs and bad input."""

import csv
import dataclasses
import json

import numpy as np
import pytest
from cli_helpers import assert_user_error, render_tiny, run, train_tiny
from PIL import Image

from feratt.artifacts.render import RenderSet
from feratt.codec import encode
from feratt.errors import FerattError
from feratt.experiments import evaluate as evaluate_module
from feratt.experiments.evaluate import Noise, add_noise, fold_test_subjects, run_model, synthetic_loader
from feratt.experiments.noise import noise_robustness
from feratt.training.checkpoints import load_trained


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A render of 4 demo subjects (2 samples a face, 64 px); a FERAtt and a baseline run, both folds."""
    base = tmp_path_factory.mktemp("noise-inputs")
    render = render_tiny(base)
    trained = {
        method: train_tiny(render, base / method, method, "--fold", "all")
        for method in ("feratt-rep-cls", "baseline")
    }
    return {"base": base, "bank": base / "bank.h5", "render": render, **trained}


def noise_args(runs, out, *extra):
    return (
        "noise",
        runs["feratt-rep-cls"],
        runs["baseline"],
        "--shards",
        runs["render"],
        "--sigmas",
        "0.05,0.3",
        "--out",
        out,
        "--batch-size",
        16,
        "--device",
        "cpu",
        *extra,
    )


def robustness(runs, out, **options):
    """`noise_args` through the API: both runs at sigmas 0.05 and 0.3; the result and the lines logged."""
    lines = []
    result = noise_robustness(
        runs=[runs["feratt-rep-cls"], runs["baseline"]],
        render=runs["render"],
        sigmas=[0.05, 0.3],
        out=out,
        batch_size=16,
        device="cpu",
        log=lines.append,
        **options,
    )
    return result, lines


@pytest.fixture(scope="module")
def noise_out(runs):
    """Noise robustness of both runs, synthetic and real test splits."""
    out = runs["base"] / "noise-1"
    result, _ = robustness(runs, out, real_test=runs["bank"])
    assert result.written == [out / name for name in ("noise.json", "noise.csv")] + [
        out / f"{name}.png" for name in ("noise-synthetic", "noise-real", "figure7")
    ]
    assert json.loads((out / "noise.json").read_text()) == json.loads(json.dumps(encode(result)))
    return out


def _split(runs, method, fold=0, batch_size=16):
    trained = load_trained(runs[method], fold)
    index = RenderSet.open(runs["render"])
    loader = synthetic_loader(runs["render"], fold_test_subjects(trained, index), batch_size, 0, True)
    return trained, loader


@pytest.mark.parametrize("method", ["feratt-rep-cls", "baseline"])
def test_sigma_zero_is_the_clean_evaluation(runs, noise_out, method):
    trained, loader = _split(runs, method)
    clean = run_model(trained, loader)
    zero = run_model(trained, loader, noise=Noise(0.0))
    np.testing.assert_array_equal(zero.logits, clean.logits)
    np.testing.assert_array_equal(zero.confusion(), clean.confusion())
    if clean.embeddings is not None:
        np.testing.assert_array_equal(zero.embeddings, clean.embeddings)
    written = json.loads((noise_out / "noise.json").read_text())
    entry = next(m for m in written["methods"] if m["method"] == method)["folds"]["0"]["synthetic"][0]
    assert entry["sigma"] == 0.0
    assert entry["metrics"]["confusion"] == clean.confusion().tolist()
    assert entry["metrics"]["accuracy"] == clean.metrics(trained.classes).accuracy
    # Lab L at sigma 0 goes through a Lab round trip: the same predictions, nearly the same logits.
    lab = run_model(trained, loader, noise=Noise(0.0, lab_l=True))
    np.testing.assert_array_equal(lab.predictions, clean.predictions)
    np.testing.assert_allclose(lab.logits, clean.logits, atol=1e-3)


@pytest.mark.parametrize("lab_l", [False, True])
def test_add_noise_changes_the_image_within_range_and_repeats_by_seed(lab_l):
    rng = np.random.default_rng(5)
    images = rng.uniform(0.0, 1.0, (3, 3, 32, 32)).astype(np.float32)
    noise = Noise(0.3, lab_l=lab_l)
    noisy = add_noise(images, noise, np.random.default_rng(11))
    assert noisy.shape == images.shape and noisy.dtype == np.float32
    assert noisy.min() >= 0.0 and noisy.max() <= 1.0
    assert np.abs(noisy - images).mean() > 0.05
    np.testing.assert_array_equal(add_noise(images, noise, np.random.default_rng(11)), noisy)
    assert not np.array_equal(add_noise(images, noise, np.random.default_rng(12)), noisy)


def test_noisy_evaluation_is_seeded_and_matches_the_written_figures(runs, noise_out):
    written = json.loads((noise_out / "noise.json").read_text())
    for method in ("feratt-rep-cls", "baseline"):
        trained, loader = _split(runs, method, fold=1)
        first = run_model(trained, loader, noise=Noise(0.3, seed=0))
        again = run_model(trained, loader, noise=Noise(0.3, seed=0))
        np.testing.assert_array_equal(first.logits, again.logits)
        other = run_model(trained, loader, noise=Noise(0.3, seed=1))
        assert not np.array_equal(first.logits, other.logits)
        rows = next(m for m in written["methods"] if m["method"] == method)["folds"]["1"]["synthetic"]
        assert rows[-1]["sigma"] == 0.3
        assert rows[-1]["metrics"]["confusion"] == first.confusion().tolist()


def test_noise_writes_json_csv_and_figures(runs, noise_out, tmp_path):
    written = json.loads((noise_out / "noise.json").read_text())
    assert written["sigmas"] == [0.0, 0.05, 0.3] and written["splits"] == ["synthetic", "real"]
    assert [m["label"] for m in written["methods"]] == ["feratt-rep-cls", "baseline"]
    for method in written["methods"]:
        assert sorted(method["folds"]) == ["0", "1"]
        for split in ("synthetic", "real"):
            for i, row in enumerate(method["aggregate"][split]):
                accuracies = [method["folds"][f][split][i]["metrics"]["accuracy"] for f in ("0", "1")]
                assert row["folds"] == 2
                assert row["accuracy"]["mean"] == pytest.approx(np.mean(accuracies))
                assert row["accuracy"]["std"] == pytest.approx(np.std(accuracies))
        # 2 test subjects a fold: 28 rendered samples and 14 real faces.
        assert method["folds"]["0"]["synthetic"][0]["metrics"]["samples"] == 28
        assert method["folds"]["0"]["real"][0]["metrics"]["samples"] == 14
    with open(noise_out / "noise.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 * 2 * 3
    assert {(r["method"], r["split"], r["sigma"]) for r in rows} == {
        (m, s, g)
        for m in ("feratt-rep-cls", "baseline")
        for s in ("synthetic", "real")
        for g in ("0", "0.05", "0.3")
    }
    for name in ("noise-synthetic.png", "noise-real.png", "figure7.png"):
        with Image.open(noise_out / name) as image:
            image.verify()
    figure = written["figure7"]
    assert figure["run"] == str(runs["feratt-rep-cls"]) and figure["image_index"] == 0
    assert [c["sigma"] for c in figure["columns"]] == [0.0, 0.05, 0.3]
    assert all(0.0 < c["probability"] <= 1.0 for c in figure["columns"])
    # A rerun writes the same numbers; so does the command line.
    again = tmp_path / "noise-2"
    robustness(runs, again, real_test=runs["bank"])
    assert (again / "noise.json").read_bytes() == (noise_out / "noise.json").read_bytes()
    assert (again / "noise.csv").read_bytes() == (noise_out / "noise.csv").read_bytes()
    refused = run(*noise_args(runs, again, "--real-test", runs["bank"]))
    assert_user_error(refused, f"--overwrite: {again} holds the results of an earlier noise run (noise.json)")
    result = run(*noise_args(runs, again, "--real-test", runs["bank"], "--overwrite"))
    assert result.exit_code == 0, result.output
    assert result.output.endswith(
        "".join(
            f"wrote {again / name}\n"
            for name in ("noise.json", "noise.csv", "noise-synthetic.png", "noise-real.png", "figure7.png")
        )
    )
    assert (again / "noise.json").read_bytes() == (noise_out / "noise.json").read_bytes()
    assert (again / "noise.csv").read_bytes() == (noise_out / "noise.csv").read_bytes()


def test_baseline_alone_on_lab_l_skips_figure_7(runs, tmp_path):
    out = tmp_path / "noise"
    lines = []
    result = noise_robustness(
        runs=[runs["baseline"]],
        render=runs["render"],
        sigmas=[0.1],
        out=out,
        lab_l=True,
        fold="0",
        device="cpu",
        log=lines.append,
    )
    assert "note: no FERAtt run given: figure 7 (I_att under noise) skipped" in lines
    assert result.figure7 is None and [m.method for m in result.methods] == ["baseline"]
    written = json.loads((out / "noise.json").read_text())
    assert written["lab_l"] and written["figure7"] is None and not (out / "figure7.png").exists()
    assert list(written["methods"][0]["folds"]) == ["0"] and written["splits"] == ["synthetic"]
    assert (out / "noise-synthetic.png").is_file() and not (out / "noise-real.png").exists()
    assert len((out / "noise.csv").read_text().splitlines()) == 1 + 2


def test_bad_inputs(runs, tmp_path):
    empty = tmp_path / "empty-run"
    empty.mkdir()
    out = tmp_path / "out"
    with pytest.raises(FerattError, match="has no checkpoint"):
        noise_robustness(
            runs=[runs["baseline"], empty], render=runs["render"], sigmas=[0.1], out=out, device="cpu"
        )
    assert not (out / "noise.json").exists()
    with pytest.raises(FerattError, match="no checkpoint for fold 5"):
        noise_robustness(
            runs=[runs["baseline"]], render=runs["render"], sigmas=[0.1], out=out, fold="5", device="cpu"
        )
    with pytest.raises(FerattError, match="an index or 'all'") as error:
        noise_robustness(
            runs=[runs["baseline"]], render=runs["render"], sigmas=[0.1], out=out, fold="x", device="cpu"
        )
    assert error.value.field == "fold"
    with pytest.raises(FerattError, match="past the end of the test split") as error:
        noise_robustness(
            runs=[runs["feratt-rep-cls"]],
            render=runs["render"],
            sigmas=[0.1],
            out=out,
            image_index=999,
            device="cpu",
        )
    assert error.value.field == "image_index"
    with pytest.raises(FerattError, match="a noise sigma must be a number from 0 to 100") as error:
        noise_robustness(
            runs=[runs["baseline"]], render=runs["render"], sigmas=[0.1, -0.2], out=out, device="cpu"
        )
    assert error.value.field == "sigmas"
    base = ("--shards", runs["render"], "--out", tmp_path / "out", "--device", "cpu")
    assert_user_error(run("noise", runs["baseline"], empty, *base), "has no checkpoint")
    assert_user_error(
        run("noise", runs["feratt-rep-cls"], *base, "--image-index", 999),
        "--image-index: test sample 999 is past",
    )
    for sigmas in ("0.1,abc", "0.1,-0.2", ",", "nan"):
        result = run("noise", runs["baseline"], *base, f"--sigmas={sigmas}")
        assert result.exit_code == 2, result.output
        assert "Invalid value for '--sigmas'" in result.output and "Traceback" not in result.output


def test_the_input_masked_attention_target_stays_clean_under_noise(runs, monkeypatch):
    trained, loader = _split(runs, "feratt-rep-cls")
    masked = dataclasses.replace(trained.config, att_target="input-masked")
    trained = dataclasses.replace(trained, config=masked)
    seen = []
    prepare = evaluate_module.prepare_inputs

    def recording(batch, config):
        inputs, target = prepare(batch, config)
        seen.append((batch["mask"].clone(), batch["clean_image"].clone(), inputs.clone(), target.clone()))
        return inputs, target

    monkeypatch.setattr(evaluate_module, "prepare_inputs", recording)
    run_model(trained, loader, noise=Noise(0.3))
    mask, clean, noisy, target = seen[0]
    expected = clean * (mask > 0.5)
    assert target.shape == expected.shape
    np.testing.assert_array_equal(target.numpy(), expected.numpy())
    assert float((noisy - clean).abs().mean()) > 0.1  # the input itself is noisy
