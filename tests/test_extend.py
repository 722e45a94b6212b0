"""Extending a finished run: --resume with more --epochs continues it on the recomputed schedule, and
config.json records every extension; options that do not change what is learnt may differ on resume."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from cli_helpers import assert_user_error, hashes, render_tiny, run

from feratt.artifacts.run import FoldFolder
from feratt.config.training import TrainConfig
from feratt.training.schedule import epoch_lr
from feratt.training.train import train

#: A cosine run of 2 epochs (one of warm-up) at lr 1e-3, one batch an epoch, fold 0 of 2 test subjects.
COSINE = TrainConfig.from_options(
    {
        "method": "baseline", "preset": "cpu-small", "epochs": 2, "max_batches": 1, "batch_size": 8,
        "lr": 1e-3, "fold_size": 2, "val_subjects": 1, "workers": 0,
    }
)  # fmt: skip
assert (COSINE.lr_schedule, COSINE.warmup_epochs) == ("cosine", 1)


@pytest.fixture(scope="module")
def render(tmp_path_factory) -> Path:
    return render_tiny(tmp_path_factory.mktemp("extend"))


@pytest.fixture(scope="module")
def finished(render, tmp_path_factory) -> Path:
    """A finished 2-epoch cosine run, to copy."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    train(render=render, run=run_dir, config=COSINE, device="cpu")
    return run_dir


def _copy(finished: Path, tmp_path: Path) -> Path:
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    return run_dir


def test_a_cosine_run_extended_once_continues_on_the_longer_schedule(render, finished, tmp_path):
    run_dir = _copy(finished, tmp_path)
    before = FoldFolder(run_dir / "fold-0").records()
    extended = replace(COSINE, epochs=5)
    lines: list[str] = []
    train(render=render, run=run_dir, config=extended, device="cpu", resume=True, log=lines.append)
    assert "fold 0: resumed after epoch 1" in lines
    records = FoldFolder(run_dir / "fold-0").records()
    assert [r["epoch"] for r in records] == [0, 1, 2, 3, 4]
    assert records[:2] == before  # the trained epochs are kept as they were
    # Epochs 0-1 trained on the 2-epoch cosine; from epoch 2 the rate follows the 5-epoch one.
    assert [r["lr"] for r in records[:2]] == pytest.approx([epoch_lr(COSINE, e) for e in range(2)])
    assert [r["lr"] for r in records[2:]] == pytest.approx([epoch_lr(extended, e) for e in range(2, 5)])
    half = 0.5**0.5  # cos(pi / 4): the 5-epoch cosine decays over 4 epochs after its warm-up epoch
    expected = [0.5e-3, 1e-3, 1e-3 * (1 + half) / 2, 0.5e-3, 1e-3 * (1 - half) / 2]
    assert [r["lr"] for r in records] == pytest.approx(expected)
    assert torch.load(run_dir / "fold-0" / "last.pt", weights_only=True)["epoch"] == 4
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["epochs"] == 5
    [record] = saved["extensions"]
    assert (record["epochs_before"], record["epochs"], record["epochs_done"]) == (2, 5, {"0": 2})


def test_each_extension_is_recorded_and_the_settings_still_bind(render, finished, tmp_path):
    run_dir = _copy(finished, tmp_path)
    train(render=render, run=run_dir, config=replace(COSINE, epochs=3), device="cpu", resume=True)
    train(render=render, run=run_dir, config=replace(COSINE, epochs=4), device="cpu", resume=True)
    saved = json.loads((run_dir / "config.json").read_text())
    assert [(r["epochs_before"], r["epochs"]) for r in saved["extensions"]] == [(2, 3), (3, 4)]
    assert [r["epoch"] for r in FoldFolder(run_dir / "fold-0").records()] == [0, 1, 2, 3]
    # A resume at the run's own length does nothing, and changes no file.
    before = hashes(run_dir)
    train(render=render, run=run_dir, config=replace(COSINE, epochs=4), device="cpu", resume=True)
    assert {k: v for k, v in hashes(run_dir).items() if k != "summary.json"} == {
        k: v for k, v in before.items() if k != "summary.json"
    }


def test_resume_takes_the_runs_own_settings_for_the_options_not_given(render, finished, tmp_path):
    run_dir = _copy(finished, tmp_path)
    result = run(
        "train", render, "--out", run_dir, "--resume", "--epochs", 3, "--device", "cpu", "--workers", 0
    )
    assert result.exit_code == 0, result.output
    assert "fold 0: resumed after epoch 1" in result.output
    saved = json.loads((run_dir / "config.json").read_text())
    assert (saved["method"], saved["lr"], saved["batch_size"], saved["epochs"]) == ("baseline", 1e-3, 8, 3)
    assert [r["epoch"] for r in FoldFolder(run_dir / "fold-0").records()] == [0, 1, 2]


def test_options_that_do_not_change_what_is_learnt_may_differ_on_resume(render, finished, tmp_path):
    run_dir = _copy(finished, tmp_path)
    result = run(
        "train", render, "--out", run_dir, "--resume", "--epochs", 3, "--device", "cpu", "--workers", 0,
        "--test-every", 2, "--no-verify", "--deterministic", "--no-channels-last",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert [r["epoch"] for r in FoldFolder(run_dir / "fold-0").records()] == [0, 1, 2]
    saved = json.loads((run_dir / "config.json").read_text())
    assert (saved["test_every"], saved["verify"], saved["deterministic"]) == (1, True, False)


def test_every_refusal_names_the_option_given(render, finished, tmp_path):
    run_dir = _copy(finished, tmp_path)
    before = hashes(run_dir)
    base = ("train", render, "--out", run_dir, "--device", "cpu", "--workers", 0)
    fewer = run(*base, "--resume", "--epochs", 1)
    assert_user_error(fewer, f"--epochs: {run_dir} trains for 2 epochs; resume continues up to that number")
    other = run(*base, "--resume", "--epochs", 4, "--batch-size", 4)
    assert_user_error(other, "--batch-size: ")
    assert "batch_size 8 there, 4 here" in other.output
    plain = run(
        *base, "--epochs", 4, "--fold-size", 2, "--val-subjects", 1
    )  # neither --resume nor --overwrite
    assert_user_error(plain, f"--out: {run_dir} holds a run of other settings")
    assert "--overwrite" not in fewer.output + other.output + plain.output
    assert hashes(run_dir) == before
