"""Fault probes of training and checkpoints through the command line: hostile checkpoints, a run folder of
another configuration, a second writer, a bad --config and a full disk each end in one `Error:` line."""

from __future__ import annotations

import errno
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from cli_helpers import assert_user_error, hashes, render_tiny, run

from feratt.artifacts.checkpoint import Checkpoint
from feratt.artifacts.run import FoldFolder


class _Planted:
    """Unpickling this creates the file `marker`: what a hostile checkpoint could do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def train_args(render: Path, run_dir: Path, *extra) -> list:
    """`feratt train` arguments of a one-epoch, one-batch baseline on the tiny render (at lr 1e-4, with
    which a second epoch improves on validation)."""
    return [
        "train", render, "--out", run_dir, "--method", "baseline", "--preset", "cpu-small", "--epochs", 1,
        "--max-batches", 1, "--batch-size", 8, "--lr", 1e-4, "--fold-size", 2, "--val-subjects", 1,
        "--workers", 0, "--device", "cpu", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def render(tmp_path_factory) -> Path:
    """A 64 px render of 4 demo subjects: folds of 2 test subjects."""
    return render_tiny(tmp_path_factory.mktemp("faults-training"))


@pytest.fixture(scope="module")
def trained(render, tmp_path_factory) -> Path:
    """A finished one-epoch run of fold 0, to copy."""
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    result = run(*train_args(render, run_dir))
    assert result.exit_code == 0, result.output
    return run_dir


def test_a_checkpoint_holds_only_plain_data_and_loads_with_weights_only(trained):
    for name in ("best.pt", "last.pt"):
        path = trained / "fold-0" / name
        state = torch.load(path, map_location="cpu", weights_only=True)
        assert isinstance(state["best_accuracy"], float) and isinstance(state["rng"]["torch"], torch.Tensor)
        assert Checkpoint.load(path).method == "baseline"


@pytest.mark.parametrize("command", ["predict", "evaluate", "noise", "embed", "train --resume"])
def test_a_hostile_checkpoint_runs_no_code(render, trained, tmp_path, command):
    run_dir = tmp_path / "run"
    shutil.copytree(trained, run_dir)
    marker = tmp_path / "planted"
    for name in ("best.pt", "last.pt"):
        torch.save({"checkpoint_version": 1, "payload": _Planted(marker)}, run_dir / "fold-0" / name)
    image = render.parent / "backgrounds" / "coffee.jpg"
    args = {
        "predict": ["predict", run_dir, image, "--device", "cpu"],
        "evaluate": ["evaluate", run_dir, "--shards", render, "--device", "cpu"],
        "noise": ["noise", run_dir, "--shards", render, "--device", "cpu", "--out", tmp_path / "noise"],
        "embed": ["embed", run_dir, "--shards", render, "--device", "cpu"],
        "train --resume": train_args(render, run_dir, "--resume"),
    }[command]
    result = run(*args)
    assert not marker.exists()
    assert_user_error(result, "refuses to load")
    assert len([line for line in result.output.splitlines() if line.startswith("Error:")]) == 1


def test_a_checkpoint_of_the_wrong_shape_is_refused_in_one_line(trained, tmp_path):
    from feratt.errors import FerattError

    state = torch.load(trained / "fold-0" / "best.pt", map_location="cpu", weights_only=True)
    for broken in ({**state, "method": 5}, {**state, "model": {"w": "x"}}, {**state, "classes": [1, 2]}):
        torch.save(broken, tmp_path / "broken.pt")
        with pytest.raises(FerattError, match="not a valid feratt checkpoint"):
            Checkpoint.load(tmp_path / "broken.pt")
    (tmp_path / "short.pt").write_bytes((trained / "fold-0" / "best.pt").read_bytes()[:100])
    assert_user_error(
        run("predict", tmp_path / "short.pt", trained / "config.json"), "cannot read checkpoint"
    )


def error_lines(result) -> list[str]:
    """The `Error:` lines of a command's output."""
    return [line for line in result.output.splitlines() if line.startswith("Error:")]


