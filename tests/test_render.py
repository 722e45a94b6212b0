"""`feratt render`, `index` and `inspect` end to end: content, determinism, resume, parts, Dask, errors."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
from cli_helpers import assert_user_error, run, write_backgrounds, write_demo_bank
from fixture_trees import make_coco_tree


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A small demo face bank (3 subjects x 7 classes) and a folder of three background photos."""
    base = tmp_path_factory.mktemp("inputs")
    write_demo_bank(base / "bank.h5", subjects=3)
    write_backgrounds(base / "backgrounds")
    return base


def render_args(inputs, out, *extra):
    return (
        "render",
        inputs / "bank.h5",
        "--out",
        out,
        "--backgrounds",
        inputs / "backgrounds",
        "--size",
        48,
        "--per-face",
        4,
        "--shard-size",
        10,
        *extra,
    )


def shard_contents(out: Path) -> dict[str, dict[str, np.ndarray]]:
    contents = {}
    for path in sorted(out.glob("shards/*/shard-*.h5")):
        with h5py.File(path, "r") as h5:
            contents[str(path.relative_to(out))] = {name: h5[name][()] for name in h5}
    return contents


def assert_same_render(a: Path, b: Path) -> None:
    left, right = shard_contents(a), shard_contents(b)
    assert left.keys() == right.keys() and left
    for shard in left:
        for name in left[shard]:
            np.testing.assert_array_equal(left[shard][name], right[shard][name], err_msg=f"{shard} {name}")
    assert json.loads((a / "index.json").read_text()) == json.loads((b / "index.json").read_text())


