"""Accuracy under noise over several `feratt noise` outputs: mean per sigma and points lost, per method.

Each NOISE_JSON is one `feratt noise` result (one seed, say, with every fold of each method). The
table pools every fold of every file: the mean accuracy at each sigma, and the mean ± std over those
runs of the points lost from sigma 0 to the largest sigma, with a paired t-test of each FERAtt
method's loss against the baseline's (runs paired by file and fold).

    python bench/noise_table.py runs/noise-seed-*/noise.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from scipy import stats

TITLES = {"baseline": "baseline", "feratt-cls": "FERAtt+Cls", "feratt-rep-cls": "FERAtt+Rep+Cls"}


def pooled_accuracy(paths: list[Path]) -> tuple[list[float], dict[tuple[str, str], list[list[float]]]]:
    """The sigmas, and per (method, split) each run's accuracy at every sigma, runs in file and fold order."""
    sigmas: list[float] | None = None
    runs: dict[tuple[str, str], list[list[float]]] = {}
    for path in paths:
        result = json.loads(path.read_text())
        if sigmas is not None and result["sigmas"] != sigmas:
            raise SystemExit(f"{path}: sigmas {result['sigmas']} differ from {sigmas}")
        sigmas = result["sigmas"]
        for method in result["methods"]:
            for fold in method["folds"].values():
                for split in result["splits"]:
                    scores = [entry["metrics"]["accuracy"] for entry in fold[split]]
                    runs.setdefault((method["method"], split), []).append(scores)
    return sigmas or [], runs


def _lost(runs: list[list[float]]) -> list[float]:
    """Each run's points lost from the first sigma to the last."""
    return [100 * (run[0] - run[-1]) for run in runs]


def table(sigmas: list[float], runs: dict[tuple[str, str], list[list[float]]]) -> str:
    """Markdown: per method and split, the mean accuracy at each sigma and the points lost, in %."""
    lines = [
        "| method, split (runs) | " + " | ".join(f"{s:g}" for s in sigmas) + " | lost | vs baseline |",
        "|---|" + "---:|" * (len(sigmas) + 2),
    ]
    for (method, split), scores in sorted(runs.items(), key=lambda item: (item[0][1], item[0][0])):
        means = [100 * statistics.mean(run[i] for run in scores) for i in range(len(sigmas))]
        lost = _lost(scores)
        baseline = runs.get(("baseline", split))
        versus = "-"
        if method != "baseline" and baseline is not None and len(baseline) == len(scores) > 1:
            baseline_lost = _lost(baseline)
            gain = statistics.mean(baseline_lost) - statistics.mean(lost)
            versus = f"{gain:+.1f} (p = {stats.ttest_rel(baseline_lost, lost).pvalue:.2f})"
        lines.append(
            f"| {TITLES.get(method, method)}, {split} ({len(scores)}) | "
            + " | ".join(f"{m:.1f}" for m in means)
            + f" | {statistics.mean(lost):.1f} ± {statistics.pstdev(lost):.1f} | {versus} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("noise_json", nargs="+", type=Path)
    args = parser.parse_args()
    print(table(*pooled_accuracy(args.noise_json)), end="")


if __name__ == "__main__":
    main()
