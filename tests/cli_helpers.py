"""Helpers shared by the command-line tests: run a command, check a user error, make inputs."""

from pathlib import Path

import cv2
from click.testing import CliRunner
from skimage import data

from feratt.cli import main
from feratt.datasets.bank import BankOptions, build_faces, write_bank
from feratt.datasets.demo import list_demo
from feratt.datasets.records import ReaderOptions


def run(*args):
    """Invoke the feratt command line in-process."""
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def assert_user_error(result, message):
    """Exit status 2, one 'Error:' line at the end holding `message`, and no traceback."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("Error:") and message in last, result.output


def write_demo_bank(path: Path, subjects: int, size: int = 96) -> Path:
    """A face bank of `subjects` demo subjects, one face per class each."""
    listing = list_demo(ReaderOptions(demo_subjects=subjects, demo_per_class=1))
    options = BankOptions(size=size)
    write_bank(path, listing, build_faces(listing, options), options)
    return path


def write_backgrounds(folder: Path, names=("coffee", "chelsea", "rocket"), size=(160, 120)) -> Path:
    """A folder of small JPEG backgrounds made from scikit-image's photos."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        photo = cv2.resize(getattr(data, name)(), size, interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(folder / f"{name}.jpg"), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
    return folder


def render_tiny(base: Path, subjects: int = 4, *extra) -> Path:
    """A face bank of `subjects` demo subjects in `base` and a 64 px render of it, 2 samples a face."""
    write_demo_bank(base / "bank.h5", subjects=subjects)
    backgrounds = write_backgrounds(base / "backgrounds", names=("coffee", "chelsea"))
    out = base / "render"
    args = ("--backgrounds", backgrounds, "--size", 64, "--per-face", 2, "--jobs", 1, *extra)
    result = run("render", base / "bank.h5", "--out", out, *args)
    assert result.exit_code == 0, result.output
    return out


def train_tiny(render: Path, run_dir: Path, method: str, *extra) -> Path:
    """A cpu-small run of `method` on a tiny render: 1 epoch of 2 batches, folds of 2 test subjects."""
    result = run(
        "train", render, "--out", run_dir, "--method", method, "--preset", "cpu-small",
        "--epochs", 1, "--max-batches", 2, "--batch-size", 8, "--workers", 0, "--device", "cpu",
        "--fold-size", 2, "--val-subjects", 1, *extra,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return run_dir