@pytest.fixture(scope="module")
def reference(inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "out"
    result = run(*render_args(inputs, out, "--jobs", 1))
    assert result.exit_code == 0, result.output
    return out


def test_render_layout_manifests_and_index(inputs, reference):
    index = json.loads((reference / "index.json").read_text())
    assert index["classes"] == ["neutral", "anger", "disgust", "fear", "happy", "sadness", "surprise"]
    assert index["subjects"] == {"D01": 28, "D02": 28, "D03": 28}
    assert index["totals"]["samples"] == 84 and index["totals"]["shards"] == 9
    assert index["totals"]["class_counts"] == dict.fromkeys(index["classes"], 12)
    assert index["seed"] == 0 and index["render_config"]["size"] == 48
    with h5py.File(inputs / "bank.h5") as h5:
        assert index["bank_sha256"] == h5.attrs["content_sha256"]
    manifest = json.loads((reference / "manifests" / "D02.json").read_text())
    assert manifest["subject"] == "D02" and manifest["samples"] == 28
    assert [s["samples"] for s in manifest["shards"]] == [10, 10, 8]
    assert sum(manifest["class_counts"].values()) == 28
    for shard in manifest["shards"]:
        path = reference / shard["path"]
        assert path.stat().st_size == shard["bytes"]
        with h5py.File(path) as h5:
            assert h5.attrs["subject"] == "D02"
            assert h5["images"].shape == (shard["samples"], 48, 48, 3)
            assert h5["masks"].shape == (shard["samples"], 48, 48)
            assert h5["faces"].shape == (shard["samples"], 48, 48, 3)
            assert h5["labels"].dtype == np.int16
            assert h5["images"].attrs["IMAGE_SUBCLASS"] == b"IMAGE_TRUECOLOR"
            assert h5["images"].compression == "gzip" and h5["images"].chunks == (1, 48, 48, 3)
            assert json.loads(h5.attrs["class_names"]) == index["classes"]
            assert json.loads(h5.attrs["render_config"])["size"] == 48
            assert h5.attrs["seed"] == 0 and h5.attrs["feratt_version"]
            faces = h5["faces"][()]
            masks = h5["masks"][()]
            # The attention target is black wherever the mask is off.
            assert (faces[masks == 0] == 0).all()
            assert set(np.unique(masks)) <= {0, 255} and (masks > 0).any()
    no_temp = [p for p in reference.rglob("*") if p.name.startswith(".")]
    assert no_temp == []


def test_jobs_do_not_change_the_samples(inputs, reference, tmp_path):
    out = tmp_path / "out"
    result = run(*render_args(inputs, out, "--jobs", 2))
    assert result.exit_code == 0, result.output
    assert_same_render(reference, out)


def test_rerun_keeps_complete_shards_and_redoes_damaged_ones(inputs, reference, tmp_path):
    out = tmp_path / "out"
    assert run(*render_args(inputs, out, "--jobs", 1)).exit_code == 0
    again = run(*render_args(inputs, out, "--jobs", 1))
    assert "rendered 0 samples in 0 shards" in again.output and "kept 9 complete shards" in again.output
    damaged = out / "shards" / "D01" / "shard-00001.h5"
    blob = bytearray(damaged.read_bytes())
    blob[-100] ^= 0xFF
    damaged.write_bytes(bytes(blob))
    (out / "shards" / "D03" / "shard-00000.h5").unlink()
    third = run(*render_args(inputs, out, "--jobs", 1))
    assert "rendered 20 samples in 2 shards" in third.output and "kept 7 complete shards" in third.output
    assert_same_render(reference, out)


def test_other_configuration_is_refused_unless_overwrite(inputs, tmp_path):
    out = tmp_path / "out"
    assert run(*render_args(inputs, out, "--jobs", 1)).exit_code == 0
    refused = run(*render_args(inputs, out, "--jobs", 1, "--rotation", 10))
    assert_user_error(refused, "holds a render with another configuration; use --overwrite")
    replaced = run(*render_args(inputs, out, "--jobs", 1, "--rotation", 10, "--overwrite"))
    assert replaced.exit_code == 0, replaced.output
    index = json.loads((out / "index.json").read_text())
    assert index["render_config"]["geometry"]["rotation"] == 10


def test_parts_then_index_equal_one_run(inputs, reference, tmp_path):
    out = tmp_path / "out"
    first = run(*render_args(inputs, out, "--jobs", 1, "--part", "1/2"))
    assert first.exit_code == 0, first.output
    assert "part 1/2: 5 shards" in first.output and "run: feratt index" in first.output
    assert not (out / "index.json").exists()
    assert run(*render_args(inputs, out, "--jobs", 1, "--part", "2/2")).exit_code == 0
    (out / "index.json").unlink()
    result = run("index", out)
    assert result.exit_code == 0, result.output
    assert_same_render(reference, out)


def test_index_names_missing_shards(inputs, tmp_path):
    out = tmp_path / "out"
    assert run(*render_args(inputs, out, "--jobs", 1, "--part", "1/3")).exit_code == 0
    assert_user_error(run("index", out), "shards are missing or incomplete")


def test_dask_backend_matches_loky(inputs, reference, tmp_path):
    distributed = pytest.importorskip("dask.distributed")
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        out = tmp_path / "out"
        result = run(*render_args(inputs, out, "--backend", "dask", "--scheduler", cluster.scheduler_address))
        assert result.exit_code == 0, result.output
    assert_same_render(reference, out)


@pytest.mark.slow
def test_killed_render_resumes_to_the_same_output(inputs, tmp_path):
    out = tmp_path / "out"
    args = render_args(inputs, out, "--jobs", 1, "--per-face", 20)
    command = [sys.executable, "-m", "feratt.cli", *map(str, args)]
    shards = 42  # 3 subjects x 7 faces x 20 samples, 10 a shard

    def finished_shards():
        return len(list(out.glob("shards/*/shard-*.json")))

    seen = []
    for threshold in (3, 15, 30):
        process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + 60
        while finished_shards() < threshold and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        seen.append(finished_shards())
    assert seen[0] < seen[1] < seen[2] < shards, seen
    finished = subprocess.run(command, capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    assert f"kept {seen[2]} complete shards" in finished.stdout
    whole = tmp_path / "whole"
    assert run(*render_args(inputs, whole, "--jobs", 1, "--per-face", 20)).exit_code == 0
    assert_same_render(whole, out)
    samples = np.concatenate([v["sample_index"] for v in shard_contents(out).values()])
    assert sorted(samples.tolist()) == list(range(420))
    assert [p for p in out.rglob("*") if p.name.startswith(".")] == []


def test_inspect_describes_verifies_and_draws(reference, tmp_path):
    result = run("inspect", reference, "--verify", "--sheet", tmp_path / "sheet.png", "--samples", 8)
    assert result.exit_code == 0, result.output
    assert "9 shards, 84 samples" in result.output
    assert "samples per class: neutral 12, anger 12" in result.output
    assert "images   (10, 48, 48, 3)" in result.output and "gzip 1 +shuffle" in result.output
    assert "verified: every checksum and the schema match" in result.output
    assert cv2.imread(str(tmp_path / "sheet.png")).shape[0] == 2 * (48 + 16)


def test_inspect_verify_names_corrupted_and_missing_shards(reference, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(reference, out)
    path = out / "shards" / "D02" / "shard-00002.h5"
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0x55
    path.write_bytes(bytes(blob))
    (out / "shards" / "D01" / "shard-00000.h5").unlink()
    result = run("inspect", out, "--verify")
    assert result.exit_code == 2
    assert "problem: shards/D02/shard-00002.h5: corrupted" in result.output
    assert "problem: shards/D01/shard-00000.h5: missing" in result.output


def test_bad_inputs(inputs, tmp_path):
    assert_user_error(run("render", tmp_path / "none.h5", "--out", tmp_path / "o"), "face bank not found")
    (tmp_path / "empty.h5").write_bytes(b"")
    assert_user_error(run("render", tmp_path / "empty.h5", "--out", tmp_path / "o"), "empty.h5")
    (tmp_path / "not-coco.json").write_text('{"hello": 1}')
    (tmp_path / "images").mkdir()
    result = run(
        "render",
        inputs / "bank.h5",
        "--out",
        tmp_path / "o",
        "--coco-annotations",
        tmp_path / "not-coco.json",
        "--coco-images",
        tmp_path / "images",
    )
    assert_user_error(result, "COCO")
    (tmp_path / "blocker").write_text("a file where the out folder should go")
    result = run("render", inputs / "bank.h5", "--out", tmp_path / "blocker" / "out")
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_undecodable_background_is_skipped_and_recorded(inputs, tmp_path):
    import shutil

    folder = tmp_path / "backgrounds"
    shutil.copytree(inputs / "backgrounds", folder)
    jpeg = (folder / "coffee.jpg").read_bytes()
    (folder / "broken.jpg").write_bytes(jpeg[:200])
    result = run(
        "render",
        inputs / "bank.h5",
        "--out",
        tmp_path / "out",
        "--backgrounds",
        folder,
        "--size",
        48,
        "--per-face",
        2,
        "--shard-size",
        7,
        "--crops-per-background",
        1,
        "--jobs",
        1,
    )
    assert result.exit_code == 0, result.output
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    skipped = index["skipped_backgrounds"]
    assert [s["path"] for s in skipped] == [str(folder / "broken.jpg")]
    assert index["totals"]["samples"] == 42


def test_embedded_backgrounds_are_the_default(inputs, tmp_path, monkeypatch):
    monkeypatch.setenv("FERATT_CACHE", str(tmp_path / "cache"))
    result = run(
        "render", inputs / "bank.h5", "--out", tmp_path / "out", "--size", 48, "--per-face", 1, "--jobs", 1
    )
    assert result.exit_code == 0, result.output
    assert "kept 10 of 10 images" in result.output
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert index["backgrounds"]["kind"] == "embedded" and index["backgrounds"]["count"] == 10
    assert (tmp_path / "cache" / "backgrounds" / "annotations.json").is_file()
    assert "21 samples in 3 shards of 3 subjects; per class: neutral 3, anger 3" in result.output


def test_no_background_left_after_filtering(inputs, tmp_path):
    result = run(
        "render",
        inputs / "bank.h5",
        "--out",
        tmp_path / "out",
        "--backgrounds",
        inputs / "backgrounds",
        "--min-side",
        5000,
    )
    assert_user_error(result, "no background")


def test_render_from_coco(inputs, tmp_path):
    annotations, images = make_coco_tree(tmp_path)
    result = run(
        "render",
        inputs / "bank.h5",
        "--out",
        tmp_path / "out",
        "--coco-annotations",
        annotations,
        "--coco-images",
        images,
        "--size",
        48,
        "--per-face",
        4,
        "--crops-per-background",
        1,
        "--jobs",
        1,
    )
    assert result.exit_code == 0, result.output
    assert f"coco backgrounds from {annotations}: kept 6 of 10 images" in result.output
    assert "left out 2: has person" in result.output
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    used = set()
    for path in (tmp_path / "out").glob("shards/*/shard-*.h5"):
        with h5py.File(path) as h5:
            used |= set(h5["background_ids"].asstr()[()])
    # Images 2 and 9 show people; 6 is missing, 7 empty, and 8 is truncated, so it fails to decode.
    assert used == {"1", "3", "4", "5", "10"}
    assert [s["path"] for s in index["skipped_backgrounds"]] == [str(Path(images) / "000000000008.jpg")]
    assert index["backgrounds"]["kind"] == "coco" and index["totals"]["samples"] == 84


def test_a_moved_bank_with_the_same_content_resumes(inputs, tmp_path):
    import shutil

    out = tmp_path / "out"
    assert run(*render_args(inputs, out, "--jobs", 1)).exit_code == 0
    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.copy(inputs / "bank.h5", moved / "bank.h5")
    args = list(render_args(inputs, out, "--jobs", 1))
    args[1] = moved / "bank.h5"
    again = run(*args)
    assert again.exit_code == 0, again.output
    assert "rendered 0 samples in 0 shards" in again.output and "kept 9 complete shards" in again.output
