"""Evaluation and experiments end to end on a tiny render: tables, reuse, bad input; their commands."""

import csv
import json
import subprocess
import sys

import pytest
from cli_helpers import assert_user_error, render_tiny, run

from feratt.codec import encode
from feratt.config.training import TrainConfig
from feratt.errors import FerattError
from feratt.experiments.evaluate import evaluate
from feratt.experiments.experiment import ExperimentRequest, run_experiment


@pytest.fixture(scope="module")
def render(tmp_path_factory):
    """A render of 4 demo subjects (2 folds of 2), 7 classes, 2 samples a face at 64 px."""
    base = tmp_path_factory.mktemp("experiment-inputs")
    return render_tiny(base, 4, shard_size=14, config={"fit_mask": 0.05})


def experiment_args(render, out, *extra):
    return (
        "experiment",
        render,
        "--out",
        out,
        "--methods",
        "baseline,feratt-cls",
        "--preset",
        "cpu-small",
        "--epochs",
        1,
        "--batch-size",
        8,
        "--max-batches",
        2,
        "--fold-size",
        2,
        "--val-subjects",
        1,
        "--workers",
        0,
        "--device",
        "cpu",
        *extra,
    )


def experiment_request(render, out, eval_shards=None, **config):
    """The request `experiment_args` makes on the command line."""
    settings = dict(epochs=1, batch_size=8, max_batches=2, fold_size=2, val_subjects=1, workers=0)
    return ExperimentRequest(
        render=render,
        out=out,
        methods=("baseline", "feratt-cls"),
        config=TrainConfig.from_options({"preset": "cpu-small", **settings, **config}),
        eval_render=eval_shards,
    )


def run_logged(request, **fields):
    """Run an experiment on the CPU; its result and the lines it logged."""
    lines = []
    result = run_experiment(request, device="cpu", log=lines.append, **fields)
    return result, lines


@pytest.fixture(scope="module")
def experiment(render, tmp_path_factory):
    out = tmp_path_factory.mktemp("exp") / "exp"
    bank = render.parent / "bank.h5"
    result, _ = run_logged(experiment_request(render, out, real_test=str(bank)))
    return out, result


def test_experiment_tables_cover_every_method_and_fold(experiment):
    out, result = experiment
    results = json.loads((out / "results.json").read_text())
    assert results == json.loads(json.dumps(encode(result)))
    assert result.report == out / "report.md" and list(result.evaluations) == ["baseline", "feratt-cls"]
    assert set(results["splits"]) == {"synthetic", "real"}
    for split in ("synthetic", "real"):
        table = results["splits"][split]["table"]
        assert list(table) == ["baseline", "feratt-cls"]
        for values in table.values():
            assert set(values) == {"accuracy", "precision", "recall", "f1"}
            assert len(values["accuracy"]["folds"]) == 2
        rows = list(csv.reader((out / f"table-{split}.csv").read_text().splitlines()))
        assert len(rows) == 3 and len(rows[0]) == 9
        assert (out / f"table-{split}.md").read_text() == result.splits[split].markdown
        markdown = result.splits[split].markdown.splitlines()
        assert markdown[0].startswith("| Method | Acc. | Prec. | Rec. | F1 |") and len(markdown) == 4
    evaluations = sorted(p.name for p in (out / "evaluations").glob("*.json"))
    assert evaluations == [f"{m}-fold-{f}.json" for m in ("baseline", "feratt-cls") for f in (0, 1)]
    subjects = [json.loads((out / "evaluations" / n).read_text())["test_subjects"] for n in evaluations[:2]]
    assert set(subjects[0]).isdisjoint(subjects[1]) and len(set(subjects[0]) | set(subjects[1])) == 4
    # Each table figure is the mean of the per-fold evaluations, in %.
    accuracies = [
        json.loads((out / "evaluations" / f"baseline-fold-{f}.json").read_text())["synthetic"]["accuracy"]
        for f in (0, 1)
    ]
    mean = results["splits"]["synthetic"]["table"]["baseline"]["accuracy"]["mean"]
    assert mean == pytest.approx(50 * sum(accuracies))
    real = json.loads((out / "evaluations" / "baseline-fold-0.json").read_text())["real"]
    assert real["samples"] == 14  # 2 test subjects x 7 classes, unrendered
    report = (out / "report.md").read_text()
    assert "Friedman" in report and "Nemenyi" in report and "Bonferroni-Dunn" in report
    assert results["settings"]["data"]["bank_sha256"] in report
    assert (out / "cd-synthetic.png").is_file() and (out / "confusion-synthetic-baseline.png").is_file()


