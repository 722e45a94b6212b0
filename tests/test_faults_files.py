"""Fault probes of files that lie about themselves (issue 21, round 3): shards that break the schema with a
valid checksum, checkpoints, framings and indexes with numbers that would size huge arrays, and a small
bank that declares huge faces.

Each runs the command line and checks the exit status, the one `Error:` line, and that the input files
did not change.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from cli_helpers import assert_user_error, hashes, render_tiny, reseal, run
from model_helpers import untrained_checkpoint, write_rgb
from skimage import data

SHARD = "shards/D01/shard-00000.h5"


@pytest.fixture(scope="module")
def render(tmp_path_factory) -> Path:
    """A 64 px render of 4 demo subjects."""
    return render_tiny(tmp_path_factory.mktemp("faults-files"))


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return untrained_checkpoint(tmp_path_factory.mktemp("model") / "model.pt", "baseline")


@pytest.fixture(scope="module")
def face(tmp_path_factory) -> Path:
    return write_rgb(tmp_path_factory.mktemp("face") / "face.png", data.astronaut()[20:240, 150:370])


def _replace(h5: h5py.File, name: str, **dataset) -> None:
    del h5[name]
    h5.create_dataset(name, **dataset)


#: Ways to break a shard's schema, and the problem each is reported with.
BROKEN_SHARDS = {
    "label 99": (lambda h5, n: h5["labels"].__setitem__(0, 99), "labels outside 0..6"),
    "label -1": (lambda h5, n: h5["labels"].__setitem__(0, -1), "labels outside 0..6"),
    "short labels": (
        lambda h5, n: _replace(h5, "labels", data=h5["labels"][:5]),
        "dataset labels is int16 (5,)",
    ),
    "float labels": (
        lambda h5, n: _replace(h5, "labels", data=h5["labels"][()].astype(np.float32)),
        "dataset labels is float32 (14,)",
    ),
    "float images": (
        lambda h5, n: _replace(h5, "images", data=h5["images"][()].astype(np.float32)),
        "dataset images is float32 (14, 64, 64, 3)",
    ),
    "8x8 images": (
        lambda h5, n: _replace(h5, "images", data=np.zeros((n, 8, 8, 3), np.uint8)),
        "dataset images is uint8 (14, 8, 8, 3)",
    ),
    "60000x60000 images": (  # declared, never written: a file of a few KB
        lambda h5, n: _replace(
            h5, "images", shape=(n, 60000, 60000, 3), dtype=np.uint8, chunks=(1, 64, 64, 3)
        ),
        "dataset images is uint8 (14, 60000, 60000, 3)",
    ),
}


def broken_render(render: Path, folder: Path, how: str) -> Path:
    shutil.copytree(render, folder)
    with h5py.File(folder / SHARD, "r+") as h5:
        BROKEN_SHARDS[how][0](h5, h5["labels"].shape[0])
    reseal(folder, SHARD)
    return folder


# ---------------------------------------------------------------------- 8: one schema check, everywhere


@pytest.mark.parametrize("how", list(BROKEN_SHARDS))
def test_verify_and_train_refuse_a_shard_that_breaks_the_schema(render, tmp_path, how):
    broken = broken_render(render, tmp_path / "render", how)
    problem = BROKEN_SHARDS[how][1]
    before = hashes(broken)
    verified = run("inspect", broken, "--verify")
    assert_user_error(verified, "verification failed: 1 problems")
    assert f"problem: {SHARD}: {problem}" in verified.output
    trained = run(
        "train", broken, "--out", tmp_path / "run", "--method", "baseline", "--preset", "cpu-small",
        "--epochs", 1, "--max-batches", 1, "--batch-size", 4, "--fold-size", 1, "--val-subjects", 0,
        "--workers", 0, "--device", "cpu", "--no-verify",
    )  # fmt: skip
    assert_user_error(trained, f"{SHARD} does not follow the shard schema ({problem})")
    assert hashes(broken) == before


# ------------------------------------------------------------------- 9: numbers in model files, bounded


def tampered_checkpoint(model: Path, target: Path, change) -> Path:
    state = torch.load(model, map_location="cpu", weights_only=True)
    change(state)
    torch.save(state, target)
    return target


CHECKPOINT_LIES = {
    "1e9 classes": (
        lambda s: s.update(num_classes=10**9),
        "it declares 1000000000 classes and names 7 (feratt reads 1 to 1000)",
    ),
    "3 names on 7 classes": (
        lambda s: s.update(classes=s["classes"][:3]),
        "it declares 7 classes and names 3 (feratt reads 1 to 1000)",
    ),
    "3 classes on a 7-class model": (
        lambda s: s.update(classes=s["classes"][:3], num_classes=3),
        "does not fit its own configuration: size mismatch for net.fc.weight: copying a param with shape",
    ),
    "a framing of 200000 px": (
        lambda s: s["framing"].update(bank_size=200000),
        "framing sizes must be whole numbers from 1 to 1024",
    ),
    "a framing margin of 1e6": (
        lambda s: s["framing"].update(bank_margin=1e6),
        "framing margins must be numbers from 0 to 2",
    ),
}


@pytest.mark.parametrize("lie", list(CHECKPOINT_LIES))
def test_predict_refuses_a_checkpoint_whose_numbers_lie(model, face, tmp_path, lie):
    change, message = CHECKPOINT_LIES[lie]
    checkpoint = tampered_checkpoint(model, tmp_path / "lying.pt", change)
    before = hashes(tmp_path)
    assert_user_error(run("predict", checkpoint, face, "--device", "cpu"), message)
    assert hashes(tmp_path) == before


def rewrite_index(render: Path, folder: Path, change) -> Path:
    shutil.copytree(render, folder)
    index = json.loads((folder / "index.json").read_text())
    change(index)
    (folder / "index.json").write_text(json.dumps(index))
    return folder


INDEX_LIES = {
    "a framing of 10^6 px": (
        lambda index: index["framing"].update(size=10**6, bank_size=10**6),
        "framing sizes must be whole numbers from 1 to 1024",
    ),
    "100000 classes": (
        lambda index: index.update(classes=[f"c{i}" for i in range(100000)]),
        "100000 classes",
    ),
}


@pytest.mark.parametrize("lie", list(INDEX_LIES))
def test_train_refuses_an_index_whose_numbers_lie_before_writing(render, tmp_path, lie):
    change, message = INDEX_LIES[lie]
    lying = rewrite_index(render, tmp_path / "render", change)
    before = hashes(tmp_path)
    result = run(
        "train", lying, "--out", tmp_path / "run", "--method", "baseline", "--preset", "cpu-small",
        "--epochs", 1, "--fold-size", 1, "--val-subjects", 0, "--device", "cpu",
    )  # fmt: skip
    assert_user_error(result, message)
    assert hashes(tmp_path) == before and not (tmp_path / "run").exists()


# ---------------------------------------------------------------- 11: a small bank that declares huge faces


def test_render_refuses_a_small_bank_that_declares_huge_faces(render, tmp_path):
    bank = tmp_path / "huge.h5"
    with h5py.File(render.parent / "bank.h5", "r") as real, h5py.File(bank, "w") as h5:
        count = real["labels"].shape[0]
        for name in real:
            if name not in ("images", "masks"):
                real.copy(name, h5)
        h5.attrs.update(real.attrs)
        h5.attrs["face_size"] = 12000
        h5.create_dataset("images", (count, 12000, 12000, 3), np.uint8, chunks=(1, 64, 64, 3))
        h5.create_dataset("masks", (count, 12000, 12000), np.uint8, chunks=(1, 64, 64))
    assert bank.stat().st_size < 100_000
    before = hashes(tmp_path)
    result = run(
        "render", bank, "--out", tmp_path / "out", "--backgrounds", render.parent / "backgrounds", "-j", 1
    )
    assert_user_error(result, "12000")
    assert "1024" in result.output.strip().splitlines()[-1]
    assert hashes(tmp_path) == before and not (tmp_path / "out").exists()
