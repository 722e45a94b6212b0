"""bench/gpu_run.sh --smoke: the GPU machine's script, step for step on the CPU at toy sizes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_run.sh"


@pytest.mark.slow
def test_the_gpu_run_passes_every_step_in_smoke_mode(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(
        ["bash", str(SCRIPT), "--smoke", "--out", str(out), "--work", str(work)],
        capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path,
    )  # fmt: skip
    log = (out / "gpu_run.log").read_text() if (out / "gpu_run.log").exists() else ""
    assert done.returncode == 0, done.stdout[-2000:] + log[-4000:]
    report = json.loads((out / "gpu_run.json").read_text())
    assert [s["step"] for s in report["steps"]] == ["install", "bank", "render", "gpu_check", "train"]
    assert report["passed"] and all(s["rc"] == 0 for s in report["steps"])
    assert report["mode"] == "smoke" and report["versions"].startswith("Python ")
    # feratt ran from the copy the script installed, not from this checkout.
    assert (work / "site" / "feratt" / "cli.py").is_file()
    check = report["gpu_check"]
    assert [row["method"] for row in check["throughput"]] == ["baseline", "feratt-cls", "feratt-rep-cls"]
    assert check["real_run"] == [] and "real runs" in json.dumps(check["skipped"])
    experiment = report["experiment"]
    assert experiment["settings"]["methods"] == ["baseline", "feratt-cls", "feratt-rep-cls"]
    training = experiment["settings"]["training"]
    assert (training["preset"], training["amp"], training["in_size"]) == ("paper", "off", 64)
    assert check["environment"]["amp_dtype"] == "torch.bfloat16"  # the check step's CPU autocast
    for split in ("synthetic", "real"):
        table = experiment["splits"][split]["table"]
        assert set(table) == {"baseline", "feratt-cls", "feratt-rep-cls"}
        assert all(0 <= row["accuracy"]["mean"] <= 100 for row in table.values())
    # What comes back from the GPU machine: few files, all in the output folder.
    assert sorted(p.name for p in out.iterdir()) == ["gpu_run.json", "gpu_run.log", "report.md"]


def test_the_gpu_run_refuses_an_unknown_option(tmp_path):
    done = subprocess.run(["bash", str(SCRIPT), "--fast"], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 2 and "unknown option --fast" in done.stderr
