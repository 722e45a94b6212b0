"""Helpers shared by the command-line tests: run a command, check a user error, make inputs."""

import hashlib
import json
from pathlib import Path

import cv2
from click.testing import CliRunner
from skimage import data

from feratt.cli import main
from feratt.datasets.bank import build_bank


def run(*args):
    """Invoke the feratt command line in-process."""
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def assert_user_error(result, message):
    """Exit status 2, one 'Error:' line at the end holding `message`, and no traceback."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("Error:") and message in last, result.output


def hashes(folder: Path) -> dict[str, str]:
    """The sha256 of every file under `folder` (lock files aside), by relative path."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and not path.name.endswith(".lock")
    }


def write_demo_bank(path: Path, subjects: int, size: int = 96) -> Path:
    """A face bank of `subjects` demo subjects, one face per class each."""
    build_bank(source="builtin:demo", out=path, demo_subjects=subjects, demo_per_class=1, size=size, jobs=1)
    return path


def write_backgrounds(folder: Path, names=("coffee", "chelsea", "rocket"), size=(160, 120)) -> Path:
    """A folder of small JPEG backgrounds made from scikit-image's photos."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        photo = cv2.resize(getattr(data, name)(), size, interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(folder / f"{name}.jpg"), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
    return folder


def render_tiny(base: Path, subjects: int = 4, config: dict | None = None, **fields) -> Path:
    """A face bank of `subjects` demo subjects in `base` and a 64 px render of it, 2 samples a face.

    `config` holds preset_config's arguments (a preset, overrides); `fields` replace RenderRequest fields.
    """
    from feratt.config.rendering import preset_config
    from feratt.renderer.render import render

    write_demo_bank(base / "bank.h5", subjects=subjects)
    backgrounds = write_backgrounds(base / "backgrounds", names=("coffee", "chelsea"))
    defaults = {"backgrounds": backgrounds, "per_face": 2, "jobs": 1}
    rendered = preset_config(**{"size": 64, **(config or {})})
    result = render(bank=base / "bank.h5", render=base / "render", config=rendered, **{**defaults, **fields})
    assert result.complete
    return result.render


def train_tiny(render: Path, run_dir: Path, method: str, *extra, folds: str = "0", **fields) -> Path:
    """A cpu-small run of `method` on a tiny render: 1 epoch of 2 batches, folds of 2 test subjects.

    `extra` may name the folds as the command line does ("--fold", "all"); `fields` set TrainConfig fields.
    """
    from feratt.config.training import TrainConfig
    from feratt.training.train import train

    flags = dict(zip(extra[::2], extra[1::2], strict=True))
    folds = flags.pop("--fold", folds)
    assert not flags, f"train_tiny takes --fold only, not {sorted(flags)}"
    config = TrainConfig(
        method=method, preset="cpu-small", epochs=1, max_batches=2, batch_size=8, workers=0,
        fold_size=2, val_subjects=1,
    )  # fmt: skip
    train(render=render, run=run_dir, config=config, folds=folds, device="cpu", **fields)
    return run_dir


def reseal(render: Path, relpath: str) -> None:
    """Record a changed shard's new size and sha256 in its sidecar and manifest, as a forger would, so
    that only the schema check can find it out."""
    shard = render / relpath
    digest, size = hashlib.sha256(shard.read_bytes()).hexdigest(), shard.stat().st_size
    sidecar = shard.with_suffix(".json")
    record = json.loads(sidecar.read_text())
    record.update(sha256=digest, bytes=size)
    sidecar.write_text(json.dumps(record))
    manifest = render / "manifests" / f"{record['subject']}.json"
    listed = json.loads(manifest.read_text())
    for entry in listed["shards"]:
        if entry["path"] == relpath:
            entry.update(sha256=digest, bytes=size)
    manifest.write_text(json.dumps(listed))
