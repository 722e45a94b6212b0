"""The ablation options of training: learning-rate schedules, loss-weight ramps, detached attention,
attention pre-training, fresh samples every epoch, and presets that carry their own settings."""

import json
import math
from dataclasses import replace

import pytest
import torch
from cli_helpers import render_tiny

from feratt.artifacts.run import FoldFolder
from feratt.codec import decode, encode
from feratt.config.training import TrainConfig
from feratt.training import loop
from feratt.training.schedule import epoch_config, epoch_lr, weight_factor
from feratt.training.train import train

TINY = TrainConfig(
    preset="cpu-small", epochs=3, batch_size=16, fold_size=2, val_subjects=1, workers=0, max_batches=1
)


@pytest.fixture(scope="module")
def render(tmp_path_factory):
    """A render of 6 demo subjects, 7 classes, 4 samples a face at 64 px."""
    return render_tiny(tmp_path_factory.mktemp("ablation-inputs"), 6, per_face=4, shard_size=14)


def test_the_defaults_keep_a_constant_rate_and_full_weights():
    config = TrainConfig(epochs=5)
    assert [epoch_lr(config, e) for e in range(5)] == [1e-4] * 5
    assert [weight_factor(config, e) for e in range(5)] == [1.0] * 5
    assert epoch_config(config, 0) is config


def test_cosine_with_warm_up_matches_a_hand_computation():
    config = TrainConfig(epochs=6, lr=1e-3, lr_schedule="cosine", warmup_epochs=2)
    # Warm-up 1/3, 2/3 of the rate; then a cosine over the 4 remaining epochs: (1 + cos(pi k / 4)) / 2.
    half = (1 + math.cos(math.pi / 4)) / 2
    expected = [1e-3 / 3, 2e-3 / 3, 1e-3, 1e-3 * half, 1e-3 * 0.5, 1e-3 * (1 - half)]
    assert [epoch_lr(config, e) for e in range(6)] == pytest.approx(expected, rel=1e-12)
    constant = replace(config, lr_schedule="constant")
    assert [epoch_lr(constant, e) for e in range(6)] == pytest.approx([1e-3 / 3, 2e-3 / 3] + [1e-3] * 4)


def test_onecycle_rises_from_a_25th_and_ends_near_zero():
    config = TrainConfig(epochs=5, lr=1e-2, lr_schedule="onecycle", warmup_epochs=2)
    rates = [epoch_lr(config, e) for e in range(5)]
    low = 1e-2 / 25
    assert rates[:3] == pytest.approx([low, (low + 1e-2) / 2, 1e-2])
    assert rates[3] == pytest.approx(low / 1e4 + (1e-2 - low / 1e4) / 2)
    assert rates[4] == pytest.approx(1e-2 / 25 / 1e4)


def test_attention_only_then_ramped_weights_per_epoch():
    config = TrainConfig(attention_only_epochs=2, ramp_epochs=3, representation_weight=0.5)
    assert [weight_factor(config, e) for e in range(7)] == [0, 0, 0.25, 0.5, 0.75, 1, 1]
    weights = [
        (c.attention_weight, c.classification_weight, c.representation_weight)
        for c in (epoch_config(config, e) for e in (0, 3, 5))
    ]
    assert weights == [(10.0, 0.0, 0.0), (10.0, 0.5, 0.25), (10.0, 1.0, 0.5)]
    assert epoch_config(config, 0, has_attention=False) is config  # the baseline trains as before


def test_the_manifold_weight_alone_ramps_up_from_zero():
    config = TrainConfig(attention_only_epochs=1, representation_ramp_epochs=4, representation_weight=0.2)
    configs = [epoch_config(config, e) for e in range(7)]
    assert [c.classification_weight for c in configs] == [0, 1, 1, 1, 1, 1, 1]
    assert [c.representation_weight for c in configs] == pytest.approx([0, 0, 0.05, 0.1, 0.15, 0.2, 0.2])
    assert epoch_config(config, 6) is config
    assert _cli_config("--representation-ramp-epochs", 4).representation_ramp_epochs == 4
    assert (
        decode(TrainConfig, {"epochs": 3}, "config.json").representation_ramp_epochs == 0
    )  # a run saved before it


