"""Files written by feratt 0.1.0 (tests/data/legacy-0.1.0, see its README) still read with today's classes,
and today's stages still use them: a bank, a render, a run folder and its checkpoints."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from feratt.artifacts.bank import FaceBank
from feratt.artifacts.checkpoint import Checkpoint
from feratt.artifacts.render import RenderSet
from feratt.artifacts.run import RunFolder
from feratt.config.framing import Framing
from feratt.experiments.evaluate import evaluate
from feratt.training.checkpoints import load_trained
from feratt.training.data import ShardStream
from feratt.training.train import train

LEGACY = Path(__file__).parent / "data" / "legacy-0.1.0"
CLASSES = ("neutral", "anger", "disgust", "fear", "happy", "sadness", "surprise")
SUBJECTS = ["D01", "D02", "D03", "D04"]


@pytest.fixture
def legacy(tmp_path) -> Path:
    """A copy of the legacy files, so that a test may write beside them."""
    shutil.copytree(LEGACY, tmp_path / "legacy")
    return tmp_path / "legacy"


def test_a_legacy_bank_opens_and_verifies():
    bank = FaceBank.open(LEGACY / "bank.h5")
    assert len(bank) == 28 and bank.classes == CLASSES and bank.size == 48
    assert sorted(set(bank.subjects)) == SUBJECTS and bank.labels.tolist() == list(range(7)) * 4
    assert (
        bank.header.format == "demo" and bank.header.margin == 0.2 and bank.header.feratt_version == "0.1.0"
    )
    assert bank.images[3].shape == (48, 48, 3) and set(np.unique(bank.masks[3])) == {0, 255}
    assert bank.content_checksum() == bank.checksum


def test_a_legacy_render_opens_verifies_and_streams():
    render = RenderSet.open(LEGACY / "render")
    assert render.classes == CLASSES and render.subjects == dict.fromkeys(SUBJECTS, 7)
    assert render.totals.samples == 28 and render.totals.class_counts == dict.fromkeys(CLASSES, 4)
    assert render.config.size == 32 and render.config.fit_mask == 0.05
    assert render.framing == Framing(bank_size=48, bank_margin=0.2, size=32, fit_mask=0.05)
    assert render.verify() == []
    refs = render.shards(["D02", "D01"])
    assert [ref.subject for ref in refs] == ["D02", "D01"] and sum(ref.samples for ref in refs) == 14
    labels = sorted(int(item["label"]) for item in ShardStream(refs, verify=True))
    assert labels == sorted(list(range(7)) * 2)


def test_a_legacy_run_folder_reads_whole():
    run = RunFolder(LEGACY / "run")
    config = run.config()
    assert (config.method, config.in_size, config.width, config.epochs) == ("baseline", 32, 0.05, 2)
    assert run.extensions() == []
    folds = run.folds().test_folds()
    assert len(folds) == 2 and sorted(s for fold in folds for s in fold) == SUBJECTS
    summary = run.summary()
    assert summary.method == "baseline" and summary.classes == list(CLASSES) and summary.run_dir == run.path
    assert [fold.fold for fold in summary.folds] == [0] and summary.folds[0].final is not None
    fold = run.fold(0)
    assert [record["epoch"] for record in fold.records()] == [0, 1] and fold.finished(2)
    assert run.folds_present() == [0]


def test_legacy_checkpoints_load_and_score(legacy):
    last = Checkpoint.load(LEGACY / "run" / "fold-0" / "last.pt")
    best = Checkpoint.load(LEGACY / "run" / "fold-0" / "best.pt")
    assert (last.method, last.classes, last.fold, last.epoch) == ("baseline", CLASSES, 0, 1)
    assert last.optimizer is not None and best.optimizer is None and last.rng is not None
    assert last.framing == Framing(bank_size=48, bank_margin=0.2, size=32, fit_mask=0.05)
    assert last.feratt_version == "0.1.0" and last.config == RunFolder(LEGACY / "run").config()
    trained = load_trained(LEGACY / "run", fold=0)
    assert trained.classes == list(CLASSES) and trained.framing == last.framing
    result = evaluate(run=legacy / "run", render=legacy / "render", fold=0, device="cpu")
    assert result.splits["synthetic"].samples == 14


def test_a_legacy_run_resumes_with_more_epochs(legacy):
    run = RunFolder(legacy / "run")
    config = replace(run.config(), epochs=3, workers=0)
    train(render=legacy / "render", run=run.path, config=config, folds=0, resume=True, device="cpu")
    assert [record["epoch"] for record in run.fold(0).records()] == [0, 1, 2]
    assert [(e.epochs_before, e.epochs) for e in run.extensions()] == [(2, 3)]
    assert Checkpoint.load(run.fold(0).last).epoch == 2
