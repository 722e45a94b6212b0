"""FERAtt ablations at a fixed budget: each row is a TrainConfig change, trained and tested per fold and seed.

Every row starts from the demo's configuration (cpu-small, batch 32, lr 1e-3, the manifold loss with
leave-one-out class means at weight 0.1) and changes the fields it names. A run trains with
`feratt.train`, then its best-on-validation checkpoint is scored on the fold's synthetic test renders
and on the test subjects' real faces with `feratt.evaluate`. Results accumulate in OUT/results.json,
one entry per row, fold and seed, so the table grows over several sittings: a finished entry is never
run again. `--table` prints the markdown table of what is there (mean +- std over the runs of a row),
with the validation accuracy that picked each checkpoint: rows are chosen on it, never on the test.

    python bench/ablations.py demo/render --bank demo/bank.h5 --out bench/ablations \
        --rows feratt-cls,feratt-cls-tf0.2 --folds 0 --seeds 0 --epochs 12
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import feratt
from feratt.artifacts.run import FoldFolder
from feratt.jsonfile import write_json

#: The label of the demo render (`make demo`'s), which rows use unless told otherwise.
DEFAULT_RENDER = "demo"

#: The demo's configuration (see the Makefile's demo target): what every row changes.
DEMO = {
    "preset": "cpu-small",
    "batch_size": 32,
    "lr": 1e-3,
    "class_means": "leave-one-out",
    "representation_weight": 0.1,
    "epochs": 12,
}

#: The learning-rate schedule today's cpu-small preset takes.
COSINE = {"lr_schedule": "cosine", "warmup_epochs": 1}

#: What today's cpu-small preset changes from DEMO: the `now-*` rows screen the other options on top of it.
NOW = {"identity_init": True, **COSINE, "sigma": 4.0}

#: Row name -> the TrainConfig fields it sets on top of DEMO.
ROWS: dict[str, dict[str, Any]] = {
    "baseline": {"method": "baseline"},
    "feratt-cls": {"method": "feratt-cls"},
    "feratt-rep-cls": {"method": "feratt-rep-cls"},
    "feratt-rep-cls-w1": {"method": "feratt-rep-cls", "representation_weight": 1.0},
    "feratt-cls-tf0.2": {"method": "feratt-cls", "teacher_forcing": 0.2},
    "feratt-cls-tf0.5": {"method": "feratt-cls", "teacher_forcing": 0.5},
    "feratt-cls-tanh": {"method": "feratt-cls", "attention_loss": "tanh"},
    "feratt-cls-ce": {"method": "feratt-cls", "classification_loss": "ce"},
    "feratt-cls-rec-concat": {"method": "feratt-cls", "rec_concat": True},
    "feratt-cls-ft8": {"method": "feratt-cls", "ft_blocks": 8},
    "feratt-cls-att7": {"method": "feratt-cls", "attention_channels": 7},
    "feratt-cls-lr3e-4": {"method": "feratt-cls", "lr": 3e-4},
    "feratt-cls-att-weight1": {"method": "feratt-cls", "attention_weight": 1.0},
    "feratt-cls-cosine": {"method": "feratt-cls", "lr_schedule": "cosine", "warmup_epochs": 1},
    "feratt-cls-onecycle": {"method": "feratt-cls", "lr_schedule": "onecycle"},
    "feratt-cls-detach": {"method": "feratt-cls", "detach_attention": True},
    "feratt-cls-att-first2": {"method": "feratt-cls", "attention_only_epochs": 2},
    "feratt-cls-ramp4": {"method": "feratt-cls", "ramp_epochs": 4},
    "feratt-cls-pretrain4": {"method": "feratt-cls", "pretrain_attention": 4},
    "feratt-rep-cls-ramp4": {"method": "feratt-rep-cls", "ramp_epochs": 4},
    "feratt-cls-masked": {"method": "feratt-cls", "att_target": "input-masked"},
    "feratt-rep-cls-masked": {"method": "feratt-rep-cls", "att_target": "input-masked"},
    "feratt-cls-pretrain4-e8": {"method": "feratt-cls", "pretrain_attention": 4, "epochs": 8},
    "baseline-cosine": {"method": "baseline", **COSINE},
    "feratt-cls-identity": {"method": "feratt-cls", "identity_init": True},
    "feratt-rep-cls-identity": {"method": "feratt-rep-cls", "identity_init": True},
    "feratt-cls-identity-cosine": {
        "method": "feratt-cls",
        "identity_init": True,
        **COSINE,
    },
    "feratt-rep-cls-identity-cosine": {
        "method": "feratt-rep-cls",
        "identity_init": True,
        **COSINE,
    },
    "feratt-rep-cls-identity-cosine-w0.03": {
        "method": "feratt-rep-cls",
        "identity_init": True,
        **COSINE,
        "representation_weight": 0.03,
    },
    "feratt-rep-cls-identity-cosine-sigma4": {
        "method": "feratt-rep-cls",
        "identity_init": True,
        **COSINE,
        "sigma": 4.0,
    },
    "feratt-rep-cls-identity-cosine-repramp6": {
        "method": "feratt-rep-cls",
        "identity_init": True,
        **COSINE,
        "representation_ramp_epochs": 6,
    },
    # Fresh samples every epoch: with a render 12x the demo's (bench/RESULTS.md), 12 epochs of 1400 samples
    # see each training sample once, for the training steps of the rows above; --test-render scores the
    # demo render's test split, as for every other row.
    "baseline-fresh": {"method": "baseline", "samples_per_epoch": 1400, "test_every": 12},
    "feratt-cls-identity-fresh": {
        "method": "feratt-cls",
        "identity_init": True,
        "samples_per_epoch": 1400,
        "test_every": 12,
    },
    "feratt-rep-cls-identity-w0.03": {
        "method": "feratt-rep-cls",
        "identity_init": True,
        "representation_weight": 0.03,
    },
    "now-feratt-cls-detach": {"method": "feratt-cls", **NOW, "detach_attention": True},
    "now-feratt-cls-att-first2": {"method": "feratt-cls", **NOW, "attention_only_epochs": 2},
    "now-feratt-cls-ramp4": {"method": "feratt-cls", **NOW, "ramp_epochs": 4},
    "now-feratt-cls-onecycle": {"method": "feratt-cls", **NOW, "lr_schedule": "onecycle", "warmup_epochs": 0},
    "now-feratt-cls-ce": {"method": "feratt-cls", **NOW, "classification_loss": "ce"},
    "now-feratt-cls-att7": {"method": "feratt-cls", **NOW, "attention_channels": 7},
    "now-feratt-cls-ft8": {"method": "feratt-cls", **NOW, "ft_blocks": 8},
    "now-feratt-cls-tf0.2": {"method": "feratt-cls", **NOW, "teacher_forcing": 0.2},
    "now-feratt-cls-tf0.5": {"method": "feratt-cls", **NOW, "teacher_forcing": 0.5},
    "now-feratt-rep-cls-batch-means": {"method": "feratt-rep-cls", **NOW, "class_means": "batch"},
}


def config_for(row: str, seed: int, epochs: int | None) -> feratt.TrainConfig:
    """The TrainConfig of `row` at `seed` (and `epochs`, when the screening budget differs)."""
    values = {**DEMO, **ROWS[row], "seed": seed}
    if epochs is not None:
        values["epochs"] = epochs
    return feratt.TrainConfig.from_options(values).resolved()


def run_entry(
    render: Path,
    bank: Path,
    out: Path,
    row: str,
    fold: int,
    seed: int,
    epochs: int | None,
    label: str,
    test_render: Path | None = None,
):
    """Train (or reuse) one row at one fold and seed, then score its best-on-validation model (on
    `test_render`'s test split when given, else on `render`'s)."""
    config = config_for(row, seed, epochs)
    suffix = "" if label == DEFAULT_RENDER else f"@{label}"
    run_dir = out / "runs" / f"{row}{suffix}-e{config.epochs}" / f"seed-{seed}"
    started = time.perf_counter()
    if not FoldFolder(run_dir / f"fold-{fold}").finished(config.epochs):
        feratt.train(render, run_dir, config, folds=fold, resume=True, device="cpu", log=print)
    seconds = time.perf_counter() - started
    out_file = run_dir / f"evaluation-fold-{fold}.json"
    evaluation = feratt.evaluate(
        run=run_dir, render=test_render or render, fold=fold, real_test=bank, out_file=out_file
    )
    return {
        "row": row,
        "render": label,
        "fold": fold,
        "seed": seed,
        "epochs": config.epochs,
        "changes": ROWS[row],
        "validation": best_validation(run_dir / f"fold-{fold}"),
        "synthetic": evaluation.synthetic.accuracy,
        "real": evaluation.real.accuracy if evaluation.real is not None else None,
        "best_epoch": evaluation.epoch,
        "train_seconds": round(seconds, 1),
        "test_render": str(test_render or render),
    }


def best_validation(fold_dir: Path) -> float | None:
    """The validation accuracy that picked the fold's best checkpoint (what rows are compared on)."""
    scores = [
        record["validation"]["accuracy"]
        for record in FoldFolder(fold_dir).records()
        if "validation" in record
    ]
    return max(scores) if scores else None