def test_schedule_and_ramp_reach_training_and_resume_continues_them(render, tmp_path, monkeypatch):
    config = replace(
        TINY, method="feratt-cls", lr=1e-3, lr_schedule="cosine", warmup_epochs=1, attention_only_epochs=1
    )
    whole = FoldFolder(
        train(render=render, run=tmp_path / "whole", config=config, device="cpu").run_dir / "fold-0"
    ).records()
    expected = [epoch_lr(config, e) for e in range(3)]
    assert [r["lr"] for r in whole] == pytest.approx(expected) and expected[0] == pytest.approx(5e-4)
    first = whole[0]["train"]  # attention alone: the total is 10 x the attention loss
    assert first["loss_total"] == pytest.approx(10 * first["loss_attention"], rel=1e-5)
    second = whole[1]["train"]
    assert second["loss_total"] == pytest.approx(
        10 * second["loss_attention"] + second["loss_classification"], rel=1e-5
    )
    saved = json.loads((tmp_path / "whole" / "config.json").read_text())
    assert (saved["lr_schedule"], saved["warmup_epochs"], saved["attention_only_epochs"]) == ("cosine", 1, 1)

    save = loop.save_epoch_checkpoints

    def killed_after_epoch_0(fold_dir, state, improved):
        save(fold_dir, state, improved)
        if state.epoch == 0:
            raise KeyboardInterrupt

    monkeypatch.setattr(loop, "save_epoch_checkpoints", killed_after_epoch_0)
    with pytest.raises(KeyboardInterrupt):
        train(render=render, run=tmp_path / "resumed", config=config, device="cpu")
    monkeypatch.setattr(loop, "save_epoch_checkpoints", save)
    train(render=render, run=tmp_path / "resumed", config=config, device="cpu", resume=True)
    resumed = FoldFolder(tmp_path / "resumed" / "fold-0").records()
    assert [r["lr"] for r in resumed] == pytest.approx(expected)
    last = torch.load(tmp_path / "resumed" / "fold-0" / "last.pt", weights_only=True)
    assert last["optimizer"]["param_groups"][0]["lr"] == pytest.approx(expected[2])


@pytest.mark.parametrize("detach", [False, True])
def test_detached_attention_stops_the_classifiers_gradient_at_i_att(detach):
    from feratt.training.build import build_model
    from feratt.training.losses import classification_loss

    config = TrainConfig(method="feratt-cls", preset="cpu-small", detach_attention=detach).resolved()
    torch.manual_seed(0)
    model = build_model(config, 7)
    assert model.detach_attention is detach
    output = model(torch.rand(4, 3, 64, 64))
    classification_loss(output.logits, torch.tensor([0, 1, 2, 3])).backward()
    for part in (model.g_att, model.g_ft, model.g_rec):
        grads = [p.grad for p in part.parameters()]
        largest = max((g.abs().max().item() for g in grads if g is not None), default=0.0)
        assert (largest == 0.0) is detach, part
    assert any(p.grad is not None and p.grad.abs().max() > 0 for p in model.g_rep.parameters())


@pytest.mark.parametrize("identity", [False, True])
def test_an_identity_start_makes_i_att_the_gated_input(identity):
    from feratt.training.build import build_model

    config = TrainConfig(method="feratt-cls", preset="cpu-small", identity_init=identity).resolved()
    torch.manual_seed(0)
    model = build_model(config, 7).eval()
    images = torch.rand(3, 3, 64, 64)
    output = model(images)
    gated = torch.sigmoid(output.attention_map) * images
    gap = float((output.attention_image - gated).abs().max())
    assert (gap == 0.0) is identity, gap
    # G_ft's first three channels are the input; the others are the usual random features.
    features = output.features
    assert torch.equal(features[:, :3], images) is identity
    assert float(features[:, 3:].std()) > 0.01


def test_an_identity_start_needs_the_papers_reconstruction():
    from feratt.errors import FerattError
    from feratt.training.models import create_model

    with pytest.raises(FerattError, match="identity_init needs the paper's G_rec"):
        create_model("feratt", num_classes=7, in_size=64, width=0.25, rec_concat=True, identity_init=True)


