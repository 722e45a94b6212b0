"""The README's Python API example runs exactly as written, in an empty folder."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import h5py
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _api_example() -> str:
    section = README.read_text().split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


@pytest.mark.slow
def test_readme_python_example_runs_end_to_end(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "FERATT_CACHE": str(tmp_path / "cache")}
    done = subprocess.run(
        [sys.executable, "-c", _api_example()], cwd=work, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    last = done.stdout.strip().splitlines()[-1]
    match = re.fullmatch(r"672 samples; fold 0 test accuracy (\d\.\d{3})", last)
    assert match, done.stdout
    assert 0.0 <= float(match.group(1)) <= 1.0
    assert "fold 0 epoch 0:" in done.stdout  # the log callback reached print
    lines = done.stdout.splitlines()
    assert "6 subjects: D01, D02, D03, D04, D05, D06; framing: bank crop 96 px" in lines[0]
    classes = "neutral, anger, disgust, fear, happy, sadness, surprise"
    assert f"best.pt: baseline, epoch 0, classes {classes}" in lines
    with h5py.File(work / "bank.h5") as bank:
        assert bank["images"].shape == (6 * 7 * 2, 96, 96, 3)
    fold = work / "runs" / "baseline" / "fold-0"
    assert sorted(p.name for p in fold.glob("*.pt")) == ["best.pt", "last.pt"]
    assert (fold / "evaluation-best.json").is_file()


def _shard_section() -> str:
    return (
        README.read_text()
        .split("### A shard, for someone holding only an HDF5 viewer", 1)[1]
        .split("\n#", 1)[0]
    )


def test_readme_shard_table_matches_the_schema_the_readers_check():
    from feratt.artifacts.shard import SHARD_SCHEMA
    from feratt.renderer.params import PARAM_FIELDS

    rows = dict(re.findall(r"^\| `(\w+)` \| (\(N[^)]*\) \w+) \|", _shard_section(), re.MULTILINE))
    for name, (dtype, tail) in SHARD_SCHEMA.items():
        sizes = [str(n) if n is not None else str(len(PARAM_FIELDS)) if name == "params" else "HW"[i]
                 for i, n in enumerate(tail)]  # fmt: skip
        shape = f"(N, {', '.join(sizes)})" if sizes else "(N,)"
        assert rows.get(name) == f"{shape} {'string' if dtype == 'object' else dtype}", name
