"""Fault probes of the command line as a whole (issue 21, round 3): a full disk under an annotated video,
second writers of exports and annotations, bad --jobs and --seed, requests of the wrong types, Ctrl-C,
disk-full lines, stray lines around `Error:`, and outputs that are symbolic links."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest
from cli_helpers import assert_user_error, hashes, render_tiny, run, write_demo_bank
from disk_helpers import tmpfs
from lock_helpers import held_by_child
from model_helpers import untrained_checkpoint, write_video
from test_video import moving_faces

from feratt.errors import FerattError
from feratt.requests import check_fields

ROOT = Path(__file__).resolve().parents[1]


def feratt(*args, **kwargs) -> subprocess.CompletedProcess:
    """`python -m feratt ARGS` in a child process of this checkout; stdout and stderr as text."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FERATT_DEBUG": ""}
    command = [sys.executable, "-m", "feratt", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, **kwargs)


def _as_from_a_terminal() -> None:
    """Ctrl-C's default handling, as a shell gives a command: a test runner's process may ignore SIGINT,
    and a child that inherits SIG_IGN would never see the interrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def started(*args) -> subprocess.Popen:
    """`python -m feratt ARGS` started in a child process of its own process group."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FERATT_DEBUG": ""}
    command = [sys.executable, "-m", "feratt", *map(str, args)]
    return subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
        preexec_fn=_as_from_a_terminal,
    )


def wait_for(found, child: subprocess.Popen, seconds: float = 120) -> None:
    """Wait until `found()` holds, while the child runs."""
    deadline = time.monotonic() + seconds
    while not found():
        assert child.poll() is None, child.communicate()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("Error:")]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return untrained_checkpoint(tmp_path_factory.mktemp("model") / "feratt.pt", "feratt-cls")


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """8 frames of two moving faces, as mp4."""
    return write_video(tmp_path_factory.mktemp("clip") / "clip.mp4", [s.image for s in moving_faces()])


# ---------------------------------------------------------------- 5: a full disk under an annotated video


def test_a_full_disk_leaves_no_annotated_video_and_one_line(model, clip, tmp_path):
    inputs = hashes(clip.parent) | hashes(model.parent)
    with tmpfs(tmp_path / "disk", "24k") as disk:  # room for the lock and a few frames
        out = disk / "out"
        for attempt in range(2):  # the rerun meets the same full disk, not "exists already"
            done = feratt("predict", model, clip, "--annotate", out, "--every", 100, "--device", "cpu")
            assert done.returncode == 2, done.stderr
            assert done.stderr == (
                f"Error: {out / 'clip.mp4'}: No space left on device; "
                "neither clip.mp4 nor clip.jsonl was written\n"
            ), attempt
            assert sorted(p.name for p in out.iterdir()) == [".feratt.lock"]
    assert hashes(clip.parent) | hashes(model.parent) == inputs


