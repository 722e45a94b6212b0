"""The tables the ablation benchmarks print: pooled over runs, with the validation that picks rows."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _bench(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_ablation_table_gives_mean_and_std_per_row_with_its_validation(tmp_path):
    ablations = _bench("ablations")
    entries = [
        {"row": "baseline", "fold": f, "seed": 0, "epochs": 12, "changes": {"method": "baseline"},
         "validation": v, "synthetic": s, "real": r, "best_epoch": 11}
        for f, v, s, r in ((0, 0.8, 0.9, 0.7), (1, 0.6, 0.7, 0.5))
    ]  # fmt: skip
    fresh = {**entries[0], "row": "baseline-fresh", "render": "12x", "changes": {"samples_per_epoch": 5}}
    results = {ablations.entry_key(e): e for e in [*entries, fresh]}
    assert ablations.entry_key(fresh) == "baseline-fresh@12x|e12|fold0|seed0"
    lines = ablations.table(results).splitlines()
    assert lines[2] == "| baseline | - | 12 | 0/0, 1/0 | 70.0 ± 10.0 | 80.0 ± 10.0 | 60.0 ± 10.0 | 11, 11 |"
    assert lines[3] == "| baseline-fresh@12x | samples_per_epoch=5 | 12 | 0/0 | 80.0 | 90.0 | 70.0 | 11 |"
    fold_dir = tmp_path / "fold-0"
    fold_dir.mkdir()
    records = [{"epoch": 0, "validation": {"accuracy": 0.25}}, {"epoch": 1, "validation": {"accuracy": 0.5}}]
    (fold_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert ablations.best_validation(fold_dir) == 0.5


def _noise_json(path: Path, losses: dict[str, list[float]]) -> Path:
    """A `feratt noise` result: a fold per loss of each method, accuracy 0.9 at sigma 0, 0.9 - loss at 0.3."""
    methods = [
        {
            "method": method,
            "folds": {
                str(fold): {"synthetic": [{"metrics": {"accuracy": a}} for a in (0.9, 0.9 - lost)]}
                for fold, lost in enumerate(lost_per_fold)
            },
        }
        for method, lost_per_fold in losses.items()
    ]
    path.write_text(json.dumps({"sigmas": [0.0, 0.3], "splits": ["synthetic"], "methods": methods}))
    return path


def test_the_noise_table_pools_folds_and_files_and_pairs_them_with_the_baseline(tmp_path):
    noise_table = _bench("noise_table")
    first = _noise_json(tmp_path / "a.json", {"baseline": [0.4, 0.5], "feratt-cls": [0.3, 0.35]})
    second = _noise_json(tmp_path / "b.json", {"baseline": [0.45], "feratt-cls": [0.3]})
    sigmas, runs = noise_table.pooled_accuracy([first, second])
    assert sigmas == [0.0, 0.3]
    assert [run[1] for run in runs[("baseline", "synthetic")]] == pytest.approx([0.5, 0.4, 0.45])
    lines = noise_table.table(sigmas, runs).splitlines()
    assert lines[2] == "| baseline, synthetic (3) | 90.0 | 45.0 | 45.0 ± 4.1 | - |"
    assert lines[3].startswith("| FERAtt+Cls, synthetic (3) | 90.0 | 58.3 | 31.7 ± 2.4 | +13.3 (p = ")
