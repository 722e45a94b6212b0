"""Embedding tiny trained runs: embeddings, k-NN accuracy on z, the t-SNE subsample, bad input."""

import json

import numpy as np
import pytest
from cli_helpers import assert_user_error, render_tiny, run, train_tiny
from PIL import Image

from feratt.artifacts.render import RenderSet
from feratt.codec import encode
from feratt.errors import FerattError
from feratt.experiments.embed import embed, stratified_subsample
from feratt.experiments.evaluate import run_model, synthetic_loader
from feratt.training.checkpoints import load_trained
from feratt.training.folds import make_folds, split_fold
from feratt.training.metrics import knn_accuracy


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A render of 4 demo subjects (2 samples a face, 64 px); a FERAtt and a baseline run of fold 0."""
    base = tmp_path_factory.mktemp("embed-inputs")
    render = render_tiny(base)
    trained = {method: train_tiny(render, base / method, method) for method in ("feratt-rep-cls", "baseline")}
    return {"base": base, "render": render, **trained}


@pytest.fixture(scope="module")
def embedded(runs):
    """The embedding of the FERAtt run, at most 20 of its 28 test points in the t-SNE; the lines logged."""
    lines = []
    result = embed(
        run=runs["feratt-rep-cls"], render=runs["render"], max_points=20, device="cpu", log=lines.append
    )
    out = runs["feratt-rep-cls"] / "fold-0" / "embed"
    assert result.out == out and result.written == [
        out / n for n in ("embeddings.npz", "embed.json", "tsne.png")
    ]
    assert json.loads((out / "embed.json").read_text()) == json.loads(json.dumps(encode(result)))
    return out, "\n".join(lines)


def test_embed_writes_the_test_embeddings(runs, embedded):
    out, output = embedded
    with np.load(out / "embeddings.npz") as npz:
        data = {key: npz[key] for key in npz.files}
    assert data["embeddings"].shape == (28, 64) and data["logits"].shape == (28, 7)
    np.testing.assert_array_equal(data["predictions"], data["logits"].argmax(1))
    trained = load_trained(runs["feratt-rep-cls"])
    assert data["classes"].tolist() == trained.classes
    index = RenderSet.open(runs["render"])
    split = split_fold(make_folds(sorted(index.subjects), 2, 0), 0, 1, 0)
    test = run_model(trained, synthetic_loader(runs["render"], split.test, 100, 0, True))
    np.testing.assert_array_equal(data["labels"], test.labels)
    np.testing.assert_allclose(data["embeddings"], test.embeddings, rtol=0, atol=1e-6)
    report = json.loads((out / "embed.json").read_text())
    assert report["test_samples"] == 28 and report["train_samples"] == 14
    assert report["test_subjects"] == split.test and report["train_subjects"] == split.train
    assert report["classifier_accuracy"] == pytest.approx(np.mean(data["predictions"] == data["labels"]))
    assert f"classifier test accuracy {report['classifier_accuracy']:.4f}" in output
    with Image.open(out / "tsne.png") as image:
        image.verify()


def test_knn_accuracy_is_fitted_on_the_training_embeddings(runs, embedded):
    out, output = embedded
    trained = load_trained(runs["feratt-rep-cls"])
    report = json.loads((out / "embed.json").read_text())
    train = run_model(trained, synthetic_loader(runs["render"], report["train_subjects"], 100, 0, True))
    with np.load(out / "embeddings.npz") as npz:
        expected = knn_accuracy(train.embeddings, train.labels, npz["embeddings"], npz["labels"], k=11)
    assert report["knn_k"] == 11 and report["knn_accuracy"] == expected
    assert f"11-NN accuracy on z {expected:.4f}" in output


def test_tsne_respects_max_points(embedded):
    out, output = embedded
    report = json.loads((out / "embed.json").read_text())
    assert report["tsne"]["points"] == 20 and report["tsne"]["max_points"] == 20
    # Perplexity 30 is too high for 20 points: lowered, and said so.
    assert report["tsne"]["perplexity"] == 30 and report["tsne"]["perplexity_used"] == pytest.approx(19 / 3)
    assert "perplexity 30 lowered" in output
    with np.load(out / "embeddings.npz") as npz:
        assert len(npz["embeddings"]) == 28 and npz["tsne"].shape == (20, 2)
        chosen, labels = npz["tsne_index"], npz["labels"]
    assert len(set(chosen.tolist())) == 20 and chosen.max() < 28
    counts = np.bincount(labels[chosen], minlength=7)
    assert counts.max() - counts.min() <= 1  # every class has 4 test samples


def test_stratified_subsample():
    labels = np.repeat([0, 1, 2], [50, 30, 20])
    picked = stratified_subsample(labels, 10, np.random.default_rng(3))
    assert np.bincount(labels[picked]).tolist() == [5, 3, 2]
    assert np.all(np.diff(picked) > 0)
    np.testing.assert_array_equal(picked, stratified_subsample(labels, 10, np.random.default_rng(3)))
    assert np.bincount(labels[stratified_subsample(labels, 7, np.random.default_rng(0))]).tolist() == [
        4,
        2,
        1,
    ]
    np.testing.assert_array_equal(stratified_subsample(labels, 500, np.random.default_rng(0)), np.arange(100))


def test_bad_inputs(runs, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(FerattError, match="has no embedding z: embed needs a FERAtt run"):
        embed(run=runs["baseline"], render=runs["render"], out=out, device="cpu")
    assert not out.exists()
    with pytest.raises(FerattError, match="no checkpoint for fold 1"):
        embed(run=runs["feratt-rep-cls"], render=runs["render"], fold=1, out=out, device="cpu")
    with pytest.raises(FerattError, match="at least 4 points") as error:
        embed(run=runs["feratt-rep-cls"], render=runs["render"], out=out, max_points=2, device="cpu")
    assert error.value.field == "max_points"
    base = ("--shards", runs["render"], "--out", out, "--device", "cpu")
    assert_user_error(run("embed", runs["baseline"], *base), "has no embedding z")
    result = run("embed", runs["feratt-rep-cls"], *base, "--max-points", 2)
    assert result.exit_code == 2 and "Invalid value for '--max-points'" in result.output


def test_embed_command_prints_the_lines_logged_and_the_files(runs, embedded, tmp_path):
    out, logged = embedded
    args = ("--shards", runs["render"], "--max-points", 20, "--out", tmp_path / "e", "--device", "cpu")
    result = run("embed", runs["feratt-rep-cls"], *args)
    assert result.exit_code == 0, result.output
    files = [f"wrote {tmp_path / 'e' / n}" for n in ("embeddings.npz", "embed.json", "tsne.png")]
    assert result.output.splitlines() == [*logged.splitlines(), *files]
    assert (tmp_path / "e" / "embed.json").read_bytes() == (out / "embed.json").read_bytes()