def test_experiment_command_reuses_finished_runs_and_prints_the_tables(render, experiment):
    """The command line makes the same request as the API: the folder made through the API is reused."""
    out, first = experiment
    checkpoints = sorted(out.glob("runs/*/fold-*/best.pt"))
    assert len(checkpoints) == 4
    stamps = [p.stat().st_mtime_ns for p in checkpoints]
    before = (out / "results.json").read_bytes()
    result = run(*experiment_args(render, out, "--real-test", render.parent / "bank.h5"))
    assert result.exit_code == 0, result.output
    assert result.output.count("trained already, reused") == 4
    assert [p.stat().st_mtime_ns for p in checkpoints] == stamps
    assert (out / "results.json").read_bytes() == before
    tables = "".join(f"{split} test:\n{part.markdown}" for split, part in first.splits.items())
    assert result.output.endswith(f"{tables}wrote {out / 'report.md'}\n")


def test_experiment_folder_of_another_configuration_is_refused(render, experiment):
    out, _ = experiment
    with pytest.raises(FerattError, match=r"another configuration \(differs in training\)") as error:
        run_experiment(experiment_request(render, out, real_test=str(render.parent / "bank.h5"), lr=0.5))
    assert error.value.field == "out"
    result = run(*experiment_args(render, out, "--real-test", render.parent / "bank.h5", "--lr", 0.5))
    assert_user_error(result, "--out: ")


def test_experiment_request_is_checked(render, tmp_path):
    with pytest.raises(FerattError, match="unknown method 'nope'") as error:
        ExperimentRequest(render=render, out=tmp_path, methods=("baseline", "nope"))
    assert error.value.field == "methods"
    with pytest.raises(FerattError, match="fold 7 does not exist") as error:
        run_experiment(experiment_request(render, tmp_path / "exp"), folds="7")
    assert error.value.field == "folds"
    assert not (tmp_path / "exp").exists()
    assert_user_error(
        run(*experiment_args(render, tmp_path / "exp", "--methods", "nope")), "--methods: unknown"
    )


def test_evaluate_writes_deterministic_results(render, experiment, tmp_path):
    out, _ = experiment
    run_dir = out / "runs" / "feratt-cls"
    args = ("evaluate", run_dir, "--shards", render, "--fold", 1, "--device", "cpu")
    first = run(*args, "--out", tmp_path / "a.json", "--real-test", render.parent / "bank.h5")
    assert first.exit_code == 0, first.output
    assert "(paper F1)" in first.output
    assert first.output.splitlines()[-1] == f"wrote {tmp_path / 'a.json'}"
    second = evaluate(
        run=run_dir,
        render=render,
        fold=1,
        out_file=tmp_path / "b.json",
        real_test=render.parent / "bank.h5",
        device="cpu",
    )
    assert second.path == tmp_path / "b.json" and second.real is not None
    assert json.loads((tmp_path / "b.json").read_text()) == json.loads(json.dumps(encode(second)))
    a = json.loads((tmp_path / "a.json").read_text())
    b = json.loads((tmp_path / "b.json").read_text())
    for part in (a, b):
        part["synthetic"].pop("confusion_png")
        part["real"].pop("confusion_png")
    assert a == b
    saved = json.loads((out / "evaluations" / "feratt-cls-fold-1.json").read_text())
    assert a["synthetic"]["confusion"] == saved["synthetic"]["confusion"]
    assert a["synthetic"]["f1_definition"].startswith("paper F1 = 2PR/(P+R)")
    assert sum(a["synthetic"]["per_class"]["support"]) == a["synthetic"]["samples"] == 28
    assert (tmp_path / "a-confusion-synthetic.png").is_file()


