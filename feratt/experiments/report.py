"""EXP/report.md: tables, significance tests, figures, configuration and the data's checksums."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from feratt import __version__
from feratt.atomic import atomic_write_bytes
from feratt.codec import JSONObject
from feratt.experiments.evaluate import EvaluationResult
from feratt.experiments.tables import SplitTable, Table, method_title
from feratt.jsonfile import dumps

SPLIT_TITLES = {"synthetic": "Synthetic test renders", "real": "Real test faces (unrendered)"}


def _tests_markdown(tests: JSONObject) -> list[str]:
    if "note" in tests:
        return [f"Significance tests: {tests['note']}.", ""]
    friedman, nemenyi, dunn = tests["friedman"], tests["nemenyi"], tests["bonferroni_dunn"]
    alpha = tests["alpha"]
    lines = [
        f"Significance tests on per-fold {tests['metric']} (alpha {alpha}):",
        "",
        f"- Friedman: chi-square_F = {friedman['statistic']:.3f}, p = {friedman['p_value']:.4f}; "
        f"Iman-Davenport F_F = {friedman['iman_davenport']:.3f}, p = {friedman['iman_davenport_p']:.4f} "
        f"({friedman['n']} folds, {friedman['k']} methods).",
        f"- Nemenyi: critical difference {nemenyi['cd']:.3f} in average rank.",
    ]
    if friedman["n"] < 10:
        lines.insert(
            3,
            f"  With {friedman['n']} folds the chi-square and F approximations are rough (Demsar, 2006, "
            "asks for about 10 or more); an infinite F_F only means that every fold ranks the methods "
            "alike. Read these p-values with care.",
        )
    for pair in nemenyi["pairs"]:
        verdict = "differ" if pair["significant"] else "do not differ"
        lines.append(
            f"  - {method_title(pair['a'])} vs {method_title(pair['b'])}: rank difference "
            f"{pair['difference']:.3f}, {verdict} at alpha {alpha}"
        )
    lines.append(
        f"- Bonferroni-Dunn against {method_title(dunn['control'])}: critical difference {dunn['cd']:.3f}."
    )
    for row in dunn["comparisons"]:
        verdict = "differs" if row["significant"] else "does not differ"
        lines.append(
            f"  - {method_title(row['method'])}: rank difference {row['difference']:.3f}, "
            f"z = {row['z']:.3f}, adjusted p = {row['p_adjusted']:.4f}, {verdict}"
        )
    lines += ["", f"![critical-difference diagram]({tests['figure']})", ""]
    return lines


def _per_fold(table: Table, folds: list[int]) -> list[str]:
    methods = list(table)
    head = "| Fold | " + " | ".join(method_title(m) for m in methods) + " |"
    lines = [head, "|---|" + "---:|" * len(methods)]
    for position, fold in enumerate(folds):
        cells = [f"{table[m]['accuracy'].folds[position]:.2f}" for m in methods]
        lines.append(f"| {fold} | " + " | ".join(cells) + " |")
    return lines


def _folds_named(folds: list[int]) -> str:
    return f"fold {folds[0]}" if len(folds) == 1 else "all folds"


def confusion_figures(
    out: Path, evaluations: dict[str, list[EvaluationResult]], split: str, fold_ids: list[int]
) -> list[str]:
    """One confusion-matrix PNG per method, summed over the folds `fold_ids`; their file names."""
    from feratt.experiments.figures import confusion_figure

    names = []
    for method, fold_evaluations in evaluations.items():
        rows = [e.splits[split] for e in fold_evaluations if split in e.splits]
        if not rows:
            continue
        matrix = np.sum([np.asarray(r.confusion) for r in rows], axis=0)
        path = out / f"confusion-{split}-{method}.png"
        confusion_figure(
            matrix, rows[0].classes, path, title=f"{method_title(method)}, {split}, {_folds_named(fold_ids)}"
        )
        names.append(path.name)
    return names


def _training_markdown(out: Path, settings: JSONObject) -> list[str]:
    """The training section: learning curves per pass, and the I_att strips of the first fold."""
    from feratt.experiments.curves import curve_figures, strip_figures

    methods, folds = list(settings["methods"]), list(settings["folds"])
    curves = curve_figures(out, methods, folds)
    strips = strip_figures(out, methods, folds[0])
    if not curves and not strips:
        return []
    which = f"fold {folds[0]}" if len(folds) == 1 else "the mean over the folds"
    lines = [
        "## Training",
        "",
        f"Learning curves ({which}, from each fold's `metrics.jsonl`): accuracy and each loss term per "
        "epoch, and for FERAtt the attention image's MSE and PSNR against its target and the IoU of its "
        "gate (> 0.5) with the face mask.",
        "",
        *(f"![{name}]({name})" for name in curves),
        "",
    ]
    if strips:
        lines += [
            f"I_att of the first test samples of fold {folds[0]} after a few epochs (input, target, "
            "then I_att by epoch):",
            "",
            *(f"![{name}]({name})" for name in strips),
            "",
        ]
    return lines


def write_report(
    out: Path,
    settings: JSONObject,
    splits: dict[str, SplitTable],
    evaluations: dict[str, list[EvaluationResult]],
) -> Path:
    """Write EXP/report.md from the experiment's settings, tables and evaluations."""
    data = settings["data"]
    lines = [
        "# FERAtt experiment report",
        "",
        f"feratt {__version__}; render `{settings['shards']}`; "
        f"methods {', '.join(method_title(m) for m in settings['methods'])}; "
        f"folds {', '.join(str(f) for f in settings['folds'])} "
        f"(leave-{settings['training']['fold_size']}-subjects-out, seed {settings['training']['seed']}).",
        "",
        *(
            [
                f"Test samples from the evaluation render `{settings['eval_shards']}` "
                f"(index.json sha256 `{settings['eval_data']['index_sha256']}`).",
                "",
            ]
            if "eval_shards" in settings
            else []
        ),
        "Data checksums (from the render's `index.json`):",
        "",
        f"- face bank content sha256 `{data['bank_sha256']}`",
        f"- render configuration sha256 `{data['config_sha256']}`",
        f"- index.json sha256 `{data['index_sha256']}` ({data['samples']} samples)",
        "",
        "Each fold's model is the checkpoint that did best on the validation subjects, held out of the "
        "fold's training subjects; the test subjects never take part in training or selection. "
        + (
            "Figures are one fold's, in %. "
            if len(settings["folds"]) == 1
            else "Figures are mean ± standard deviation over folds, in %. "
        )
        + "F1 is the paper's: 2PR/(P+R) of the macro precision P and the macro recall R.",
        "",
    ]
    for split, part in splits.items():
        lines += [f"## {SPLIT_TITLES[split]}", "", part.markdown.rstrip(), ""]
        lines += [f"Per-fold accuracy (%), {split}:", "", *_per_fold(part.table, settings["folds"]), ""]
        lines += _tests_markdown(part.tests)
        for name in confusion_figures(out, evaluations, split, settings["folds"]):
            lines.append(f"![{name}]({name})")
        lines.append("")
    lines += _training_markdown(out, settings)
    lines += [
        "## Configuration",
        "",
        "```json",
        dumps(settings).rstrip("\n"),
        "```",
        "",
    ]
    path = out / "report.md"
    atomic_write_bytes(path, "\n".join(lines).encode())
    return path