def test_a_video_opencv_cannot_finish_is_removed(model, clip, tmp_path, monkeypatch):
    """The same without a tmpfs: a writer whose file ends short, as on a full disk."""
    import collections

    import cv2

    from feratt.inference import video

    real = cv2.VideoWriter

    class Truncating:
        def __init__(self, path, *args) -> None:
            self.path, self.writer = Path(path), real(path, *args)

        def __getattr__(self, name):
            return getattr(self.writer, name)

        def release(self) -> None:
            self.writer.release()
            if self.path.exists():
                self.path.write_bytes(self.path.read_bytes()[: self.path.stat().st_size // 2])

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(video.cv2, "VideoWriter", Truncating)
    monkeypatch.setattr(video.shutil, "disk_usage", lambda path: usage(1 << 30, 1 << 30, 0))
    before = hashes(tmp_path)
    out = tmp_path / "out"
    result = run("predict", model, clip, "--annotate", out, "--every", 100, "--device", "cpu")
    assert_user_error(result, f"Error: {out / 'clip.mp4'}: No space left on device; neither clip.mp4 nor")
    assert len(error_lines(result.output)) == 1
    assert sorted(p.name for p in out.iterdir()) == [".feratt.lock"] and hashes(tmp_path) == before
    monkeypatch.setattr(video.shutil, "disk_usage", lambda path: usage(1 << 30, 0, 1 << 30))
    result = run("predict", model, clip, "--annotate", out, "--every", 100, "--device", "cpu")
    assert_user_error(result, f"{out / 'clip.mp4'}: OpenCV could not write the video whole; neither")


@pytest.mark.slow
def test_the_temporary_video_of_a_killed_run_goes_at_the_next_run(model, tmp_path):
    clip = write_video(tmp_path / "long.mp4", [s.image for s in moving_faces(24)])
    out = tmp_path / "out"
    child = started("predict", model, clip, "--annotate", out, "--device", "cpu")
    try:
        wait_for(lambda: list(out.glob(".long.mp4.*.tmp.mp4")), child)
    finally:
        child.kill()
        child.communicate()
    [_] = out.glob(".long.mp4.*.tmp.mp4")
    assert not (out / "long.mp4").exists()
    done = feratt("predict", model, clip, "--annotate", out, "--every", 100, "--device", "cpu")
    assert done.returncode == 0, done.stderr
    assert f"warning: removed 1 temporary file an interrupted run left in {out}\n" in done.stderr
    assert sorted(p.name for p in out.iterdir()) == [".feratt.lock", "long.jsonl", "long.mp4"]


# ---------------------------------------------------------------- 6: one writer of an export, an annotation


def test_a_second_export_to_one_file_is_refused(model, tmp_path):
    out = tmp_path / "x.onnx"
    out.write_bytes(b"the first model")
    before = hashes(tmp_path)
    with held_by_child(out) as pid:
        result = run("export", model, out, "--overwrite")
    assert_user_error(
        result, f"the exported model {out} is being written by another feratt process (pid {pid}"
    )
    assert len(error_lines(result.output)) == 1 and hashes(tmp_path) == before


def test_a_second_predict_into_one_annotate_folder_is_refused(model, clip, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "other.png").write_bytes(b"an earlier annotation")
    before = hashes(tmp_path)
    with held_by_child(out) as pid:
        result = run("predict", model, clip, "--annotate", out, "--every", 100, "--device", "cpu")
    assert_user_error(
        result, f"the annotate folder {out} is being written by another feratt process (pid {pid}"
    )
    assert len(error_lines(result.output)) == 1 and hashes(tmp_path) == before


# ---------------------------------------------------------------- 12: --jobs 0 and negative seeds


@pytest.fixture
def dummies(tmp_path) -> dict[str, Path]:
    """Folders that stand for a render and a run: a refused option must stop before they are read."""
    for name in ("render", "run"):
        (tmp_path / name).mkdir()
    return {name: tmp_path / name for name in ("render", "run")}


TRAINING = ["--epochs", 1, "--device", "cpu"]


@pytest.mark.parametrize(
    ("args", "option", "message"),
    [
        (["faces", "builtin:demo", "--out", "{out}/b.h5", "--jobs", 0], "--jobs", "must not be 0"),
        (
            ["faces", "builtin:demo", "--out", "{out}/b.h5", "--seed", -1],
            "--seed",
            "from 0 to 4294967295, not -1",
        ),
        (["render", "--out", "{out}/r", "--jobs", 0], "--jobs", "must not be 0"),
        (["render", "--out", "{out}/r", "--seed", -1], "--seed", "from 0 to 4294967295, not -1"),
        (["render", "--out", "{out}/r", "--seed", 2**32], "--seed", "from 0 to 4294967295, not 4294967296"),
        (
            ["train", "{render}", "--out", "{out}/t", "--seed", -1, *TRAINING],
            "--seed",
            "-1 must be at least 0",
        ),
        (
            ["experiment", "{render}", "--out", "{out}/e", "--seed", -1, *TRAINING],
            "--seed",
            "must be at least 0",
        ),
        (["noise", "{run}", "--shards", "{render}", "--out", "{out}/n", "--seed", -1], "--seed", "not -1"),
        (["embed", "{run}", "--shards", "{render}", "--out", "{out}/m", "--seed", -1], "--seed", "not -1"),
    ],
)
def test_jobs_0_and_negative_seeds_are_refused_before_anything_is_written(
    dummies, tmp_path, args, option, message
):
    places = {"out": tmp_path, **dummies}
    before = hashes(tmp_path)
    result = run(*(str(a).format(**places) for a in args))
    assert_user_error(result, f"Error: {option}: ")
    assert message in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert hashes(tmp_path) == before and sorted(p.name for p in tmp_path.iterdir()) == ["render", "run"]


def test_negative_jobs_mean_what_they_mean_to_joblib(tmp_path):
    from feratt.datasets.bank import BankRequest
    from feratt.renderer.render import RenderRequest

    assert RenderRequest(render=tmp_path, jobs=-3).jobs == -3  # all cores but two, and at least 1
    assert BankRequest(source="builtin:demo", out=tmp_path / "b.h5", jobs=-2).jobs == -2
    assert (render_tiny(tmp_path, subjects=1, jobs=-64) / "index.json").is_file()  # one worker, not an error


# ---------------------------------------------------------------- 13: requests check their fields' types


@pytest.fixture(scope="module")
def tiny_render(tmp_path_factory) -> Path:
    return render_tiny(tmp_path_factory.mktemp("tiny"), subjects=2)


def _api_calls(model: Path, render: Path, tmp: Path) -> list[tuple[object, dict, str, str]]:
    """(function, its fields, the field named, the message) of calls with a value of the wrong type."""
    from feratt.datasets.bank import build_bank
    from feratt.experiments.embed import embed
    from feratt.experiments.evaluate import evaluate
    from feratt.experiments.experiment import run_experiment
    from feratt.experiments.noise import noise_robustness
    from feratt.inference.export import export_onnx
    from feratt.inference.predict import predict
    from feratt.renderer.render import render as render_samples
    from feratt.training.train import train

    out = tmp / "out"
    return [
        (
            render_samples,
            {"bank": 123, "render": None},
            "render",
            "render must be a path (str or os.PathLike), not None",
        ),
        (
            render_samples,
            {"bank": 123, "render": out},
            "bank",
            "bank must be a path (str or os.PathLike), not 123 (int)",
        ),
        (
            render_samples,
            {"render": out, "per_face": "4"},
            "per_face",
            "per_face must be a whole number or None, not '4' (str)",
        ),
        (
            render_samples,
            {"render": out, "per_face": 2.5},
            "per_face",
            "per_face must be a whole number or None, not 2.5 (float)",
        ),
        (render_samples, {"render": out, "jobs": 0}, "jobs", "the number of parallel workers must not be 0"),
        (
            render_samples,
            {"render": out, "backgrounds": 7},
            "backgrounds",
            "backgrounds must be a BackgroundSource, not 7 (int)",
        ),
        (
            render_samples,
            {"render": out, "part": (1, "2")},
            "part",
            "part[1] must be a whole number, not '2' (str)",
        ),
        (
            build_bank,
            {"source": "builtin:demo", "out": out, "size": "big"},
            "size",
            "size must be a whole number, not 'big' (str)",
        ),
        (
            build_bank,
            {"source": "builtin:demo", "out": out, "include_neutral": 1},
            "include_neutral",
            "must be True or False, not 1 (int)",
        ),
        (
            build_bank,
            {"source": "builtin:demo", "out": out, "margin": float("nan")},
            "margin",
            "margin must be a finite number, not nan",
        ),
        (
            predict,
            {"checkpoint": model, "images": 123},
            "images",
            "images must be a list or tuple of paths (str or os.PathLike), not 123 (int)",
        ),
        (
            predict,
            {"checkpoint": model, "images": [model, 4]},
            "images",
            "images[1] must be a path (str or os.PathLike), not 4 (int)",
        ),
        (
            predict,
            {"checkpoint": model, "images": [model], "detector": {}},
            "detector",
            "detector must be a DetectorSettings, not {} (dict)",
        ),
        (
            export_onnx,
            {"checkpoint": model, "out": None},
            "out",
            "out must be a path (str or os.PathLike), not None",
        ),
        (
            export_onnx,
            {"checkpoint": model, "out": out, "fold": "0"},
            "fold",
            "fold must be a whole number or None, not '0' (str)",
        ),
        (
            train,
            {"render": render, "run": out, "config": {"epochs": 1}},
            "config",
            "config must be a TrainConfig, not {'epochs': 1} (dict)",
        ),
        (
            evaluate,
            {"run": model, "render": render, "batch_size": "10"},
            "batch_size",
            "batch_size must be a whole number, not '10'",
        ),
        (
            embed,
            {"run": model, "render": render, "perplexity": "30"},
            "perplexity",
            "perplexity must be a number, not '30' (str)",
        ),
        (
            noise_robustness,
            {"runs": [model], "render": render, "sigmas": ["0.1"]},
            "sigmas",
            "sigmas[0] must be a number, not '0.1'",
        ),
        (
            noise_robustness,
            {"runs": [model], "render": render, "sigmas": [1e308]},
            "sigmas",
            "a noise sigma must be a number from 0 to 100",
        ),
        (
            run_experiment,
            {"render": render, "out": out, "methods": "baseline"},
            "methods",
            "methods must be a tuple of strings, not 'baseline'",
        ),
    ]


def test_every_request_names_the_field_of_a_value_of_the_wrong_type(model, tiny_render, tmp_path):
    before = hashes(tiny_render.parent) | hashes(model.parent)
    for function, fields, name, message in _api_calls(model, tiny_render, tmp_path):
        with pytest.raises(FerattError) as caught:
            function(**fields)
        assert caught.value.field == name and message in str(caught.value), (function.__name__, fields)
    assert list(tmp_path.iterdir()) == [] and hashes(tiny_render.parent) | hashes(model.parent) == before


@dataclass(frozen=True)
class Inner:
    """A nested dataclass."""

    x: int = 0


@dataclass(frozen=True)
class Probe:
    """A request of every kind of field."""

    count: int = 1
    ratio: float = 0.5
    flag: bool = False
    name: str = "a"
    path: str | os.PathLike[str] | None = None
    folder: Path = Path(".")
    names: tuple[str, ...] = ()
    pair: tuple[int, int] | None = None
    inner: Inner = field(default_factory=Inner)
    mode: Literal["a", "b"] = "a"

    def __post_init__(self) -> None:
        check_fields(self)


def test_the_check_follows_the_type_hints():
    import numpy as np

    probe = Probe(count=np.int64(3), ratio=2, path=Path("x"), folder="f", names=["a", "b"], pair=[1, 2])
    assert (probe.count, type(probe.count), probe.ratio, probe.folder) == (3, int, 2, Path("f"))
    assert probe.names == ("a", "b") and probe.pair == (1, 2) and probe.path == Path("x")
    refused = [
        ({"count": True}, "count must be a whole number, not True"),
        ({"count": 1.0}, "count must be a whole number, not 1.0 (float)"),
        ({"ratio": "0.5"}, "ratio must be a number, not '0.5' (str)"),
        ({"ratio": float("inf")}, "ratio must be a finite number, not inf (float)"),
        ({"flag": "yes"}, "flag must be True or False, not 'yes' (str)"),
        ({"name": None}, "name must be a string, not None"),
        ({"path": 3}, "path must be a path (str or os.PathLike) or None, not 3 (int)"),
        ({"names": "ab"}, "names must be a tuple of strings, not 'ab' (str)"),
        ({"names": ("a", 2)}, "names[1] must be a string, not 2 (int)"),
        (
            {"pair": (1, 2, 3)},
            "pair must be a tuple of 2 values (a whole number, a whole number) or None, "
            "not (1, 2, 3) (tuple)",
        ),
        ({"inner": {"x": 1}}, "inner must be an Inner, not {'x': 1} (dict)"),
        ({"mode": "c"}, "mode must be one of 'a', 'b', not 'c' (str)"),
    ]
    for fields, message in refused:
        with pytest.raises(FerattError) as caught:
            Probe(**fields)
        assert str(caught.value) == message and caught.value.field == next(iter(fields)), fields


# ---------------------------------------------------------------- 15: Ctrl-C


def interrupt(child: subprocess.Popen) -> tuple[str, str]:
    """Send SIGINT to the child's process group, as Ctrl-C on a terminal does; its stdout and stderr."""
    os.killpg(child.pid, signal.SIGINT)
    return child.communicate(timeout=120)


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a process group")
def test_ctrl_c_in_render_keeps_the_complete_shards_and_a_rerun_resumes(tmp_path):
    write_demo_bank(tmp_path / "bank.h5", subjects=2, size=64)
    out = tmp_path / "r"
    args = ["render", tmp_path / "bank.h5", "--out", out, "--size", 32, "--per-face", 40, "--shard-size", 4]
    child = started(*args, "--jobs", 2)
    wait_for(lambda: len(list(out.glob("shards/*/shard-*.json"))) >= 2, child)
    _, stderr = interrupt(child)
    assert child.returncode == 130, stderr
    assert stderr == (
        f"Interrupted: the complete shards in {out} are kept; rerun the same command to render the rest\n"
    )
    kept = len(list(out.glob("shards/*/shard-*.json")))
    assert kept >= 2 and not list(out.glob("shards/*/.*.tmp*"))
    done = feratt(*args, "--jobs", 1)
    assert done.returncode == 0, done.stderr
    assert f"kept {kept} complete shards" in done.stdout


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a process group")
def test_ctrl_c_in_train_keeps_the_checkpoints_and_resume_continues(tmp_path):
    from feratt.artifacts.checkpoint import Checkpoint

    (tmp_path / "data").mkdir()
    shards = render_tiny(tmp_path / "data", subjects=4)
    run_dir = tmp_path / "run"
    args = [
        "train", shards, "--out", run_dir, "--method", "baseline", "--preset", "cpu-small", "--epochs", 20,
        "--batch-size", 8, "--fold-size", 2, "--val-subjects", 1, "--workers", 0, "--device", "cpu",
    ]  # fmt: skip
    child = started(*args)
    wait_for(lambda: (run_dir / "fold-0" / "last.pt").is_file(), child, seconds=300)
    _, stderr = interrupt(child)
    assert child.returncode == 130, stderr
    assert stderr == (
        f"Interrupted: each fold in {run_dir} keeps the checkpoints of its last finished epoch; "
        "rerun the same command with --resume to continue\n"
    )
    epoch = Checkpoint.load(run_dir / "fold-0" / "last.pt").epoch
    done = feratt(*args, "--resume")
    assert done.returncode == 0, done.stderr
    assert f"fold 0: resumed after epoch {epoch}" in done.stdout


def test_ctrl_c_anywhere_is_exit_130_and_one_line():
    import click
    from click.testing import CliRunner

    from feratt.cli import FerattGroup

    @click.group(cls=FerattGroup)
    @click.option("--debug", is_flag=True)
    def group(debug: bool) -> None:
        pass

    @group.command()
    def render() -> None:
        raise KeyboardInterrupt

    @group.command()
    @click.option("--out")
    def other(out: str | None) -> None:
        raise KeyboardInterrupt

    result = CliRunner().invoke(group, ["other", "--out", "x"])
    assert result.exit_code == 130
    assert result.output == (
        "Interrupted: nothing is half-written (each file is written whole or not at all); "
        "rerun the command to finish\n"
    )


# ---------------------------------------------------------------- 16: disk-full lines: the file, what is kept

#: What h5py raises when HDF5 finds the disk full: several lines, no errno, no file name.
HDF5_FULL = (
    "Can't write unprocessed chunk data (file write failed: time = Fri Dec  4 20:38:19 2026\n"
    ", filename = '/x/.shard-00001.h5.knp2sqzt.tmp.h5', file descriptor = 5, errno = 28, error message = "
    "'No space left on device', buf = 0x5598cb478da0, total write size = 10240, bytes this sub-write = 10240)"
)


def test_a_full_disk_under_hdf5_is_one_line_naming_the_shard(tmp_path, monkeypatch):
    import h5py

    from feratt.artifacts import shard as shards

    real = h5py.File

    write_demo_bank(tmp_path / "bank.h5", subjects=1, size=64)
    opened = []

    def file(path, mode="r", *args, **kwargs):
        if mode == "w":
            opened.append(path)
            if len(opened) == 2:
                raise OSError(HDF5_FULL)
        return real(path, mode, *args, **kwargs)

    monkeypatch.setattr(shards.h5py, "File", file)
    out = tmp_path / "r"
    args = ["render", tmp_path / "bank.h5", "--out", out, "--size", 32, "--per-face", 1, "--shard-size", 4]
    result = run(*args, "--jobs", 1)
    shard = out / "shards" / "D01" / "shard-00001.h5"
    assert result.output.strip().splitlines()[-1] == (
        f"Error: {shard}: No space left on device; the 1 complete shards in {out} are kept: "
        "rerun the same command to resume"
    )
    assert result.exit_code == 2 and len(error_lines(result.output)) == 1
    assert not list(out.rglob("*.tmp*"))


def test_a_full_disk_after_training_in_an_experiment_names_the_file_and_what_is_kept(
    tiny_render, tmp_path, monkeypatch
):
    from matplotlib.figure import Figure

    out = tmp_path / "exp"
    args = [
        "experiment", tiny_render, "--out", out, "--methods", "baseline", "--preset", "cpu-small",
        "--epochs", 1, "--max-batches", 1, "--batch-size", 8, "--fold-size", 1, "--val-subjects", 0,
        "--workers", 0, "--device", "cpu",
    ]  # fmt: skip

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # what write() raises: no file named

    monkeypatch.setattr(Figure, "savefig", full)
    result = run(*args)
    [line] = error_lines(result.output)
    assert (
        result.exit_code == 2
        and line.startswith(f"Error: {out}/")
        and ".png: No space left on device" in line
    )
    assert line.endswith(
        f"; the finished folds and evaluations in {out} are kept: rerun the same command to continue"
    )
    kept = hashes(out / "runs")
    monkeypatch.undo()
    again = run(*args)
    assert again.exit_code == 0 and "baseline fold 0: trained already, reused" in again.output, again.output
    assert hashes(out / "runs") == kept


def test_a_full_disk_at_the_first_last_pt_says_best_pt_is_kept(tiny_render, tmp_path, monkeypatch):
    from feratt.artifacts import checkpoint as checkpoints

    real_write = checkpoints.atomic_write_bytes

    def write(path, data):
        if Path(path).name == "last.pt":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write(path, data)

    monkeypatch.setattr(checkpoints, "atomic_write_bytes", write)
    run_dir = tmp_path / "run"
    result = run(
        "train", tiny_render, "--out", run_dir, "--method", "baseline", "--preset", "cpu-small",
        "--epochs", 1, "--max-batches", 1, "--batch-size", 8, "--fold-size", 1, "--val-subjects", 0,
        "--workers", 0, "--device", "cpu",
    )  # fmt: skip
    fold = run_dir / "fold-0"
    assert_user_error(
        result,
        f"Error: {fold / 'last.pt'}: No space left on device; "
        f"{fold} keeps best.pt of epoch 0 but no last.pt, so resume starts the fold again",
    )
    assert len(error_lines(result.output)) == 1 and (fold / "best.pt").is_file()


# ---------------------------------------------------------------- 17: nothing around the one Error: line


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["render", "--out", "x", "--size", 5],
            "Error: Invalid value for '--size': 5 is not in the range 16<=x<=1024.",
        ),
        (["render", "--out", "x", "--bogus"], "Error: No such option '--bogus'."),
        (["faces", "builtin:demo"], "Error: Missing option '--out' / '-o'."),
        (["nosuch"], "Error: No such command 'nosuch'."),
        (["--bogus"], "Error: No such option '--bogus'."),
        (
            ["noise", "run", "--shards", "r", "--sigmas", "1e308"],
            "Error: Invalid value for '--sigmas': a noise sigma must be a number from 0 to 100, not 1e308",
        ),
    ],
)
def test_a_usage_error_is_one_line(tmp_path, monkeypatch, args, line):
    monkeypatch.chdir(tmp_path)
    result = run(*args)
    assert result.exit_code == 2 and result.output.startswith(line), result.output
    assert result.output.count("\n") == 1, result.output
    assert not list(tmp_path.iterdir())