def _cli_config(*args):
    """The TrainConfig `feratt train`'s training options make of `args`."""
    import click
    from click.testing import CliRunner

    from feratt.cli_options import train_config_from_cli, training_options

    @click.command()
    @training_options
    @click.pass_context
    def command(ctx, config_file, **options):
        click.echo(json.dumps(encode(train_config_from_cli(ctx, config_file, options))))

    result = CliRunner().invoke(command, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return decode(TrainConfig, json.loads(result.output), "output")


def test_a_flag_beats_the_config_file_which_beats_the_preset_which_beats_the_defaults(tmp_path):
    small = _cli_config("--preset", "cpu-small")
    assert (small.batch_size, small.lr, small.class_means, small.representation_weight) == (
        32, 1e-3, "leave-one-out", 0.1,
    )  # fmt: skip
    assert (small.in_size, small.width, small.epochs, small.attention_weight) == (64, 0.25, 60, 10.0)
    assert _cli_config("--preset", "cpu-small", "--lr", "1e-4").lr == 1e-4
    assert small.identity_init and (small.lr_schedule, small.warmup_epochs, small.sigma) == ("cosine", 1, 4.0)
    assert _cli_config("--preset", "cpu-small", "--lr-schedule", "constant").lr_schedule == "constant"
    assert not _cli_config("--preset", "cpu-small", "--no-identity-init").identity_init
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"lr": 5e-4, "preset": "cpu-small"}))
    from_file = _cli_config("--config", path)
    assert (from_file.lr, from_file.batch_size) == (5e-4, 32)
    assert _cli_config("--config", path, "--lr", 2e-3, "--batch-size", 8).lr == 2e-3
    paper = _cli_config()
    assert (paper.batch_size, paper.lr, paper.class_means, paper.in_size) == (200, 1e-4, "batch", 128)
    assert not paper.identity_init
    assert (paper.lr_schedule, paper.warmup_epochs, paper.sigma) == ("constant", 0, 1.0)
    assert _cli_config("--preset", "paper", "--batch-size", 200) == paper
    options = {"preset": "cpu-small", "batch_size": 200}
    assert TrainConfig.from_options(options).batch_size == 200  # an explicit default still wins


def test_the_ablation_flags_reach_the_config():
    config = _cli_config(
        "--lr-schedule", "cosine", "--warmup-epochs", 2, "--attention-only-epochs", 1, "--ramp-epochs", 3,
        "--detach-attention", "--samples-per-epoch", 500, "--pretrain-attention", 2, "--identity-init",
    )  # fmt: skip
    assert config.identity_init and not TrainConfig().identity_init
    assert config.pretrain_attention == 2 and TrainConfig().pretrain_attention == 0
    assert (config.lr_schedule, config.warmup_epochs, config.attention_only_epochs) == ("cosine", 2, 1)
    assert (config.ramp_epochs, config.detach_attention, config.samples_per_epoch) == (3, True, 500)
    assert TrainConfig().samples_per_epoch is None
    default = TrainConfig()
    assert (default.lr_schedule, default.warmup_epochs, default.ramp_epochs) == ("constant", 0, 0)
    assert not default.detach_attention and default.attention_only_epochs == 0
    assert (
        decode(TrainConfig, {"epochs": 3}, "config.json").lr_schedule == "constant"
    )  # a run saved before these
    from feratt.errors import FerattError

    with pytest.raises(FerattError, match="lr_schedule") as caught:
        TrainConfig(lr_schedule="linear")
    assert caught.value.field == "lr_schedule"
    with pytest.raises(FerattError, match="ramp_epochs"):
        TrainConfig(ramp_epochs=-1)


def test_an_epoch_of_fresh_samples_trains_on_its_slice(render, tmp_path):
    config = replace(TINY, method="baseline", epochs=2, max_batches=None, samples_per_epoch=20)
    train(render=render, run=tmp_path / "run", config=config, device="cpu")
    records = FoldFolder(tmp_path / "run" / "fold-0").records()
    assert [r["train"]["samples"] for r in records] == [20, 20]  # of 84 training samples
    assert records[0]["validation"]["samples"] == 28 and records[0]["test"]["samples"] == 56
    assert json.loads((tmp_path / "run" / "config.json").read_text())["samples_per_epoch"] == 20


