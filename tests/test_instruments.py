"""The instruments of issue 12: attention scores per epoch, learning curves, the I_att strip."""

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from cli_helpers import render_tiny

from feratt.artifacts.render import RenderSet
from feratt.artifacts.run import STRIP_FILE, FoldFolder
from feratt.codec import encode
from feratt.config.training import TrainConfig
from feratt.experiments.curves import mean_curves
from feratt.experiments.experiment import ExperimentRequest, run_experiment
from feratt.training.attention import (
    STRIP_SAMPLES,
    AttentionStrip,
    AttentionSums,
    attention_gate,
    attention_scores,
    first_samples,
    strip_epochs,
    strip_images,
)
from feratt.training.build import build_model
from feratt.training.models.feratt import Reconstruction
from feratt.training.train import train

TINY = TrainConfig(
    preset="cpu-small", epochs=2, batch_size=8, max_batches=2, fold_size=2, val_subjects=1, workers=0
)


@pytest.fixture(scope="module")
def render(tmp_path_factory):
    """A render of 4 demo subjects (2 folds of 2), 7 classes, 2 samples a face at 64 px."""
    return render_tiny(tmp_path_factory.mktemp("instrument-inputs"), 4, shard_size=14)


def _hand_built():
    """Two 4x4 samples: the mask (given at 8x8) is the left half, the gate the mask's top half.

    I_att is the target plus 0.1 (MSE 0.01, 20 dB) in sample 0 and plus 0.01 (MSE 1e-4, 40 dB) in sample 1.
    """
    target = torch.rand(2, 3, 4, 4)
    attention_image = target + torch.tensor([0.1, 0.01])[:, None, None, None]
    mask = torch.zeros(2, 1, 8, 8)
    mask[:, :, :, :4] = 1.0
    logits = torch.full((2, 1, 4, 4), -10.0)
    logits[:, :, :2, :2] = 10.0
    return attention_image, target, logits, mask


def test_attention_scores_have_known_values():
    attention_image, target, logits, mask = _hand_built()
    scores = attention_scores(attention_image, target, logits, mask)
    assert scores["att_iou"].tolist() == [0.5, 0.5]  # 4 gated pixels, all in the 8-pixel face
    assert scores["att_mse"].tolist() == pytest.approx([0.01, 1e-4], rel=1e-4)
    assert scores["att_psnr"].tolist() == pytest.approx([20.0, 40.0], rel=1e-4)
    # A gate over the whole image: the face is half of it.
    whole = attention_scores(attention_image, target, torch.full_like(logits, 3.0), mask)
    assert whole["att_iou"].tolist() == [0.5, 0.5]
    # Neither gate nor face: a perfect match.
    empty = attention_scores(target, target, torch.full_like(logits, -3.0), torch.zeros_like(mask))
    assert empty["att_iou"].tolist() == [1.0, 1.0] and empty["att_psnr"].tolist() == [100.0, 100.0]


def test_sums_over_batches_give_the_means_over_samples():
    attention_image, target, logits, mask = _hand_built()
    sums = AttentionSums()
    sums.update(attention_image[:1], target[:1], logits[:1], mask[:1])
    sums.update(attention_image[1:], target[1:], logits[1:], mask[1:])
    means = sums.means()
    assert means["att_mse"] == pytest.approx(0.00505, rel=1e-4)
    assert means["att_psnr"] == pytest.approx(30.0, rel=1e-4)
    assert means["att_iou"] == 0.5
    assert math.isnan(AttentionSums().means()["att_iou"])


def test_the_gate_of_several_channels_is_the_mean_of_their_sigmoids():
    """Logits (10, -2, -2): the mean sigmoid is 0.41, below 0.5, though the mean logit is positive."""
    logits = torch.tensor([10.0, -2.0, -2.0])[None, :, None, None].expand(1, 3, 2, 2).clone()
    logits[:, :, 0, 0] = torch.tensor([10.0, 10.0, -2.0])  # mean sigmoid 0.71
    gate = attention_gate(logits)
    assert gate.shape == (1, 1, 2, 2)
    features = torch.rand(1, 5, 2, 2)
    assert torch.allclose(gate * features, Reconstruction.gate(logits, features))
    mask = torch.zeros(1, 1, 2, 2)
    mask[:, :, 0, :] = 1.0
    image = torch.zeros(1, 3, 2, 2)
    assert attention_scores(image, image, logits, mask)["att_iou"].tolist() == [0.5]


@pytest.mark.parametrize("method", ["baseline", "feratt-cls"])
def test_metrics_log_attention_scores_of_feratt_methods_only(render, tmp_path, method):
    run_dir = tmp_path / "run"
    train(render=render, run=run_dir, config=TINY, method=method, epochs=1, device="cpu")
    (record,) = FoldFolder(run_dir / "fold-0").records()
    for part in ("train", "validation", "test"):
        keys = {key for key in record[part] if key.startswith("att_")}
        if method == "baseline":
            assert keys == set()
        else:
            assert keys == {"att_mse", "att_psnr", "att_iou"}
            assert 0.0 <= record[part]["att_iou"] <= 1.0
            mse = record[part]["att_mse"]
            assert mse > 0 and record[part]["att_psnr"] >= -10 * math.log10(mse) - 1e-9


