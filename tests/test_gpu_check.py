"""bench/gpu_check.py in --smoke mode: it runs on the CPU in seconds, writes its report, and needs nothing
but torch, numpy and h5py (the renderer's modules hidden, it draws its own shards)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.py"
#: Modules feratt uses elsewhere that a bare GPU machine may lack.
HIDDEN = ("cv2", "skimage", "scipy", "sklearn", "click", "matplotlib", "PIL", "tqdm", "joblib", "yaml")
#: Runs the script with HIDDEN not importable, as if not installed (find_spec finds nothing).
HIDING = textwrap.dedent(
    f"""
    import runpy, sys

    class Hidden:
        def __init__(self, inner):
            self.inner = inner

        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in {HIDDEN!r}:
                return None
            return self.inner.find_spec(name, path, target)

        def __getattr__(self, name):
            return getattr(self.inner, name)

    sys.meta_path[:] = [Hidden(finder) for finder in sys.meta_path]
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")
    """
)


def run_check(tmp_path: Path, *args: str, hide: bool = False) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / "report.json"
    prelude = ["-c", HIDING] if hide else []
    command = [sys.executable, *prelude, str(SCRIPT), "--smoke", "--out", str(out), *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done, json.loads(out.read_text())


def assert_rows(report: dict, methods: list[str], terms: dict[str, set[str]]) -> None:
    """Every section holds a row per method (and per worker count) with figures that can be true."""
    assert [row["method"] for row in report["throughput"]] == methods
    for row in report["throughput"]:
        assert row["images_per_s"] > 0 and row["ms_per_step"] > 0 and not row["compile"]
        assert (row["size"], row["batch"], row["amp"]) == (64, 4, "bf16")
    assert [(row["method"], row["workers"]) for row in report["loader"]] == [
        (m, w) for m in methods for w in (0, 1)
    ]
    assert all(0 <= row["wait_share"] < 1 and row["images_per_s"] > 0 for row in report["loader"])
    assert [row["method"] for row in report["real_run"]] == methods
    for row in report["real_run"]:
        assert row["epochs"] == 2 and len(row["train_accuracy"]) == 2 and row["chance"] == round(1 / 7, 3)
        assert set(row["loss_first"]) == {"loss_total"} | {f"loss_{t}" for t in terms[row["method"]]}
    assert report["checks"]["enforced"] is False
    assert report["plain_h5py_read_samples_per_s"] > 0


TERMS = {
    "baseline": {"classification"},
    "feratt-cls": {"attention", "classification"},
    "feratt-rep-cls": {"attention", "representation", "classification"},
}


def test_smoke_run_measures_every_method_and_writes_its_report(tmp_path):
    done, report = run_check(tmp_path, "--work", str(tmp_path / "work"))
    assert report["mode"] == "smoke" and report["environment"]["device"] == "cpu"
    assert report["environment"]["torch"] == torch.__version__
    assert report["environment"]["amp_dtype"] == "torch.bfloat16"
    assert report["data"]["kind"] == "demo render" and report["data"]["samples"] == 84
    assert_rows(report, list(TERMS), TERMS)
    assert report["skipped"] == [
        {"what": "throughput with torch.compile", "why": "not asked (--smoke or --no-compile)"}
    ]
    assert (tmp_path / "work" / "runs" / "feratt-rep-cls" / "fold-0" / "last.pt").is_file()
    lines = done.stdout.splitlines()
    assert lines[-1].endswith(f"wrote {tmp_path / 'report.json'}")
    assert sum(line.startswith("throughput ") for line in lines) == 3


def test_smoke_run_needs_only_torch_numpy_and_h5py(tmp_path):
    methods = ["baseline", "feratt-cls"]
    _, report = run_check(tmp_path, "--methods", ",".join(methods), hide=True)
    assert set(HIDDEN) - {"joblib", "yaml"} <= set(report["environment"]["missing_modules"])
    assert report["data"]["kind"] == "drawn stripes (numpy)" and report["data"]["samples"] == 84
    assert report["skipped"][0] == {
        "what": "demo render",
        "why": "the renderer needs cv2, which is missing: drawn faces instead",
    }
    assert len(report["skipped"]) == 2  # and the compile rows: nothing failed for a missing module
    assert_rows(report, methods, TERMS)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_smoke_run_on_a_gpu_reports_memory_and_channels_last(tmp_path):
    _, report = run_check(tmp_path, "--device", "cuda")
    assert report["environment"]["gpu"] and report["environment"]["cuda"]
    assert all(row["peak_memory_mib"] > 0 and row["channels_last"] for row in report["throughput"])
    assert len(report["real_run"]) == 3
