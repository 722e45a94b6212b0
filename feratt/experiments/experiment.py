"""`feratt experiment`: train and evaluate several methods on every fold, then tables, tests and a report."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from feratt import __version__
from feratt.atomic import atomic_write_bytes
from feratt.errors import FerattError
from feratt.manifests.folds import make_folds
from feratt.training.config import TrainConfig
from feratt.training.data import read_render_index

EXPERIMENT_FILE = "experiment.json"
EXPERIMENT_KIND = "feratt-experiment"
#: The paper's table columns: metric key in the evaluation JSON, and its heading.
TABLE_COLUMNS = (("accuracy", "Acc."), ("precision", "Prec."), ("recall", "Rec."), ("f1", "F1"))
METHOD_TITLES = {"baseline": "PreActResNet18", "feratt-cls": "FERAtt+Cls", "feratt-rep-cls": "FERAtt+Rep+Cls"}


def _write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


def data_checksums(shards: Path) -> dict[str, Any]:
    """Checksums that identify a render: bank and configuration (from index.json), and the index itself."""
    index = read_render_index(shards)
    return {
        "bank_sha256": index.get("bank_sha256"),
        "config_sha256": index.get("config_sha256"),
        "index_sha256": hashlib.sha256((shards / "index.json").read_bytes()).hexdigest(),
        "samples": index.get("totals", {}).get("samples"),
    }


def _training_settings(config: TrainConfig) -> dict[str, Any]:
    """The training options an experiment shares across its runs (not the per-run ones)."""
    training = config.to_dict()
    for per_run in ("method", "workers", "real_test", "tensorboard", "verify"):
        training.pop(per_run, None)
    return training


def _settings(
    shards: Path, methods: list[str], folds: list[int], config: TrainConfig, real_test: str | None
) -> dict[str, Any]:
    """What an experiment folder is bound to; a rerun with other settings is refused."""
    return {
        "kind": EXPERIMENT_KIND,
        "shards": str(shards),
        "data": data_checksums(shards),
        "methods": methods,
        "folds": folds,
        "training": _training_settings(config),
        "real_test": real_test,
    }


def bind_folder(out: Path, settings: dict[str, Any]) -> None:
    """Create EXP/experiment.json, or check that the one there has the same settings."""
    path = out / EXPERIMENT_FILE
    if path.exists():
        try:
            existing = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise FerattError(f"cannot read {path}: {exc}") from None
        mine = {k: v for k, v in settings.items() if k != "feratt_version"}
        theirs = {k: v for k, v in existing.items() if k != "feratt_version"}
        if isinstance(theirs.get("training"), dict):
            # Through TrainConfig, so a folder made before an option existed reads as that option's default.
            theirs["training"] = _training_settings(TrainConfig.from_dict(theirs["training"]))
        if mine != theirs:
            changed = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
            raise FerattError(
                f"{out} holds an experiment of another configuration (differs in {', '.join(changed)}); "
                "use another --out"
            )
        return
    out.mkdir(parents=True, exist_ok=True)
    _write_json(path, {**settings, "feratt_version": __version__})


def check_run_config(run_dir: Path, config: TrainConfig) -> None:
    """Refuse to reuse a run folder trained with other settings than the experiment's."""
    path = run_dir / "config.json"
    if not path.is_file():
        return
    # Through TrainConfig, so a run saved before an option existed reads as that option's default.
    theirs = TrainConfig.from_dict(json.loads(path.read_text())).to_dict()
    mine = config.to_dict()
    ignored = ("workers", "real_test", "tensorboard", "verify")
    changed = sorted(k for k in set(mine) | set(theirs) if k not in ignored and mine.get(k) != theirs.get(k))
    if changed:
        raise FerattError(
            f"{run_dir} was trained with other settings ({', '.join(changed)}); use another --out"
        )


def fold_finished(fold_dir: Path, epochs: int) -> bool:
    """Whether a fold's training ran all its epochs (its last checkpoint is of the final epoch)."""
    log = fold_dir / "metrics.jsonl"
    if not (fold_dir / "best.pt").is_file() or not log.is_file():
        return False
    lines = log.read_text().splitlines()
    return bool(lines) and json.loads(lines[-1])["epoch"] == epochs - 1


def evaluate_fold(
    run_dir: Path, fold: int, shards: Path, real_test: str | None, config: TrainConfig, device: torch.device
) -> dict[str, Any]:
    """Test metrics of a fold's best-on-validation model on rendered (and real) test faces."""
    from feratt.experiments.evaluate import evaluate_model
    from feratt.experiments.runs import load_trained

    trained = load_trained(run_dir, fold=fold, which="best", device=device)
    return evaluate_model(
        trained,
        shards,
        real_test=real_test,
        batch_size=config.batch_size,
        workers=config.workers,
        device=device,
    )


def summarise(evaluations: dict[str, list[dict[str, Any]]], split: str) -> dict[str, dict[str, Any]]:
    """Per method: mean and std over folds (in %) of each table metric, and the per-fold values."""
    table = {}
    for method, folds in evaluations.items():
        rows = [f[split] for f in folds if split in f]
        table[method] = {
            key: {
                "mean": 100 * float(np.mean([r[key] for r in rows])),
                "std": 100 * float(np.std([r[key] for r in rows])),
                "folds": [100 * float(r[key]) for r in rows],
            }
            for key, _ in TABLE_COLUMNS
        }
    return table