def test_evaluate_bad_inputs(render, experiment, tmp_path):
    out, _ = experiment
    (tmp_path / "empty-run").mkdir()
    assert_user_error(run("evaluate", tmp_path / "empty-run", "--shards", render), "has no checkpoint")
    several = run("evaluate", out / "runs" / "baseline", "--shards", render)
    assert_user_error(several, "--fold: run folder")
    assert several.output.rstrip().endswith("holds several folds (fold-0, fold-1): choose one")


def test_evaluate_on_an_evaluation_render_of_the_same_bank(render, experiment, tmp_path):
    """The authors' evaluation geometry: a --geometry eval render of the bank, scored fold by fold."""
    out, _ = experiment
    eval_render = render_tiny(tmp_path, 4, config={"preset": "eval"}, seed=7, shard_size=14)
    index = json.loads((eval_render / "index.json").read_text())
    assert index["render_config"]["geometry"]["rotation"] == 45.0
    evaluate(run=out / "runs" / "baseline", render=eval_render, fold=0, out_file=tmp_path / "e.json")
    evaluated = json.loads((tmp_path / "e.json").read_text())
    trained = json.loads((out / "evaluations" / "baseline-fold-0.json").read_text())
    assert evaluated["test_subjects"] == trained["test_subjects"] and evaluated["synthetic"]["samples"] == 28

    # The same evaluation render as an experiment's test set.
    exp = tmp_path / "exp-eval"
    run_logged(experiment_request(render, exp, eval_shards=eval_render))
    again = json.loads((exp / "evaluations" / "baseline-fold-0.json").read_text())
    assert again["test_subjects"] == trained["test_subjects"]
    evaluate(
        run=exp / "runs" / "baseline",
        render=eval_render,
        fold=0,
        out_file=tmp_path / "direct.json",
        device="cpu",
    )
    assert (
        json.loads((tmp_path / "direct.json").read_text())["synthetic"]["confusion"]
        == again["synthetic"]["confusion"]
    )
    assert f"evaluation render `{eval_render}`" in (exp / "report.md").read_text()


def test_table_shows_spread_over_folds_and_plain_figures_for_one_fold():
    from feratt.experiments.tables import MetricSummary, table_markdown

    def table(folds):
        values = MetricSummary(mean=sum(folds) / len(folds), std=abs(folds[0] - folds[-1]) / 2, folds=folds)
        return {"baseline": {key: values for key in ("accuracy", "precision", "recall", "f1")}}

    assert table_markdown(table([50.0, 60.0])).splitlines()[2] == (
        "| PreActResNet18 | 55.00 ± 5.00 | 55.00 ± 5.00 | 55.00 ± 5.00 | 55.00 ± 5.00 |"
    )
    assert (
        table_markdown(table([37.02])).splitlines()[2] == "| PreActResNet18 | 37.02 | 37.02 | 37.02 | 37.02 |"
    )