@pytest.fixture(scope="module")
def two_folds(render, trained, tmp_path_factory) -> Path:
    """The finished run with fold 1 trained too, by a second `feratt train` into the same folder."""
    run_dir = tmp_path_factory.mktemp("two-folds") / "run"
    shutil.copytree(trained, run_dir)
    before = hashes(run_dir)
    result = run(*train_args(render, run_dir, "--fold", 1))
    assert result.exit_code == 0, result.output
    after = hashes(run_dir)
    assert {k: after[k] for k in before if k != "summary.json"} == {
        k: before[k] for k in before if k != "summary.json"
    }
    assert {"fold-1/best.pt", "fold-1/last.pt", "fold-1/metrics.jsonl"} <= set(after)
    return run_dir


def test_train_refuses_a_run_folder_of_another_configuration(render, two_folds, tmp_path):
    before = hashes(two_folds)
    result = run(*train_args(render, two_folds, "--lr", 0.5))
    assert_user_error(result, f"--out: {two_folds} holds a run of other settings (lr 0.0001 there, 0.5 here)")
    line = error_lines(result)[0]
    assert "resume" in line and "overwrite" in line
    assert len(error_lines(result)) == 1 and hashes(two_folds) == before
    resumed = run(*train_args(render, two_folds, "--lr", 0.5, "--resume"))
    assert_user_error(
        resumed, f"--lr: {two_folds} was trained with other settings (lr 0.0001 there, 0.5 here)"
    )
    assert hashes(two_folds) == before


def test_train_refuses_a_fold_trained_already_unless_resumed(render, two_folds):
    before = hashes(two_folds)
    result = run(*train_args(render, two_folds, "--fold", 1))
    assert_user_error(
        result, f"--out: fold 1 of {two_folds} is trained already (1 epochs); resume to continue"
    )
    assert "overwrite to train it again" in error_lines(result)[0]
    assert hashes(two_folds) == before
    both = run(*train_args(render, two_folds, "--resume", "--overwrite"))
    assert_user_error(both, "--overwrite: resume continues a run and overwrite starts it again")
    assert hashes(two_folds) == before


def test_resume_ignores_per_run_options_and_reads_older_configs_with_defaults(render, two_folds, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(two_folds, run_dir)
    saved = json.loads((run_dir / "config.json").read_text())
    del saved["samples_per_epoch"]  # as a run saved before that option existed
    (run_dir / "config.json").write_text(json.dumps(saved))
    before = hashes(run_dir)
    result = run(
        *train_args(render, run_dir, "--resume", "--no-verify", "--real-test", render.parent / "bank.h5")
    )
    assert result.exit_code == 0, result.output
    after = hashes(run_dir)
    assert {k: v for k, v in after.items() if k != "summary.json"} == {
        k: v for k, v in before.items() if k != "summary.json"
    }


def test_train_refuses_a_run_folder_of_another_render(render, trained, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(trained, run_dir)
    folds = json.loads((run_dir / "folds.json").read_text())
    folds["folds"][0]["test"] = ["X01", "X02"]
    (run_dir / "folds.json").write_text(json.dumps(folds))
    before = hashes(run_dir)
    assert_user_error(run(*train_args(render, run_dir, "--fold", 1)), "SHARDS: ")
    assert "holds a run of another render or fold split" in error_lines(run(*train_args(render, run_dir)))[0]
    assert hashes(run_dir) == before


def test_overwrite_replaces_the_trained_folds_files_and_nothing_else(render, two_folds, tmp_path):
    run_dir = tmp_path / "runs" / "run"
    shutil.copytree(two_folds, run_dir)
    (run_dir / "fold-0" / "notes.txt").write_text("mine")
    (tmp_path / "runs" / "beside.txt").write_text("also mine")
    before, outside = hashes(run_dir), hashes(tmp_path / "runs")
    for name in before:  # an mtime of 0 survives only where a file is not written again
        os.utime(run_dir / name, (0, 0))
    result = run(*train_args(render, run_dir, "--overwrite"))
    assert result.exit_code == 0, result.output
    after = hashes(run_dir)
    kept = [
        k for k in before if k.startswith("fold-1/") or k in ("fold-0/notes.txt", "folds.json", "config.json")
    ]
    assert kept and all(after[k] == before[k] and (run_dir / k).stat().st_mtime == 0 for k in kept)
    for name in ("fold-0/best.pt", "fold-0/last.pt", "fold-0/metrics.jsonl"):
        assert (run_dir / name).stat().st_mtime != 0, f"{name} was not written again"
    assert hashes(tmp_path / "runs")["beside.txt"] == outside["beside.txt"]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--lr", 0.5), "--lr: {run} was trained with other settings (lr 0.0001 there, 0.5 here)"),
        (
            ("--method", "feratt-cls"),
            "--method: {run} was trained with other settings (method 'baseline' there",
        ),
    ],
)
def test_overwrite_never_changes_the_runs_settings(render, two_folds, flags, message):
    before = hashes(two_folds)
    result = run(*train_args(render, two_folds, "--fold", 1, "--overwrite", *flags))
    assert_user_error(result, message.format(run=two_folds))
    assert "overwrite trains its folds again with the run's own settings" in error_lines(result)[0]
    assert hashes(two_folds) == before