def test_strip_epochs_are_first_quarter_half_and_last():
    assert strip_epochs(12) == [0, 3, 6, 11]
    assert strip_epochs(5) == [0, 1, 2, 4]
    assert strip_epochs(2) == [0, 1] and strip_epochs(1) == [0] and strip_epochs(0) == []


def test_experiment_report_draws_learning_curves_and_the_attention_strip(render, tmp_path):
    out = tmp_path / "exp"
    request = ExperimentRequest(
        render=render, out=out, methods=("baseline", "feratt-cls"), folds="0", config=TINY
    )
    run_experiment(request, device="cpu")
    report = (out / "report.md").read_text()
    for part in ("train", "validation", "test"):
        assert f"![curves-{part}.png](curves-{part}.png)" in report
        assert (out / f"curves-{part}.png").stat().st_size > 1000
    assert "![attention-strip-feratt-cls.png](attention-strip-feratt-cls.png)" in report
    assert (out / "attention-strip-feratt-cls.png").is_file()
    assert not (out / "attention-strip-baseline.png").exists()
    assert not (out / "runs" / "baseline" / "fold-0" / STRIP_FILE).exists()
    size = TINY.resolved().in_size
    with np.load(out / "runs" / "feratt-cls" / "fold-0" / STRIP_FILE) as strip:
        assert strip["epochs"].tolist() == [0, 1]
        assert strip["inputs"].shape == strip["targets"].shape == (STRIP_SAMPLES, size, size, 3)
        assert strip["attention"].shape == (2, STRIP_SAMPLES, size, size, 3)
        assert strip["attention"].dtype == np.uint8
        # The first test samples, in shard order, whatever the loader's workers.
        split = json.loads((out / "runs" / "feratt-cls" / "folds.json").read_text())["folds"][0]
        inputs, _ = first_samples(
            RenderSet.open(render), split["test"], TINY.resolved(), torch.device("cpu"), STRIP_SAMPLES
        )
        assert np.array_equal(strip["inputs"], strip_images(inputs))
    epochs, curves = mean_curves([out / "runs" / "feratt-cls" / "fold-0"], "test")
    assert epochs == [0, 1] and set(curves) >= {"accuracy", "loss_attention", "att_iou"}
    assert "att_iou" not in mean_curves([out / "runs" / "baseline" / "fold-0"], "test")[1]


def test_strip_resumes_keeping_the_epochs_before_the_restart(render, tmp_path):
    config = TrainConfig(**{**encode(TINY), "method": "feratt-cls", "epochs": 4}).resolved()
    index = RenderSet.open(render)
    fold = FoldFolder(tmp_path)
    subjects = sorted(index.subjects)[:2]
    cpu = torch.device("cpu")
    assert AttentionStrip.open(fold, index, subjects, replace(config, method="baseline"), cpu) is None
    model = build_model(config, len(index.classes)).train()
    strip = AttentionStrip.open(fold, index, subjects, config, cpu)
    for epoch in range(3):
        strip.record(model, epoch)
    assert model.training
    with np.load(tmp_path / STRIP_FILE) as saved:
        assert saved["epochs"].tolist() == [0, 1, 2]
        first = saved["attention"][0]
    resumed = AttentionStrip.open(fold, index, subjects, config, cpu, start=2)
    assert resumed.epochs == [0, 1] and np.array_equal(resumed.attention[0], first)
    for epoch in (2, 3):
        resumed.record(model, epoch)
    with np.load(tmp_path / STRIP_FILE) as saved:
        assert saved["epochs"].tolist() == [0, 1, 2, 3]
        assert saved["attention"].shape == (4, STRIP_SAMPLES, config.in_size, config.in_size, 3)


def test_mean_curves_average_the_epochs_every_fold_scored(tmp_path):
    folders = [tmp_path / "a", tmp_path / "b"]
    scored = {"a": [0, 1, 2, 3], "b": [1, 3]}  # fold b scored its test split every other epoch
    for folder in folders:
        folder.mkdir()
        offset = 0.2 if folder.name == "b" else 0.0
        lines = [
            {"epoch": e, "train": {"accuracy": 0.1}}
            | ({"test": {"accuracy": e / 10 + offset}} if e in scored[folder.name] else {})
            for e in range(4)
        ]
        (folder / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    epochs, curves = mean_curves(folders, "test")
    assert epochs == [1, 3]
    assert curves["accuracy"].tolist() == pytest.approx([0.2, 0.4])
    assert mean_curves(folders, "train")[0] == [0, 1, 2, 3]