def test_the_test_split_is_scored_every_nth_epoch_and_at_every_best_and_the_last():
    config = TrainConfig(epochs=8, test_every=3)
    improved = [True, True, False, False, True, False, False, False]
    scored = [e for e in range(8) if loop.scores_test(config, e, improved[e])]
    assert scored == [0, 1, 2, 4, 5, 7]
    assert [e for e in range(8) if loop.scores_test(TrainConfig(epochs=8), e, False)] == list(range(8))


def test_a_run_scoring_test_every_few_epochs_keeps_its_summary_whole(render, tmp_path):
    config = replace(TINY, method="baseline", epochs=6, max_batches=2, test_every=4)
    result = train(render=render, run=tmp_path / "run", config=config, device="cpu")
    records = FoldFolder(tmp_path / "run" / "fold-0").records()
    validation = [r["validation"]["accuracy"] for r in records]
    improved = [v > max([-1.0, *validation[:e]]) for e, v in enumerate(validation)]
    expected = [e for e in range(6) if improved[e] or e in (3, 5)]
    assert [r["epoch"] for r in records if "test" in r] == expected and len(expected) < 6
    best = max(range(6), key=lambda e: validation[e])
    fold = result.folds[0]
    assert fold.best_on_validation.epoch == best
    assert fold.best_on_validation.accuracy == records[best]["test"]["accuracy"]
    assert fold.final.accuracy == records[5]["test"]["accuracy"]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["test_every"] == 4


def test_attention_pre_training_comes_first_logged_apart_and_resumes(render, tmp_path, monkeypatch):
    config = replace(TINY, method="feratt-rep-cls", epochs=1, pretrain_attention=2)
    lines = []
    whole = tmp_path / "whole"
    train(render=render, run=whole, config=config, device="cpu", log=lines.append)
    pretrain = [json.loads(line) for line in (whole / "fold-0" / "pretrain.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["phase"]) for r in pretrain] == [(0, "pretrain"), (1, "pretrain")]
    for record in pretrain:  # attention alone: the total is 10 x the attention loss
        assert record["train"]["loss_total"] == pytest.approx(
            10 * record["train"]["loss_attention"], rel=1e-5
        )
    main = FoldFolder(whole / "fold-0").records()
    assert [r["epoch"] for r in main] == [0] and "phase" not in main[0]
    assert sum("attention pre-training epoch" in line for line in lines) == 2
    # G_rep is frozen during pre-training: a run killed after it holds G_rep's initial weights.
    save = loop.save_epoch_checkpoints

    def killed_after_pretraining(fold_dir, state, improved):
        save(fold_dir, state, improved)
        if state.epoch == -1:
            raise KeyboardInterrupt

    monkeypatch.setattr(loop, "save_epoch_checkpoints", killed_after_pretraining)
    resumed = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        train(render=render, run=resumed, config=config, device="cpu")
    killed = torch.load(resumed / "fold-0" / "last.pt", weights_only=True)
    assert killed["epoch"] == -1 and not (resumed / "fold-0" / "metrics.jsonl").exists()
    from feratt.training.build import build_model

    torch.manual_seed(config.seed)
    initial = build_model(config.resolved(), 7).state_dict()
    rep = [k for k in initial if k.startswith("g_rep.") and "running" not in k and "batches" not in k]
    att = [k for k in initial if k.startswith("g_att.") and initial[k].is_floating_point()]
    assert rep and all(torch.equal(killed["model"][k], initial[k]) for k in rep)
    assert any(not torch.equal(killed["model"][k], initial[k]) for k in att)
    monkeypatch.setattr(loop, "save_epoch_checkpoints", save)
    lines.clear()
    train(render=render, run=resumed, config=config, device="cpu", resume=True, log=lines.append)
    assert "fold 0: resumed after attention pre-training epoch 1" in lines
    assert [r["epoch"] for r in FoldFolder(resumed / "fold-0").records()] == [0]
    assert len((resumed / "fold-0" / "pretrain.jsonl").read_text().splitlines()) == 2
    expected = torch.load(whole / "fold-0" / "last.pt", weights_only=True)["model"]
    again = torch.load(resumed / "fold-0" / "last.pt", weights_only=True)["model"]
    for key in expected:
        torch.testing.assert_close(again[key], expected[key], rtol=0, atol=0, msg=key)