def test_the_summary_covers_every_finished_fold(two_folds):
    summary = json.loads((two_folds / "summary.json").read_text())
    assert [fold["fold"] for fold in summary["folds"]] == [0, 1]


def test_refused_settings_leave_nothing_and_the_corrected_rerun_goes(render, tmp_path):
    run_dir = tmp_path / "run"
    refused = run(*train_args(render, run_dir, "--val-subjects", 10))
    assert_user_error(refused, "--val-subjects: fold 0 has 2 training subjects, too few to hold 10 out")
    assert not run_dir.exists()
    for flag, value, what in (
        ("--batch-size", 10**9, "a batch of 1000000000"),
        ("--samples-per-epoch", 10**12, "an epoch of 1000000000000 samples"),
    ):
        too_many = run(*train_args(render, run_dir, flag, value))
        assert_user_error(too_many, f"{flag}: {what} is more than the 14 training samples of fold 0")
        assert not run_dir.exists()
    assert run(*train_args(render, run_dir)).exit_code == 0


def tampered_last(trained: Path, run_dir: Path, change) -> Path:
    shutil.copytree(trained, run_dir)
    last = run_dir / "fold-0" / "last.pt"
    state = torch.load(last, map_location="cpu", weights_only=True)
    change(state)
    torch.save(state, last)
    return last


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s.update(epoch=-5), "says it holds epoch -5 (best accuracy"),
        (lambda s: s.update(epoch=10**9), "says it holds epoch 1000000000 (best accuracy"),
        (lambda s: s.update(best_accuracy=7.0), "(best accuracy 7.0); this run's epochs are 0 to 1"),
        (lambda s: s.update(optimizer={"state": {}, "param_groups": "no"}), "optimizer"),
        (lambda s: s.update(rng={"torch": torch.zeros(3)}), "random"),
    ],
    ids=["epoch -5", "epoch 1e9", "accuracy 7", "optimizer", "rng"],
)
def test_resume_refuses_a_tampered_last_pt_in_one_line(render, trained, tmp_path, change, message):
    last = tampered_last(trained, tmp_path / "run", change)
    before = hashes(tmp_path)
    result = run(*train_args(render, tmp_path / "run", "--epochs", 2, "--resume"))
    assert_user_error(result, message)
    assert str(last) in error_lines(result)[0]
    assert len(error_lines(result)) == 1
    # The run folder records the extension to 2 epochs; its checkpoints stay as they were.
    assert {k: v for k, v in hashes(tmp_path).items() if k.endswith(".pt")} == {
        k: v for k, v in before.items() if k.endswith(".pt")
    }


