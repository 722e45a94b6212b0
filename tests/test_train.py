"""Training on a tiny render through the API: outputs, resume after SIGKILL, DDP with gloo, bad input;
and `feratt train` on the command line: options, the config file, exit codes and output lines."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace

import click
import pytest
import torch
from cli_helpers import assert_user_error, render_tiny, run
from click.testing import CliRunner

from feratt.artifacts.checkpoint import Checkpoint
from feratt.artifacts.render import RenderSet
from feratt.artifacts.run import FoldFolder, FoldResult
from feratt.cli_options import train_config_from_cli, training_options
from feratt.codec import encode
from feratt.config.training import TrainConfig
from feratt.errors import FerattError
from feratt.training.train import TrainResult, train

#: A cpu-small configuration for a 6-subject render: folds of 2 test subjects, 1 validation subject.
TINY = TrainConfig(preset="cpu-small", epochs=2, batch_size=16, fold_size=2, val_subjects=1, workers=0)


@pytest.fixture(scope="module")
def render(tmp_path_factory):
    """A render of 6 demo subjects, 7 classes, 4 samples a face at 64 px."""
    return render_tiny(tmp_path_factory.mktemp("train-inputs"), 6, per_face=4, shard_size=14)


def train_args(render, run_dir, *extra):
    """`feratt train` arguments of the TINY configuration."""
    return (
        "train", render, "--out", run_dir, "--preset", "cpu-small", "--epochs", 2, "--batch-size", 16,
        "--fold-size", 2, "--val-subjects", 1, "--workers", 0, "--device", "cpu", *extra,
    )  # fmt: skip


def train_tiny(render, run_dir, lines=None, **fields) -> TrainResult:
    """Train TINY with `fields` replaced on the CPU; log lines go to `lines`."""
    log = lines.append if lines is not None else None
    return train(render=render, run=run_dir, config=replace(TINY, **fields), device="cpu", log=log)


@pytest.mark.parametrize("method", ["baseline", "feratt-cls", "feratt-rep-cls"])
def test_train_writes_metrics_checkpoints_and_summary(render, tmp_path, method):
    run_dir = tmp_path / "run"
    result = train_tiny(render, run_dir, method=method)
    folds = json.loads((run_dir / "folds.json").read_text())
    test_subjects = set(folds["folds"][0]["test"])
    assert len(test_subjects) == 2
    lines = FoldFolder(run_dir / "fold-0").records()
    assert [line["epoch"] for line in lines] == [0, 1]
    # 6 subjects: 2 test, 1 validation, 3 train; 28 samples a subject.
    assert lines[0]["train"]["samples"] == 84
    assert lines[0]["validation"]["samples"] == 28 and lines[0]["test"]["samples"] == 56
    terms = {
        "baseline": {"classification"},
        "feratt-cls": {"attention", "classification"},
        "feratt-rep-cls": {"attention", "representation", "classification"},
    }[method]
    assert {k[5:] for k in lines[0]["train"] if k.startswith("loss_")} == terms | {"total"}
    for key in ("accuracy", "precision", "recall", "f1", "confusion"):
        assert key in lines[1]["test"]
    assert sum(map(sum, lines[1]["test"]["confusion"])) == 56
    assert isinstance(result, TrainResult) and isinstance(result.folds[0], FoldResult)
    assert result.method == method and result.folds[0].test_subjects == sorted(test_subjects)
    assert set(result.folds[0].test_subjects).isdisjoint(result.folds[0].validation_subjects)
    assert {"final", "best_on_validation"} <= set(result.aggregate)
    assert result.folds[0].final.confusion == lines[1]["test"]["confusion"]
    assert json.loads((run_dir / "summary.json").read_text()) == encode(result)
    assert (run_dir / "fold-0" / "last.pt").is_file() and (run_dir / "fold-0" / "best.pt").is_file()
    assert FoldFolder(run_dir / "fold-0").finished(2) and not FoldFolder(run_dir / "fold-0").finished(3)
    config = json.loads((run_dir / "config.json").read_text())
    assert config["in_size"] == 64 and config["method"] == method


def test_real_test_scores_the_test_subjects_unrendered_faces(render, tmp_path):
    from feratt.training.build import build_model
    from feratt.training.data import normalise_batch, prepare_inputs
    from feratt.training.metrics import MetricAccumulator
    from feratt.training.realtest import load_real_faces

    bank = render.parent / "bank.h5"
    run_dir = tmp_path / "run"
    log = []
    result = train_tiny(render, run_dir, log, method="baseline", real_test=str(bank))
    assert "fold 0: real test on 14 unrendered faces of the test subjects" in log
    test_subjects = json.loads((run_dir / "folds.json").read_text())["folds"][0]["test"]
    lines = FoldFolder(run_dir / "fold-0").records()
    assert all(line["real_test"]["samples"] == 14 for line in lines)  # 2 subjects x 7 classes
    # The logged figures are the last checkpoint's predictions on exactly those faces.
    faces, notes = load_real_faces(bank, test_subjects, RenderSet.open(render))
    assert notes == [] and set(faces.subjects) == set(test_subjects) and len(faces) == 14
    checkpoint = Checkpoint.load(run_dir / "fold-0" / "last.pt")
    assert (checkpoint.method, checkpoint.num_classes) == ("baseline", 7)
    model = build_model(checkpoint.config, 7)
    model.load_state_dict(checkpoint.model)
    model.eval()
    confusion = MetricAccumulator(7)
    with torch.no_grad():
        for raw in faces.batches(16):
            batch = normalise_batch(raw, "cpu")
            confusion.update(batch["label"], model(prepare_inputs(batch, checkpoint.config)[0]).logits)
    assert confusion.confusion().tolist() == lines[-1]["real_test"]["confusion"]
    assert result.folds[0].real_final.confusion == confusion.confusion().tolist()
    assert {"real_final", "real_best_on_validation"} <= set(result.aggregate)


def _with_index(render, tmp_path, **changes):
    """A copy of `render` whose index.json has `changes`."""
    copy = tmp_path / f"copy-{len(list(tmp_path.iterdir()))}"
    shutil.copytree(render, copy)
    index = json.loads((copy / "index.json").read_text())
    (copy / "index.json").write_text(json.dumps({**index, **changes}))
    return RenderSet.open(copy)


def test_real_test_bank_must_match_the_render(render, tmp_path):
    from feratt.training.realtest import load_real_faces

    bank = render.parent / "bank.h5"
    index = RenderSet.open(render)
    with pytest.raises(FerattError, match="has no faces of the test subjects") as caught:
        load_real_faces(bank, ["X99"], index)
    assert caught.value.field == "real_test"
    with pytest.raises(FerattError, match="has classes"):
        load_real_faces(bank, ["D01"], _with_index(render, tmp_path, classes=list(index.classes[::-1])))
    _, notes = load_real_faces(bank, ["D01"], _with_index(render, tmp_path, bank_sha256="0" * 64))
    assert notes == [f"the real-test bank {bank} is not the bank the render was made from"]


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_weights(render, tmp_path):
    def command(run_dir):
        args = train_args(render, run_dir, "--epochs", 3, "--deterministic", "--method", "feratt-rep-cls")
        return [sys.executable, "-m", "feratt", *map(str, args)]

    # Both runs in fresh processes, so that no state of this test process (threads, flags) differs.
    whole = subprocess.run(command(tmp_path / "whole"), capture_output=True, text=True)
    assert whole.returncode == 0, whole.stderr
    resumed = tmp_path / "resumed"
    process = subprocess.Popen(
        command(resumed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    checkpoint = resumed / "fold-0" / "last.pt"
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        if checkpoint.exists():
            try:
                if torch.load(checkpoint, map_location="cpu", weights_only=True)["epoch"] >= 0:
                    break
            except Exception:  # caught mid-rename: try again
                pass
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert torch.load(checkpoint, map_location="cpu", weights_only=True)["epoch"] < 2
    finished = subprocess.run([*command(resumed), "--resume"], capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    assert "resumed after epoch" in finished.stdout
    expected, again = _weights(tmp_path / "whole" / "fold-0" / "last.pt"), _weights(checkpoint)
    assert expected.keys() == again.keys()
    for key in expected:
        torch.testing.assert_close(expected[key], again[key], rtol=0, atol=0, msg=key)
    assert [line["epoch"] for line in FoldFolder(resumed / "fold-0").records()] == [0, 1, 2]


@pytest.mark.slow
def test_ddp_with_gloo_matches_single_process_sample_count(render, tmp_path):
    single = tmp_path / "single"
    train_tiny(render, single, epochs=1, method="baseline")
    ddp = tmp_path / "ddp"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
        "-m", "feratt", *map(str, train_args(render, ddp, "--epochs", 1, "--method", "baseline")),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = FoldFolder(single / "fold-0").records()[0], FoldFolder(ddp / "fold-0").records()[0]
    for part in ("train", "validation", "test"):
        assert two[part]["samples"] == one[part]["samples"], part
    assert (ddp / "summary.json").is_file()


def test_class_means_reaches_the_loss_and_is_saved(render, tmp_path):
    from feratt.training.build import loss_config

    run_dir = tmp_path / "run"
    train_tiny(render, run_dir, method="feratt-rep-cls", epochs=1, max_batches=1, class_means="leave-one-out")
    saved = TrainConfig.from_options(json.loads((run_dir / "config.json").read_text()))
    assert saved.class_means == "leave-one-out"
    assert loss_config(saved).class_means == "leave-one-out"
    assert loss_config(TrainConfig()).class_means == "batch"


def test_bad_inputs_are_errors_naming_their_field(render, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FerattError, match=r"index\.json"):
        train_tiny(tmp_path / "empty", tmp_path / "r1")
    with pytest.raises(FerattError, match="fold 7 does not exist") as caught:
        train(render=render, run=tmp_path / "r2", config=TINY, folds=7, device="cpu")
    assert caught.value.field == "fold"
    with pytest.raises(FerattError, match="fancy") as caught:
        train_tiny(render, tmp_path / "r3", method="fancy")
    assert caught.value.field == "method" and not (tmp_path / "r3").exists()
    broken = tmp_path / "broken"
    shutil.copytree(render, broken)
    shard = sorted(broken.glob("shards/*/shard-*.h5"))[0]
    blob = bytearray(shard.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    shard.write_bytes(bytes(blob))
    with pytest.raises(FerattError, match=re.escape(shard.name)):
        train(render=broken, run=tmp_path / "r4", config=TINY, folds="all", device="cpu")
    run_dir = tmp_path / "r5"
    train_tiny(render, run_dir, epochs=1, method="baseline")
    with pytest.raises(
        FerattError, match=r"other settings \(method 'baseline' there, 'feratt-cls' here\)"
    ) as caught:
        train(render=render, run=run_dir, config=TINY, resume=True, device="cpu", method="feratt-cls")
    assert caught.value.field == "method"
    with pytest.raises(FerattError, match="is for baseline"):
        last = run_dir / "fold-0" / "last.pt"
        Checkpoint.load(last).check_matches(last, "feratt-cls", 7)


def test_train_prints_each_epoch_and_the_aggregate(render, tmp_path):
    result = run(
        *train_args(render, tmp_path / "run", "--epochs", 1, "--max-batches", 1, "--method", "baseline")
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("fold 0 epoch 0: train loss ") and ", test acc " in lines[0]
    assert lines[1].startswith("final: accuracy ") and " +- " in lines[1]
    assert lines[2].startswith("best_on_validation: accuracy ")
    assert lines[3] == f"wrote {tmp_path / 'run' / 'summary.json'}"


def test_train_errors_are_one_line_naming_the_option(render, tmp_path):
    assert_user_error(run(*train_args(render, tmp_path / "r1", "--fold", 7)), "--fold: fold 7 does not exist")
    assert_user_error(
        run(*train_args(render, tmp_path / "r2", "--method", "fancy")), "--method: unknown method"
    )
    bad = run(*train_args(render, tmp_path / "r3", "--class-means", "median"))
    assert bad.exit_code == 2 and "Traceback" not in bad.output and "--class-means" in bad.output


@click.command()
@training_options
@click.pass_context
def _config_command(ctx, config_file, **options):
    click.echo(json.dumps(encode(train_config_from_cli(ctx, config_file, options))))


def test_options_override_the_config_file_which_overrides_the_defaults(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(
        json.dumps({"epochs": 5, "batch-size": 7, "noise_sigma": "0.1:0.2", "preset": "cpu-small"})
    )
    result = CliRunner().invoke(_config_command, ["--config", str(path), "--epochs", "3", "--lr", "0.5"])
    assert result.exit_code == 0, result.output
    config = TrainConfig.from_options(json.loads(result.output))
    assert (config.epochs, config.batch_size, config.lr, config.noise_sigma) == (3, 7, 0.5, (0.1, 0.2))
    assert (config.in_size, config.width, config.seed) == (64, 0.25, 0)
    bad = CliRunner().invoke(_config_command, ["--noise-sigma", "0.3"])
    assert bad.exit_code == 2 and "--noise-sigma" in bad.output


def test_devices_are_resolved_in_the_library():
    from feratt.training.device import pick_device

    assert pick_device("cpu") == pick_device(torch.device("cpu")) == torch.device("cpu")
    assert pick_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(FerattError, match="unknown device") as caught:
        pick_device("abacus")
    assert caught.value.field == "device"


def test_checkpoints_and_metrics_of_a_run_folder(tmp_path):
    from feratt.artifacts.run import RunFolder
    from feratt.training.checkpoints import find_checkpoint

    for fold in (0, 2, 10):
        (tmp_path / f"fold-{fold}").mkdir()
        (tmp_path / f"fold-{fold}" / "best.pt").touch()
    (tmp_path / "fold-x").mkdir()
    assert RunFolder(tmp_path).folds_present() == [0, 2, 10]
    assert find_checkpoint(tmp_path, fold=2) == tmp_path / "fold-2" / "best.pt"
    assert find_checkpoint(tmp_path / "fold-10") == tmp_path / "fold-10" / "best.pt"
    with pytest.raises(FerattError, match="holds several folds") as caught:
        find_checkpoint(tmp_path)
    assert caught.value.field == "fold"
    with pytest.raises(FerattError, match="has no checkpoint"):
        find_checkpoint(tmp_path, which="last")
    fold_dir = tmp_path / "fold-0"
    scores = {"accuracy": 0.5, "precision": 0.4, "recall": 0.3, "f1": 0.2, "confusion": [[1, 1], [0, 0]]}
    records = [
        {"epoch": 0, "validation": {"accuracy": 0.9}, "test": {**scores, "accuracy": 0.7}},
        {"epoch": 1, "validation": {"accuracy": 0.8}, "test": scores},
    ]
    (fold_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert FoldFolder(fold_dir).records() == records and FoldFolder(tmp_path / "fold-2").records() == []
    assert FoldFolder(fold_dir).finished(2) and not FoldFolder(fold_dir).finished(3)
    assert not FoldFolder(tmp_path / "fold-2").finished(1)
    summary = encode(FoldFolder(fold_dir).summary(0, ["A"], ["B"]))
    assert summary == {
        "fold": 0,
        "test_subjects": ["A"],
        "validation_subjects": ["B"],
        "final": scores,
        "best_on_validation": {**scores, "accuracy": 0.7, "epoch": 0},
    }