def test_noise_sigmas_that_overflow_and_an_unreadable_video_give_one_line_on_stderr(model, tmp_path):
    done = feratt("noise", tmp_path, "--shards", tmp_path, "--sigmas", "1e308")
    assert done.returncode == 2 and done.stderr == (
        "Error: Invalid value for '--sigmas': a noise sigma must be a number from 0 to 100, not 1e308\n"
    )
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42 and then nothing a decoder can use" * 3)
    done = feratt("predict", model, bad, "--device", "cpu")
    assert done.returncode == 2 and done.stderr == (
        f"Error: {bad}: not a readable video (OpenCV cannot open it)\n"
    ), done.stderr


# ---------------------------------------------------------------- 18d: an output that is a symbolic link


@pytest.mark.skipif(sys.platform == "win32", reason="symbolic links")
@pytest.mark.parametrize("dangling", [False, True])
def test_out_through_a_symbolic_link_writes_the_file_it_points_to(tmp_path, dangling):
    from feratt.artifacts.bank import FaceBank

    (tmp_path / "store").mkdir()
    target = tmp_path / "store" / "bank.h5"
    if not dangling:
        target.write_bytes(b"an older bank")
    link = tmp_path / "link.h5"
    link.symlink_to(target)
    args = ["faces", "builtin:demo", "--out", link, "--demo-subjects", 1, "--demo-per-class", 1, "--size", 64]
    if not dangling:  # a file that is not a bank of these settings: replaced only when told to
        assert_user_error(run(*args, "--jobs", 1), f"--overwrite: {link} exists already (a file)")
        assert target.read_bytes() == b"an older bank"
    result = run(*args, "--jobs", 1, "--overwrite")
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and link.resolve() == target and len(FaceBank.open(target)) == 7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.h5", "store"]
    assert sorted(p.name for p in target.parent.iterdir()) == [".bank.h5.lock", "bank.h5"]


def test_atomic_writes_and_locks_follow_a_link(tmp_path):
    from feratt.atomic import atomic_write_bytes
    from feratt.locks import exclusive, lock_path_for

    target = tmp_path / "real.json"
    link = tmp_path / "link.json"
    link.symlink_to(target.name)
    atomic_write_bytes(link, b"{}")
    assert link.is_symlink() and target.read_bytes() == b"{}"
    assert lock_path_for(link) == lock_path_for(target) == tmp_path / ".real.json.lock"
    busy = "is being written by another feratt process"
    with exclusive(target), pytest.raises(FerattError, match=busy), exclusive(link):
        pass