def test_render_overwrite_is_refused_while_a_training_reads_the_render(render, tmp_path):
    from feratt.artifacts.render import RenderSet

    copy = tmp_path / "render"
    shutil.copytree(render, copy)
    reader = subprocess.Popen(
        [
            sys.executable, "-c",
            "import sys, time; from feratt.artifacts.render import RenderSet\n"
            "with RenderSet(sys.argv[1]).reading():\n    print('reading', flush=True); time.sleep(120)",
            str(copy),
        ],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert reader.stdout.readline().strip() == "reading"
        before = hashes(copy)
        result = run(
            "render", render.parent / "bank.h5", "--out", copy, "--per-face", 1, "--size", 32, "-j", 1,
            "--backgrounds", render.parent / "backgrounds", "--overwrite",
        )  # fmt: skip
        assert_user_error(result, f"the render folder {copy} is being read by another feratt process")
        assert f"pid {reader.pid}" in error_lines(result)[0]
        assert hashes(copy) == before
        with RenderSet(copy).reading():  # readers share the folder
            pass
    finally:
        reader.kill()
        reader.wait()


def test_a_second_writer_of_a_fold_is_refused_while_other_folds_train(render, tmp_path):
    from feratt.artifacts.output import claim_output

    run_dir = claim_output(tmp_path / "run", "run", overwrite=False)  # as the holder claimed it
    (run_dir / "fold-0").mkdir()
    holder = subprocess.Popen(
        [
            sys.executable, "-c",
            "import sys, time; from feratt.locks import exclusive\n"
            "with exclusive(sys.argv[1]):\n    print('held', flush=True); time.sleep(120)",
            str(run_dir / "fold-0"),
        ],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        refused = run(*train_args(render, run_dir, "--fold", 0))
        assert_user_error(
            refused, f"fold 0 of {run_dir} is being written by another feratt process (pid {holder.pid}"
        )
        assert len(error_lines(refused)) == 1 and not (run_dir / "config.json").exists()
        assert sorted(p.name for p in (run_dir / "fold-0").iterdir()) == [".feratt.lock"]
        beside = run(*train_args(render, run_dir, "--fold", 1))
        assert beside.exit_code == 0, beside.output
        assert (run_dir / "fold-1" / "best.pt").is_file() and (run_dir / "config.json").is_file()
    finally:
        holder.kill()
        holder.wait()
    assert run(*train_args(render, run_dir, "--fold", 0)).exit_code == 0


def test_the_run_level_lock_waits_for_a_short_holder(tmp_path, monkeypatch):
    from feratt.artifacts import run as runfolder
    from feratt.artifacts.run import RunFolder
    from feratt.errors import FerattError

    holder = subprocess.Popen(
        [
            sys.executable, "-c",
            "import sys, time; from feratt.locks import exclusive\n"
            "with exclusive(sys.argv[1]):\n    print('held', flush=True); time.sleep(float(sys.argv[2]))",
            str(tmp_path), "1.0",
        ],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout.readline().strip() == "held"
    started = time.monotonic()
    monkeypatch.setattr(runfolder, "RUN_LOCK_WAIT_S", 0.2)
    with pytest.raises(FerattError, match=f"pid {holder.pid} on "), RunFolder(tmp_path)._run_lock():
        pass
    monkeypatch.setattr(runfolder, "RUN_LOCK_WAIT_S", 30.0)
    with RunFolder(tmp_path)._run_lock():
        assert time.monotonic() - started > 0.9  # it waited for the holder to let go
    holder.wait()


BAD_CONFIGS = [
    ("broken.json", '{"epochs": 3', "is not valid JSON"),
    ("list.json", "[1, 2]", "must hold a mapping of option names to values"),
    ("word.json", '{"epochs": "abc"}', "training option epochs: 'abc' must be a whole number"),
    ("negative.json", '{"epochs": -3}', "training option epochs: -3 must be at least 1"),
    ("lr.json", '{"lr": -0.1}', "training option lr: -0.1 must be above 0"),
    ("batch.json", '{"batch-size": 0}', "training option batch_size: 0 must be at least 1"),
    ("flag.json", '{"verify": "yes"}', "training option verify: 'yes' must be true or false"),
    ("amp.json", '{"amp": "yes"}', "amp: 'yes' is unknown (valid mixed precision modes: auto, bf16, fp16"),
    ("noise.json", '{"noise_sigma": [0.5, 0.1]}', "must be a range with 0 <= LOW <= HIGH <= 1"),
    ("typo.json", '{"epochz": 3}', "unknown training option(s) epochz"),
    ("method.json", '{"method": "fancy"}', "unknown method 'fancy'"),
    ("preset.json", '{"preset": "huge"}', "training option preset: 'huge' is unknown (valid presets: paper"),
    ("att.json", '{"attention_loss": "l1"}', "attention_loss: 'l1' is unknown (valid attention losses: mse"),
    ("cls.json", '{"classification_loss": "hinge"}', "'hinge' is unknown (valid classification losses"),
    ("means.json", '{"class_means": "median"}', "'median' is unknown (valid class means: batch"),
    ("target.json", '{"att_target": "eyes"}', "'eyes' is unknown (valid attention targets: face"),
    ("broken.yaml", "epochs: [1, 2\nlr: 3", "is not valid YAML"),
    ("word.yaml", "epochs: abc", "training option epochs: 'abc' must be a whole number"),
]


@pytest.mark.parametrize(("name", "text", "message"), BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_a_bad_config_file_is_one_line_before_anything_is_written(render, tmp_path, name, text, message):
    if name.endswith(".yaml"):
        pytest.importorskip("yaml", reason="PyYAML is not installed: YAML configs cannot be read")
    config = tmp_path / name
    config.write_text(text)
    run_dir = tmp_path / "run"
    result = run("train", render, "--out", run_dir, "--config", config, "--device", "cpu")
    assert_user_error(result, message)
    assert len(error_lines(result)) == 1 and not run_dir.exists()


def test_a_value_the_options_accept_but_training_cannot_use_names_its_option(render, tmp_path):
    result = run(*train_args(render, tmp_path / "run", "--in-size", 48))
    assert_user_error(result, "--in-size: training option in_size: 48 must be a multiple of 32")
    assert not (tmp_path / "run").exists()


def _full_disk() -> OSError:
    """What write() raises on a full disk: no file named."""
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_at_a_checkpoint_keeps_the_previous_ones(render, tmp_path, monkeypatch):
    from feratt.artifacts import checkpoint as checkpoints

    run_dir = tmp_path / "run"
    fold_dir = run_dir / "fold-0"
    seen: dict[str, str] = {}
    real_write = checkpoints.atomic_write_bytes

    failed: list[Path] = []

    def write(path, data):
        if (fold_dir / "last.pt").exists():  # epoch 1: the disk is full
            seen.update(hashes(fold_dir))
            failed.append(Path(path))  # best.pt if epoch 1 did better on validation, else last.pt
            raise _full_disk()
        real_write(path, data)

    monkeypatch.setattr(checkpoints, "atomic_write_bytes", write)
    result = run(*train_args(render, run_dir, "--epochs", 2))
    assert [path.name for path in failed] in (["best.pt"], ["last.pt"])
    assert_user_error(result, f"Error: {failed[0]}: No space left on device; {fold_dir} keeps its")
    assert "checkpoints of epoch 0, and resume continues from there" in error_lines(result)[0]
    assert len(error_lines(result)) == 1 and "Traceback" not in result.output
    assert {"best.pt", "last.pt"} <= set(seen) and hashes(fold_dir) == seen
    assert [record["epoch"] for record in FoldFolder(fold_dir).records()] == [0, 1]
    monkeypatch.setattr(checkpoints, "atomic_write_bytes", real_write)
    resumed = run(*train_args(render, run_dir, "--epochs", 2, "--resume"))
    assert resumed.exit_code == 0 and "fold 0: resumed after epoch 0" in resumed.output, resumed.output
    assert [record["epoch"] for record in FoldFolder(fold_dir).records()] == [0, 1]


def test_a_full_disk_at_the_metrics_log_leaves_no_half_line(render, tmp_path, monkeypatch):
    import builtins

    from feratt.artifacts import run as checkpoints

    run_dir = tmp_path / "run"
    metrics = run_dir / "fold-0" / "metrics.jsonl"
    seen: dict[str, str] = {}

    class HalfWritten:
        """A metrics log that takes half a line, then finds the disk full."""

        def __init__(self, handle) -> None:
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self.handle.close()

        def write(self, text: str) -> None:
            self.handle.write(text[: len(text) // 2])
            self.handle.flush()
            raise _full_disk()

    def fake_open(path, mode="r", *args, **kwargs):
        if Path(path) == metrics and mode == "a" and metrics.exists():  # epoch 1
            seen.update(hashes(run_dir / "fold-0"))
            return HalfWritten(builtins.open(path, mode, *args, **kwargs))
        return builtins.open(path, mode, *args, **kwargs)

    monkeypatch.setattr(checkpoints, "open", fake_open, raising=False)
    result = run(*train_args(render, run_dir, "--epochs", 2))
    assert_user_error(result, f"Error: {metrics}: No space left on device; ")
    assert "keeps its checkpoints of epoch 0" in error_lines(result)[0] and len(error_lines(result)) == 1
    assert {"best.pt", "last.pt", "metrics.jsonl"} <= set(seen) and hashes(run_dir / "fold-0") == seen


def _tmpfs_available() -> bool:
    """Whether this process may mount a tmpfs in a private user and mount namespace."""
    if not shutil.which("unshare"):
        return False
    probe = ["unshare", "-rm", "sh", "-c", 'd=$(mktemp -d) && mount -t tmpfs -o size=64k tmpfs "$d"']
    return subprocess.run(probe, capture_output=True).returncode == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="tmpfs mounts need Linux")
def test_a_really_full_disk_keeps_the_previous_checkpoints(render, trained, tmp_path):
    if not _tmpfs_available():
        pytest.skip(
            "cannot mount a tmpfs here (no unprivileged user namespaces): the monkeypatched tests stand"
        )
    best, last = ((trained / "fold-0" / name).stat().st_size for name in ("best.pt", "last.pt"))
    mount, copy = tmp_path / "disk", tmp_path / "copy"
    mount.mkdir()
    # Room for epoch 0's checkpoints and half a checkpoint more: epoch 1's first write fills the disk.
    size = best + last + best // 2 + 64 * 1024
    args = " ".join(shlex.quote(str(a)) for a in train_args(render, mount / "run", "--epochs", 2))
    script = (
        f"mount -t tmpfs -o size={size} tmpfs {shlex.quote(str(mount))} || exit 99\n"
        f"{shlex.quote(sys.executable)} -m feratt {args}\nrc=$?\n"
        f"cp -r {shlex.quote(str(mount / 'run'))} {shlex.quote(str(copy))}\nexit $rc\n"
    )
    done = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "No space left on device" in errors[0] and "keeps its checkpoints of epoch 0" in errors[0]
    fold = mount / "run" / "fold-0"
    assert errors[0].startswith((f"Error: {fold / 'best.pt'}:", f"Error: {fold / 'last.pt'}:")), errors[0]
    for name in ("best.pt", "last.pt"):
        assert Checkpoint.load(copy / "fold-0" / name).epoch == 0
    assert not [p.name for p in (copy / "fold-0").iterdir() if ".tmp" in p.name]
