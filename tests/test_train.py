"""`feratt train` end to end on a tiny render: outputs, resume after SIGKILL, DDP with gloo, bad input."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from cli_helpers import assert_user_error, run, write_backgrounds, write_demo_bank

from feratt.training.config import TrainConfig


@pytest.fixture(scope="module")
def render(tmp_path_factory):
    """A render of 6 demo subjects, 7 classes, 4 samples a face at 64 px."""
    base = tmp_path_factory.mktemp("train-inputs")
    write_demo_bank(base / "bank.h5", subjects=6)
    backgrounds = write_backgrounds(base / "backgrounds", names=("coffee", "chelsea"))
    out = base / "render"
    result = run(
        "render",
        base / "bank.h5",
        "--out",
        out,
        "--backgrounds",
        backgrounds,
        "--size",
        64,
        "--per-face",
        4,
        "--shard-size",
        14,
        "--jobs",
        1,
    )
    assert result.exit_code == 0, result.output
    return out


def train_args(render, run_dir, *extra):
    return (
        "train",
        render,
        "--out",
        run_dir,
        "--preset",
        "cpu-small",
        "--epochs",
        2,
        "--batch-size",
        16,
        "--fold-size",
        2,
        "--val-subjects",
        1,
        "--workers",
        0,
        "--device",
        "cpu",
        *extra,
    )


@pytest.mark.parametrize("method", ["baseline", "feratt-cls", "feratt-rep-cls"])
def test_train_writes_metrics_checkpoints_and_summary(render, tmp_path, method):
    run_dir = tmp_path / "run"
    result = run(*train_args(render, run_dir, "--method", method))
    assert result.exit_code == 0, result.output
    folds = json.loads((run_dir / "folds.json").read_text())
    test_subjects = set(folds["folds"][0]["test"])
    assert len(test_subjects) == 2
    lines = [json.loads(line) for line in (run_dir / "fold-0" / "metrics.jsonl").read_text().splitlines()]
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
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["method"] == method and summary["folds"][0]["test_subjects"] == sorted(test_subjects)
    assert set(summary["folds"][0]["test_subjects"]).isdisjoint(summary["folds"][0]["validation_subjects"])
    assert "final" in summary["aggregate"] and "best_on_validation" in summary["aggregate"]
    assert (run_dir / "fold-0" / "last.pt").is_file() and (run_dir / "fold-0" / "best.pt").is_file()
    config = json.loads((run_dir / "config.json").read_text())
    assert config["in_size"] == 64 and config["method"] == method


def test_real_test_scores_the_test_subjects_unrendered_faces(render, tmp_path):
    from feratt.training.data import normalise_batch, read_render_index
    from feratt.training.realtest import load_real_faces
    from feratt.training.trainer import build_model, load_checkpoint, prepare_inputs

    bank = render.parent / "bank.h5"
    run_dir = tmp_path / "run"
    result = run(*train_args(render, run_dir, "--method", "baseline", "--real-test", bank))
    assert result.exit_code == 0, result.output
    assert "real test on 14 unrendered faces" in result.output
    test_subjects = json.loads((run_dir / "folds.json").read_text())["folds"][0]["test"]
    lines = [json.loads(line) for line in (run_dir / "fold-0" / "metrics.jsonl").read_text().splitlines()]
    assert all(line["real_test"]["samples"] == 14 for line in lines)  # 2 subjects x 7 classes
    # The logged figures are the last checkpoint's predictions on exactly those faces.
    faces, notes = load_real_faces(bank, test_subjects, read_render_index(render))
    assert notes == [] and set(faces.subjects) == set(test_subjects) and len(faces) == 14
    state = load_checkpoint(run_dir / "fold-0" / "last.pt", "baseline", 7)
    config = TrainConfig.from_dict(state["config"])
    model = build_model(config, 7)
    model.load_state_dict(state["model"])
    model.eval()
    confusion = torch.zeros(7, 7, dtype=torch.int64)
    with torch.no_grad():
        for raw in faces.batches(16):
            batch = normalise_batch(raw, "cpu")
            predictions = model(prepare_inputs(batch, config)[0]).logits.argmax(1)
            confusion += torch.bincount(batch["label"] * 7 + predictions, minlength=49).view(7, 7)
    assert confusion.tolist() == lines[-1]["real_test"]["confusion"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["folds"][0]["real_final"]["confusion"] == confusion.tolist()
    assert {"real_final", "real_best_on_validation"} <= set(summary["aggregate"])


def test_real_test_bank_must_match_the_render(render):
    from feratt.errors import FerattError
    from feratt.training.data import read_render_index
    from feratt.training.realtest import load_real_faces

    bank = render.parent / "bank.h5"
    index = read_render_index(render)
    with pytest.raises(FerattError, match="has no faces of the test subjects"):
        load_real_faces(bank, ["X99"], index)
    with pytest.raises(FerattError, match="has classes"):
        load_real_faces(bank, ["D01"], {**index, "classes": index["classes"][::-1]})
    _, notes = load_real_faces(bank, ["D01"], {**index, "bank_sha256": "0" * 64})
    assert notes == [f"--real-test bank {bank} is not the bank the render was made from"]


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


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
                if torch.load(checkpoint, map_location="cpu", weights_only=False)["epoch"] >= 0:
                    break
            except Exception:  # caught mid-rename: try again
                pass
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert torch.load(checkpoint, map_location="cpu", weights_only=False)["epoch"] < 2
    finished = subprocess.run([*command(resumed), "--resume"], capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    assert "resumed after epoch" in finished.stdout
    expected, again = _weights(tmp_path / "whole" / "fold-0" / "last.pt"), _weights(checkpoint)
    assert expected.keys() == again.keys()
    for key in expected:
        torch.testing.assert_close(expected[key], again[key], rtol=0, atol=0, msg=key)
    lines = (resumed / "fold-0" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [0, 1, 2]


@pytest.mark.slow
def test_ddp_with_gloo_matches_single_process_sample_count(render, tmp_path):
    single = tmp_path / "single"
    assert run(*train_args(render, single, "--epochs", 1, "--method", "baseline")).exit_code == 0
    ddp = tmp_path / "ddp"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29517",
        "-m",
        "feratt",
        *map(str, train_args(render, ddp, "--epochs", 1, "--method", "baseline")),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    one = json.loads((single / "fold-0" / "metrics.jsonl").read_text().splitlines()[0])
    two = json.loads((ddp / "fold-0" / "metrics.jsonl").read_text().splitlines()[0])
    for part in ("train", "validation", "test"):
        assert two[part]["samples"] == one[part]["samples"], part
    assert (ddp / "summary.json").is_file()


def test_class_means_option_reaches_the_loss_and_is_saved(render, tmp_path):
    from feratt.training.trainer import loss_config

    run_dir = tmp_path / "run"
    extra = (
        "--method",
        "feratt-rep-cls",
        "--epochs",
        1,
        "--max-batches",
        1,
        "--class-means",
        "leave-one-out",
    )
    result = run(*train_args(render, run_dir, *extra))
    assert result.exit_code == 0, result.output
    saved = TrainConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
    assert saved.class_means == "leave-one-out"
    assert loss_config(saved).class_means == "leave-one-out"
    assert loss_config(TrainConfig()).class_means == "batch"
    bad = run(*train_args(render, tmp_path / "bad", "--class-means", "median"))
    assert bad.exit_code == 2 and "Traceback" not in bad.output and "--class-means" in bad.output


def test_bad_inputs(render, tmp_path):
    (tmp_path / "empty").mkdir()
    assert_user_error(run(*train_args(tmp_path / "empty", tmp_path / "r1")), "index.json")
    assert_user_error(run(*train_args(render, tmp_path / "r2", "--fold", 7)), "fold 7 does not exist")
    assert_user_error(run(*train_args(render, tmp_path / "r3", "--method", "fancy")), "fancy")
    broken = tmp_path / "broken"
    shutil.copytree(render, broken)
    shard = sorted(broken.glob("shards/*/shard-*.h5"))[0]
    blob = bytearray(shard.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    shard.write_bytes(bytes(blob))
    assert_user_error(run(*train_args(broken, tmp_path / "r4", "--fold", "all")), shard.name)
    run_dir = tmp_path / "r5"
    assert run(*train_args(render, run_dir, "--epochs", 1, "--method", "baseline")).exit_code == 0
    result = run(*train_args(render, run_dir, "--epochs", 2, "--method", "feratt-cls", "--resume"))
    assert_user_error(result, "is for baseline")