def test_experiment_on_one_fold_reports_its_figures_without_tests(render, tmp_path):
    out = tmp_path / "one"
    run_logged(experiment_request(render, out), folds="1")
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["folds"] == [1]
    accuracy = results["splits"]["synthetic"]["table"]["baseline"]["accuracy"]
    assert len(accuracy["folds"]) == 1 and accuracy["std"] == 0.0
    row = (out / "table-synthetic.md").read_text().splitlines()[2]
    assert row.startswith("| PreActResNet18 | ") and "±" not in row
    assert f"{accuracy['mean']:.2f}" in row
    report = (out / "report.md").read_text()
    assert "Figures are one fold's, in %." in report and "the tests need at least two" in report
    assert f"| 1 | {accuracy['folds'][0]:.2f} |" in report  # the per-fold table names fold 1, not 0
    assert not (out / "cd-synthetic.png").exists()
    # The confusion figure is titled "..., fold 1"; a runaway title once stretched it to 17,000 px.
    from PIL import Image

    width, height = Image.open(out / "confusion-synthetic-baseline.png").size
    assert 300 < width < 1500 and 300 < height < 1500
    # A folder saved before --samples-per-epoch existed holds no such key; it reads as the default and is
    # reused.
    for path in [out / "experiment.json", *out.glob("runs/*/config.json")]:
        saved = json.loads(path.read_text())
        saved.get("training", saved).pop("samples_per_epoch")
        path.write_text(json.dumps(saved))
    _, again = run_logged(experiment_request(render, out), folds="1")
    assert again.count("baseline fold 1: trained already, reused") == 1
    assert sum("trained already, reused" in line for line in again) == 2
    with pytest.raises(FerattError, match="differs in training"):
        run_logged(experiment_request(render, out, class_means="batch"), folds="1")


def _outputs(out):
    """Every file an experiment folder holds, by path relative to it."""
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())


def _test_counts(render, subjects):
    """Samples per class of `subjects` in the render, from their manifests."""
    classes = json.loads((render / "index.json").read_text())["classes"]
    manifests = [json.loads((render / "manifests" / f"{s}.json").read_text()) for s in subjects]
    return [sum(m["class_counts"][name] for m in manifests) for name in classes]


def test_experiment_under_torchrun_with_gloo_matches_single_process(render, experiment, tmp_path):
    """Two CPU ranks: DDP training per method and fold, each test sample scored once, one set of outputs."""
    single, _ = experiment
    out = tmp_path / "ddp"
    args = experiment_args(render, out, "--real-test", render.parent / "bank.h5")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    done = subprocess.run(
        [*command, "-m", "feratt", *map(str, args)], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert _outputs(out) == _outputs(single)
    assert done.stdout.count("synthetic test:") == 1 and done.stdout.count(f"wrote {out / 'report.md'}") == 1
    assert done.stdout.count("baseline fold 0: training") == 1  # rank 0 alone logs
    for method in ("baseline", "feratt-cls"):
        assert (out / "runs" / method / "folds.json").read_text() == (
            single / "runs" / method / "folds.json"
        ).read_text()
        for fold in (0, 1):
            name = f"evaluations/{method}-fold-{fold}.json"
            ddp, alone = (json.loads((folder / name).read_text()) for folder in (out, single))
            assert ddp["test_subjects"] == alone["test_subjects"]
            # Every test sample scored exactly once: per class, as many as the render holds.
            expected = _test_counts(render, ddp["test_subjects"])
            assert sum(expected) == 28
            for split in ("synthetic", "real"):
                assert ddp[split]["samples"] == alone[split]["samples"]
                support = [sum(row) for row in ddp[split]["confusion"]]
                assert support == [sum(row) for row in alone[split]["confusion"]]
            assert [sum(row) for row in ddp["synthetic"]["confusion"]] == expected
            # Both ranks worked: the training subject's 14 samples split 7 and 7, and each rank scored its
            # 14 test samples within --max-batches 2, where one process stops after 2 x 8.
            ddp, alone = (
                json.loads((folder / "runs" / method / f"fold-{fold}" / "metrics.jsonl").read_text())
                for folder in (out, single)
            )
            assert ddp["train"]["samples"] == alone["train"]["samples"] == 14
            assert (ddp["test"]["samples"], alone["test"]["samples"]) == (28, 16)
    results = json.loads((out / "results.json").read_text())
    assert results["settings"] == json.loads((single / "results.json").read_text())["settings"]
