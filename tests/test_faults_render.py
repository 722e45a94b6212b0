"""Fault probes of `render`, `index` and `inspect`: second writers, kills, bad files and full disks."""

from __future__ import annotations

import errno
import hashlib
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import assert_user_error, hashes, render_tiny, run, write_backgrounds, write_demo_bank
from lock_helpers import held_by_child

from feratt.artifacts.output import MARKER, claim_output
from feratt.errors import FerattError
from feratt.experiments.noise import noise_robustness
from feratt.jsonfile import read_json

HOST = socket.gethostname()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A demo face bank of 2 subjects x 7 classes and two background photos."""
    base = tmp_path_factory.mktemp("inputs")
    write_demo_bank(base / "bank.h5", subjects=2, size=64)
    write_backgrounds(base / "backgrounds", names=("coffee", "chelsea"))
    return base


def render_args(inputs, out, *extra):
    """32 px, 2 samples a face, 4 a shard: 28 samples in 8 shards (4 a subject)."""
    return (
        "render", inputs / "bank.h5", "--out", out, "--backgrounds", inputs / "backgrounds",
        "--size", 32, "--per-face", 2, "--shard-size", 4, "--jobs", 1, *extra,
    )  # fmt: skip


@pytest.fixture(scope="module")
def reference(inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "out"
    result = run(*render_args(inputs, out))
    assert result.exit_code == 0, result.output
    return out


def copy_of(reference: Path, out: Path) -> Path:
    import shutil

    shutil.copytree(reference, out)
    return out


# ------------------------------------------------------------------------------------------ second writers


def test_a_second_render_into_a_held_folder_is_refused_and_changes_nothing(inputs, reference, tmp_path):
    out = copy_of(reference, tmp_path / "out")
    before = hashes(out)
    with held_by_child(out) as pid:
        for seed in ("0", "1"):
            result = run(*render_args(inputs, out, "--seed", seed))
            assert_user_error(result, f"the render folder {out} is being written by another feratt process")
            assert f"(pid {pid} on {HOST})" in result.output
            assert len(result.output.strip().splitlines()) == 1
        assert_user_error(run("index", out), f"(pid {pid} on {HOST})")
    assert hashes(out) == before


def test_a_full_render_is_refused_while_a_part_holds_the_folder(inputs, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with held_by_child(out, shared=True) as pid:
        assert_user_error(run(*render_args(inputs, out)), f"(pid {pid} on {HOST})")
        assert_user_error(run("index", out), f"(pid {pid} on {HOST})")
        # Another part of the plan shares the folder.
        result = run(*render_args(inputs, out, "--part", "1/2"))
        assert result.exit_code == 0, result.output
    assert len(list(out.glob("shards/*/shard-*.h5"))) == 4


def test_a_part_is_refused_while_a_full_render_holds_the_folder(inputs, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with held_by_child(out) as pid:
        assert_user_error(run(*render_args(inputs, out, "--part", "2/2")), f"(pid {pid} on {HOST})")
    assert [path.name for path in out.iterdir()] == [".feratt.lock"]


def test_a_part_leaves_a_shard_that_another_writer_holds(inputs, reference, tmp_path):
    out = claim_output(tmp_path / "out", "render", overwrite=False)  # as the holder claimed it
    held = out / "shards" / "D01" / "shard-00000.h5"
    held.parent.mkdir(parents=True)
    stale = held.with_name(".shard-00000.h5.x1.tmp.h5")
    stale.write_bytes(b"left by the holder")
    with held_by_child(held):
        result = run(*render_args(inputs, out, "--part", "1/2"))
        assert result.exit_code == 0, result.output
        assert "rendered 12 samples in 3 shards" in result.output
        assert not held.exists() and stale.exists()
    result = run(*render_args(inputs, out, "--part", "1/2"))
    assert result.exit_code == 0 and "rendered 4 samples in 1 shards" in result.output, result.output
    assert not stale.exists()
    assert run(*render_args(inputs, out, "--part", "2/2")).exit_code == 0
    assert hashes(out) == hashes(reference)


def test_a_part_never_replaces_another_configuration(inputs, reference, tmp_path):
    out = copy_of(reference, tmp_path / "out")
    before = hashes(out)
    result = run(*render_args(inputs, out, "--part", "1/2", "--seed", 1, "--overwrite"))
    assert_user_error(result, f"--part: {out} holds a render with another configuration; a part never")
    assert hashes(out) == before


def test_parts_run_side_by_side_and_add_up_to_one_render(inputs, reference, tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "feratt.cli"]
    parts = [
        subprocess.Popen(
            [*command, *map(str, render_args(inputs, out, "--part", f"{i}/2"))],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in (1, 2)
    ]
    for part in parts:
        output, _ = part.communicate(timeout=120)
        assert part.returncode == 0, output
    if not (out / "index.json").exists():  # both finished at once, each before the other's last shard
        assert run("index", out).exit_code == 0
    assert hashes(out) == hashes(reference)
    assert read_json(out / "index.json")["totals"]["samples"] == 28


# ------------------------------------------------------------------------------------- kills and failures


def test_a_rerun_removes_what_a_killed_render_left(inputs, reference, tmp_path):
    out = copy_of(reference, tmp_path / "out")
    (out / "shards" / "D02" / "shard-00001.h5").unlink()
    stale = [
        out / "shards" / "D01" / ".shard-00002.h5.a1b2.tmp.h5",
        out / "shards" / "D02" / ".shard-00001.json.c3d4.tmp.json",
        out / "shards" / "D02" / ".shard-00001.h5.lock",
        out / "manifests" / ".D01.json.e5f6.tmp.json",
        out / ".index.json.g7h8.tmp.json",
        out / ".feratt-write-check.i9j0",
    ]
    for path in stale:
        path.write_bytes(b"left by kill -9")
    result = run(*render_args(inputs, out))
    assert result.exit_code == 0, result.output
    assert [path for path in stale if path.exists()] == []
    assert sorted(p for p in out.rglob("*") if p.name.startswith(".")) == [out / MARKER, out / ".feratt.lock"]
    assert hashes(out) == hashes(reference)


def test_a_failing_render_leaves_no_folder_it_created(inputs, tmp_path):
    out = tmp_path / "new" / "out"
    assert_user_error(run("render", tmp_path / "none.h5", "--out", out), "face bank not found")
    assert not out.exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    assert_user_error(run("render", tmp_path / "none.h5", "--out", kept), "face bank not found")
    assert kept.is_dir()


# ------------------------------------------------------------------------------------------ bad files


@pytest.mark.parametrize(
    ("garbage", "problem"),
    [
        (b"\x00\x01 not json", "index.json: not valid JSON"),
        (b"[1, 2, 3]", "index.json: not a JSON object"),
        (b'{"hello": 1}', "index.json: classes missing"),
        ("subjects", 'index.json: subjects is {"D01": 1}, expected {"D01": 14, "D02": 14}'),
        ("totals", "index.json: totals.samples is 5, expected 28"),
        ("classes", 'index.json: classes is ["a"], expected'),
    ],
)
def test_verify_rejects_a_garbage_index(reference, tmp_path, garbage, problem):
    out = copy_of(reference, tmp_path / "out")
    index = out / "index.json"
    if isinstance(garbage, bytes):
        index.write_bytes(garbage)
    else:
        payload = read_json(index)
        payload[garbage] = {"subjects": {"D01": 1}, "classes": ["a"]}.get(garbage) or {
            **payload["totals"],
            "samples": 5,
        }
        index.write_text(json.dumps(payload))
    before = hashes(out)
    result = run("inspect", out, "--verify")
    assert_user_error(result, "verification failed")
    assert f"problem: {problem}" in result.output
    assert hashes(out) == before


@pytest.mark.parametrize(
    ("garbage", "problem"),
    [
        (b"{{{", "shards/D01/shard-00001.json: not valid JSON"),
        (b'"a string"', "shards/D01/shard-00001.json: not a JSON object"),
        (b'{"hello": 1}', "shards/D01/shard-00001.json: path missing"),
        ("sha256", "shards/D01/shard-00001.json: sha256 differs from the shard's"),
        ("bytes", "shards/D01/shard-00001.json: bytes is 1, expected"),
        ("class_counts", "shards/D01/shard-00001.json: class_counts is {}, expected"),
    ],
)
def test_verify_rejects_a_garbage_sidecar(reference, tmp_path, garbage, problem):
    out = copy_of(reference, tmp_path / "out")
    sidecar = out / "shards" / "D01" / "shard-00001.json"
    if isinstance(garbage, bytes):
        sidecar.write_bytes(garbage)
    else:
        record = read_json(sidecar)
        record[garbage] = {"sha256": "0" * 64, "bytes": 1, "class_counts": {}}[garbage]
        sidecar.write_text(json.dumps(record))
    result = run("inspect", out, "--verify")
    assert_user_error(result, "verification failed")
    assert f"problem: {problem}" in result.output


def test_verify_rejects_a_garbage_manifest_and_run_file(reference, tmp_path):
    out = copy_of(reference, tmp_path / "out")
    manifest = out / "manifests" / "D02.json"
    payload = read_json(manifest)
    payload["shards"][0] = {"path": 3}
    manifest.write_text(json.dumps(payload))
    result = run("inspect", out, "--verify")
    assert_user_error(result, "verification failed")
    assert 'problem: manifests/D02.json: a shard entry is not valid: {"path": 3}' in result.output
    assert "problem: shards/D02/shard-00000.h5: not in manifests/D02.json" in result.output
    (out / "render.json").write_text('{"shards": 1}')
    result = run("inspect", out, "--verify")
    assert_user_error(result, "verification failed: 1 problems")
    assert "problem: render.json: not a feratt render file" in result.output


# ------------------------------------------------------------------------------------------ other outputs


def test_an_experiment_into_a_held_folder_is_refused_before_writing(tmp_path):
    (tmp_path / "inputs").mkdir()
    shards = render_tiny(tmp_path / "inputs", 4, shard_size=14)
    out = tmp_path / "exp"
    out.mkdir()
    with held_by_child(out) as pid:
        result = run(
            "experiment", shards, "--out", out, "--methods", "baseline", "--preset", "cpu-small",
            "--epochs", 1, "--max-batches", 1, "--fold-size", 2, "--val-subjects", 1, "--workers", 0,
            "--device", "cpu",
        )  # fmt: skip
        assert_user_error(result, f"the experiment folder {out} is being written by another feratt process")
        assert f"(pid {pid} on {HOST})" in result.output
    assert [path.name for path in out.iterdir()] == [".feratt.lock"]


def test_noise_into_a_held_folder_is_refused_before_scoring(reference, tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "fold-0").mkdir(parents=True)
    (run_dir / "fold-0" / "best.pt").write_bytes(b"never loaded: the lock is taken first")
    out = tmp_path / "noise"
    out.mkdir()
    with held_by_child(out) as pid, pytest.raises(FerattError, match=f"pid {pid} on {HOST}"):
        noise_robustness(runs=[run_dir], render=reference, sigmas=[0.1], out=out, device="cpu")
    assert [path.name for path in out.iterdir()] == [".feratt.lock"]


# ------------------------------------------------------------------------------------------ full disk


def test_a_full_disk_ends_the_render_with_one_line_and_a_rerun_resumes(
    inputs, reference, tmp_path, monkeypatch
):
    import feratt.renderer.engine as render_module

    real_write = render_module.write_shard
    written: list[Path] = []

    def write_until_full(path, *args, **kwargs):
        if len(written) == 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        written.append(Path(path))
        return real_write(path, *args, **kwargs)

    monkeypatch.setattr(render_module, "write_shard", write_until_full)
    out = tmp_path / "out"
    result = run(*render_args(inputs, out))
    assert_user_error(result, ": No space left on device; the 3 complete shards in ")
    last = result.output.strip().splitlines()[-1]
    assert last.startswith(f"Error: {out / 'shards'}/") and "rerun the same command to resume" in last
    kept = {path: hashlib.sha256(path.read_bytes()).hexdigest() for path in written}
    assert len(kept) == 3 and not list(out.rglob("*.tmp*"))
    monkeypatch.setattr(render_module, "write_shard", real_write)
    again = run(*render_args(inputs, out))
    assert again.exit_code == 0 and "kept 3 complete shards" in again.output, again.output
    assert {path: hashlib.sha256(path.read_bytes()).hexdigest() for path in written} == kept
    assert hashes(out) == hashes(reference)