def table_markdown(table: dict[str, dict[str, Any]]) -> str:
    """The paper's layout: one row per method, mean +- std over folds of Acc., Prec., Rec. and F1.

    With a single fold there is no spread to show, so the cells hold that fold's figures alone.
    """
    head = "| Method | " + " | ".join(title for _, title in TABLE_COLUMNS) + " |"
    lines = [head, "|---|" + "---:|" * len(TABLE_COLUMNS)]
    for method, values in table.items():
        cells = [
            f"{values[key]['mean']:.2f}"
            if len(values[key]["folds"]) == 1
            else f"{values[key]['mean']:.2f} ± {values[key]['std']:.2f}"
            for key, _ in TABLE_COLUMNS
        ]
        lines.append(f"| {METHOD_TITLES.get(method, method)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def table_csv(table: dict[str, dict[str, Any]]) -> str:
    """The table as CSV: method, then mean and std of each metric, in %."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["method", *(f"{key}_{stat}" for key, _ in TABLE_COLUMNS for stat in ("mean", "std"))])
    for method, values in table.items():
        cells = [f"{values[key][stat]:.4f}" for key, _ in TABLE_COLUMNS for stat in ("mean", "std")]
        writer.writerow([method, *cells])
    return buffer.getvalue()


def significance(
    table: dict[str, dict[str, Any]], out: Path, split: str, alpha: float = 0.05
) -> dict[str, Any]:
    """Friedman, Nemenyi and Bonferroni-Dunn (against the baseline) on per-fold accuracy; a CD diagram."""
    from feratt.experiments.figures import cd_diagram
    from feratt.experiments.stats import bonferroni_dunn_test, friedman_test, nemenyi_test

    methods = list(table)
    if len(methods) < 2:
        return {"note": "one method: nothing to compare"}
    scores = np.array([table[m]["accuracy"]["folds"] for m in methods]).T  # folds x methods
    if scores.shape[0] < 2:
        return {"note": "one fold: the tests need at least two"}
    control = "baseline" if "baseline" in methods else methods[0]
    friedman = friedman_test(scores)
    nemenyi = nemenyi_test(scores, methods, alpha=alpha)
    dunn = bonferroni_dunn_test(scores, methods, control=control, alpha=alpha)
    figure = cd_diagram(
        dict(zip(methods, (float(r) for r in friedman.ranks), strict=True)),
        nemenyi.cd,
        out / f"cd-{split}.png",
        title=f"Nemenyi critical difference, alpha {alpha} ({split}, accuracy over {scores.shape[0]} folds)",
    )
    return {
        "metric": "accuracy",
        "alpha": alpha,
        "friedman": friedman.to_dict(),
        "nemenyi": nemenyi.to_dict(),
        "bonferroni_dunn": dunn.to_dict(),
        "figure": figure.name,
    }


def run_experiment(
    shards: Path,
    out: Path,
    methods: list[str],
    fold_spec: str,
    config: TrainConfig,
    *,
    real_test: str | None,
    eval_shards: Path | None = None,
    device: torch.device,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train (or reuse) and evaluate every method on every chosen fold; write tables and report.md.

    Test samples come from `eval_shards` when given (a render of the same bank, such as one with the
    authors' evaluation geometry), else from the training render's test subjects.
    """
    from feratt.training.trainer import _fold_index, train

    index = read_render_index(shards)
    count = len(make_folds(sorted(index["subjects"]), config.fold_size, config.seed))
    folds = list(range(count)) if fold_spec == "all" else [_fold_index(fold_spec, count)]
    test_shards = eval_shards or shards
    settings = _settings(shards, methods, folds, config, real_test)
    if eval_shards is not None:
        settings["eval_shards"] = str(eval_shards)
        settings["eval_data"] = data_checksums(eval_shards)
    bind_folder(out, settings)
    evaluations: dict[str, list[dict[str, Any]]] = {}
    for method in methods:
        run_dir = out / "runs" / method
        method_config = dataclasses.replace(config, method=method, real_test=None)
        evaluations[method] = []
        check_run_config(run_dir, method_config)
        for fold in folds:
            fold_dir = run_dir / f"fold-{fold}"
            if fold_finished(fold_dir, config.epochs):
                echo(f"{method} fold {fold}: trained already, reused")
            else:
                echo(f"{method} fold {fold}: training")
                train(shards, run_dir, method_config, str(fold), resume=True, device=device, echo=echo)
            cached = out / "evaluations" / f"{method}-fold-{fold}.json"
            evaluation = None
            if cached.is_file():
                evaluation = json.loads(cached.read_text())
                stamp = (fold_dir / "best.pt").stat().st_mtime_ns
                if evaluation.get("checkpoint_mtime_ns") != stamp:
                    evaluation = None
            if evaluation is None:
                evaluation = evaluate_fold(run_dir, fold, test_shards, real_test, method_config, device)
                evaluation["checkpoint_mtime_ns"] = (fold_dir / "best.pt").stat().st_mtime_ns
                cached.parent.mkdir(parents=True, exist_ok=True)
                _write_json(cached, evaluation)
            evaluations[method].append(evaluation)
            echo(
                f"{method} fold {fold}: test accuracy {evaluation['synthetic']['accuracy']:.3f}"
                + (f", real {evaluation['real']['accuracy']:.3f}" if "real" in evaluation else "")
            )
    results: dict[str, Any] = {"settings": settings, "feratt_version": __version__, "splits": {}}
    for split in ("synthetic", "real") if real_test else ("synthetic",):
        table = summarise(evaluations, split)
        atomic_write_bytes(out / f"table-{split}.md", table_markdown(table).encode())
        atomic_write_bytes(out / f"table-{split}.csv", table_csv(table).encode())
        results["splits"][split] = {"table": table, "tests": significance(table, out, split)}
    _write_json(out / "results.json", results)
    from feratt.experiments.report import write_report

    write_report(out, results, evaluations)
    return results