def entry_key(entry: dict[str, Any]) -> str:
    """The identity of a results entry."""
    return f"{_name(entry)}|e{entry['epochs']}|fold{entry['fold']}|seed{entry['seed']}"


def _name(entry: dict[str, Any]) -> str:
    """The row's name, with its render's label unless it is the demo render."""
    label = entry.get("render", DEFAULT_RENDER)
    return entry["row"] if label == DEFAULT_RENDER else f"{entry['row']}@{label}"


def read_results(path: Path) -> dict[str, dict[str, Any]]:
    """The entries measured so far, by key."""
    return json.loads(path.read_text()) if path.is_file() else {}


def _cell(values: list[float]) -> str:
    if len(values) == 1:
        return f"{100 * values[0]:.1f}"
    return f"{100 * statistics.mean(values):.1f} ± {100 * statistics.pstdev(values):.1f}"


def table(results: dict[str, dict[str, Any]]) -> str:
    """Markdown: one line per row and budget, mean +- std over its folds and seeds, in %."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for entry in results.values():
        groups.setdefault((_name(entry), entry["epochs"]), []).append(entry)
    lines = [
        "| row | changes from the demo | epochs | runs (fold/seed) | validation | synthetic | real "
        "| best epoch |",
        "|---|---|---:|---|---:|---:|---:|---|",
    ]
    for (row, epochs), entries in sorted(groups.items(), key=lambda item: (item[0][1], item[0][0])):
        runs = ", ".join(f"{e['fold']}/{e['seed']}" for e in entries)
        changes = ", ".join(f"{k}={v}" for k, v in entries[0]["changes"].items() if k != "method") or "-"
        best = ", ".join(str(e["best_epoch"]) for e in entries)
        real = [e["real"] for e in entries if e["real"] is not None]
        validation = [e["validation"] for e in entries if e.get("validation") is not None]
        lines.append(
            f"| {row} | {changes} | {epochs} | {runs} | {_cell(validation) if validation else '-'} "
            f"| {_cell([e['synthetic'] for e in entries])} | {_cell(real) if real else '-'} | {best} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("render", type=Path)
    parser.add_argument("--bank", type=Path, required=True, help="The render's face bank (real test).")
    parser.add_argument("--out", type=Path, default=Path("bench/ablations"))
    parser.add_argument("--rows", default="", help=f"Comma-separated rows of: {', '.join(ROWS)}.")
    parser.add_argument("--folds", default="0")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--epochs", type=int, help="Screening budget (default: the demo's 12).")
    parser.add_argument("--table", action="store_true", help="Only print the table of what is measured.")
    parser.add_argument(
        "--render-label",
        default=DEFAULT_RENDER,
        help="Name of RENDER in the table, for rows on a render other than the demo's.",
    )
    parser.add_argument(
        "--test-render",
        type=Path,
        help="Score this render's test split (the demo render, say) instead of RENDER's.",
    )
    args = parser.parse_args()
    path = args.out / "results.json"
    results = read_results(path)
    if not args.table:
        args.out.mkdir(parents=True, exist_ok=True)
        for row in filter(None, args.rows.split(",")):
            if row not in ROWS:
                parser.error(f"unknown row {row!r}")
            for fold in (int(f) for f in args.folds.split(",")):
                for seed in (int(s) for s in args.seeds.split(",")):
                    epochs = config_for(row, seed, args.epochs).epochs
                    planned = {"row": row, "render": args.render_label, "epochs": epochs}
                    key = entry_key({**planned, "fold": fold, "seed": seed})
                    if key in results:
                        continue
                    entry = run_entry(
                        args.render, args.bank, args.out, row, fold, seed, args.epochs, args.render_label,
                        args.test_render,
                    )  # fmt: skip
                    results[key] = entry
                    write_json(path, results)
                    print(f"{key}: synthetic {entry['synthetic']:.3f}, real {entry['real']:.3f}", flush=True)
    print(table(results), end="")


if __name__ == "__main__":
    main()
