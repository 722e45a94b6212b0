"""The accelerator path, exercised on the CPU: `--amp` modes and old runs' boolean, bfloat16 autocast for
every method and loss, float16's gradient scaler (skipped steps, exact resume), channels_last, nothing
CUDA-only without CUDA, torch.compile; and checks marked `cuda` that run only where there is a GPU."""

from __future__ import annotations

import copy
import json
import shutil
from dataclasses import replace

import cv2
import numpy as np
import pytest
import torch
from cli_helpers import render_tiny
from click.testing import CliRunner
from skimage import data

import feratt.training.accelerator as accelerator
from feratt.artifacts.run import FoldFolder, RunFolder
from feratt.cli_options import train_config_from_cli, training_options
from feratt.codec import decode, encode
from feratt.config.methods import METHODS, get_method
from feratt.config.training import TrainConfig, config_changes
from feratt.errors import FerattError
from feratt.training.accelerator import Precision, amp_dtype, cuda_bf16_supported, uses_channels_last
from feratt.training.build import build_model, loss_config
from feratt.training.checkpoints import load_trained
from feratt.training.loop import run_epoch
from feratt.training.train import train

CPU = torch.device("cpu")
SIZE, WIDTH, BATCH, CLASSES = 64, 0.25, 4, 7  # FERAtt's U-Net needs 64 px; 32 px leaves G_att no centre
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def fixed_batch(size: int = SIZE) -> dict[str, torch.Tensor]:
    """Four loader-style uint8 samples of the astronaut's face: on noise, flipped or dimmed, two a class."""
    face = cv2.resize(np.ascontiguousarray(data.astronaut()[40:200, 144:304]), (size, size))
    yy, xx = np.mgrid[:size, :size]
    mask = (((yy - size / 2) / (0.45 * size)) ** 2 + ((xx - size / 2) / (0.35 * size)) ** 2 <= 1).astype(
        np.uint8
    )
    rng = np.random.default_rng(0)
    images, faces = [], []
    for variant in range(BATCH):
        clean = face[:, ::-1] if variant % 2 else face
        clean = (clean * (1.0 - 0.3 * (variant // 2))).astype(np.uint8) * mask[..., None]
        background = rng.integers(0, 256, clean.shape, dtype=np.uint8)
        images.append(np.where(mask[..., None] > 0, clean, background).transpose(2, 0, 1))
        faces.append(clean.transpose(2, 0, 1))
    return {
        "image": torch.from_numpy(np.stack(images)),
        "face": torch.from_numpy(np.stack(faces)),
        "mask": torch.from_numpy(np.repeat(mask[None, None], BATCH, axis=0)),
        "label": torch.tensor([0, 0, 1, 1]),
    }


def tiny_config(method: str, **fields) -> TrainConfig:
    """A narrow configuration for the fixed batch (leave-one-out means: two samples a class)."""
    settings = dict(in_size=SIZE, width=WIDTH, batch_size=BATCH, lr=1e-3, class_means="leave-one-out")
    return TrainConfig(method=method, **{**settings, "representation_weight": 0.1, **fields}).resolved()


def model_and_optimizer(config: TrainConfig):
    torch.manual_seed(0)
    model = build_model(config, CLASSES)
    return model, torch.optim.Adam(model.parameters(), lr=config.lr)


# ---- --amp: modes, old runs' boolean, the command line -------------------------------------------------


def test_amp_modes_pick_autocast_dtypes(monkeypatch):
    assert amp_dtype("auto", CPU) is None  # float32 on the CPU unless asked
    assert amp_dtype("off", CPU) is None
    assert amp_dtype("bf16", CPU) is torch.bfloat16
    assert amp_dtype("fp16", CPU) is torch.float16
    cuda = torch.device("cuda")
    monkeypatch.setattr(accelerator, "cuda_bf16_supported", lambda: True)
    assert amp_dtype("auto", cuda) is torch.bfloat16
    monkeypatch.setattr(accelerator, "cuda_bf16_supported", lambda: False)  # a V100 or a T4
    assert amp_dtype("auto", cuda) is torch.float16
    assert Precision("auto", CPU).scaler is None and Precision("bf16", CPU).scaler is None
    assert Precision("fp16", CPU).scaler.get_scale() == 65536.0
    with pytest.raises(FerattError, match="unknown AMP mode 'half'") as caught:
        amp_dtype("half", CPU)
    assert caught.value.field == "amp"
    with pytest.raises(
        FerattError, match="'half' is unknown \\(valid mixed precision modes: auto, bf16, fp16, off"
    ):
        TrainConfig(amp="half")


def test_old_runs_boolean_amp_reads_as_auto_or_off(tmp_path):
    assert decode(TrainConfig, {"amp": True}, "config.json").amp == "auto"
    assert decode(TrainConfig, {"amp": False}, "config.json").amp == "off"
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    old = {**encode(TrainConfig()), "amp": True}  # config.json as feratt wrote it before --amp took a mode
    (run_dir / "config.json").write_text(json.dumps(old))
    run = RunFolder(run_dir)
    assert run.config().amp == "auto"
    assert config_changes(TrainConfig(), run.config()) == []
    run.check_same_config(TrainConfig())  # an experiment reuses the run
    with pytest.raises(FerattError, match=r"other settings \(amp\)"):
        run.check_same_config(TrainConfig(amp="fp16"))
    (run_dir / "config.json").write_text(json.dumps({**old, "amp": False}))
    run.check_same_config(TrainConfig(amp="off"))


def test_amp_option_on_the_command_line():
    seen = {}

    @training_options
    @click_context
    def command(ctx, config_file, **options):
        seen["config"] = train_config_from_cli(ctx, config_file, options)

    runner = CliRunner()
    assert runner.invoke(command, ["--amp", "fp16", "--no-channels-last"]).exit_code == 0
    assert (seen["config"].amp, seen["config"].channels_last) == ("fp16", False)
    assert runner.invoke(command, []).exit_code == 0
    assert (seen["config"].amp, seen["config"].channels_last) == ("auto", True)
    bad = runner.invoke(command, ["--amp", "half"])
    assert bad.exit_code == 2 and "'half' is not one of 'auto', 'bf16', 'fp16', 'off'" in bad.output
    assert runner.invoke(command, ["--no-amp"]).exit_code == 2  # replaced by --amp off


def click_context(function):
    import click

    return click.command()(click.pass_context(function))


# ---- bfloat16 autocast on the CPU: every method and loss -------------------------------------------------

LOSS_CASES = [
    pytest.param(method, cls, att, id=f"{method}-{cls}-{att}")
    for method in METHODS
    for cls in ("bce", "ce")
    for att in (("mse", "tanh") if get_method(method).attention else ("mse",))
]


@pytest.mark.parametrize(("method", "classification", "attention"), LOSS_CASES)
def test_bf16_steps_give_finite_falling_losses(method, classification, attention):
    config = tiny_config(method, amp="bf16", classification_loss=classification, attention_loss=attention)
    model, optimizer = model_and_optimizer(config)
    dtypes = []
    first_conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    first_conv.register_forward_hook(lambda module, inputs, output: dtypes.append(output.dtype))
    precision = Precision(config.amp, CPU)
    steps = [
        run_epoch(
            model, [fixed_batch()], config, CLASSES, CPU, optimizer=optimizer, precision=precision
        ).losses
        for _ in range(6)
    ]
    assert set(dtypes) == {torch.bfloat16}  # the convolutions ran under CPU autocast
    assert set(steps[0]) == {"total", *get_method(method).terms}
    assert all(np.isfinite(value) for losses in steps for value in losses.values())
    assert steps[-1]["total"] < 0.9 * steps[0]["total"], [s["total"] for s in steps]
    assert steps[-1]["classification"] < steps[0]["classification"]
    if "attention" in steps[0]:
        assert steps[-1]["attention"] < steps[0]["attention"]


# ---- float16 and its gradient scaler ----------------------------------------------------------------------


def test_fp16_scaler_skips_the_step_with_inf_gradients():
    config = tiny_config("baseline", in_size=32, amp="fp16")
    model, optimizer = model_and_optimizer(config)
    precision = Precision(config.amp, CPU)
    before = {name: value.detach().clone() for name, value in model.named_parameters()}
    fired = []

    def poison(gradient):  # the first backward's gradients overflow, as float16 ones can
        if fired:
            return gradient
        fired.append(True)
        return gradient * float("inf")

    list(model.parameters())[-1].register_hook(poison)
    first = run_epoch(
        model, [fixed_batch(32)], config, CLASSES, CPU, optimizer=optimizer, precision=precision
    )
    assert first.metrics()["skipped_steps"] == 1
    assert precision.scaler.get_scale() == 32768.0  # backed off by half
    for name, value in model.named_parameters():  # (batch norm's running statistics move in forward)
        torch.testing.assert_close(value, before[name], rtol=0, atol=0, msg=name)
    assert optimizer.state == {}  # Adam never stepped
    second = run_epoch(
        model, [fixed_batch(32)], config, CLASSES, CPU, optimizer=optimizer, precision=precision
    )
    assert second.metrics()["skipped_steps"] == 0 and precision.scaler.get_scale() == 32768.0
    assert any(not torch.equal(value, before[name]) for name, value in model.named_parameters())
    assert precision.state_dict()["_growth_tracker"] == 1
    evaluation = run_epoch(model, [fixed_batch(32)], config, CLASSES, CPU, precision=precision)
    assert "skipped_steps" not in evaluation.metrics()


@pytest.fixture(scope="module")
def render(tmp_path_factory):
    """A render of 4 demo subjects (2 folds of 2), 7 classes, 2 samples a face at 64 px."""
    return render_tiny(tmp_path_factory.mktemp("accelerator-inputs"), 4, shard_size=14)


#: A run of two epochs of two batches of 4 at 32 px, float16 with its scaler, on the CPU.
FP16 = TrainConfig(
    method="baseline", preset="cpu-small", in_size=32, epochs=2, batch_size=4, max_batches=2, workers=0,
    fold_size=2, val_subjects=1, amp="fp16",
)  # fmt: skip


class Stop(Exception):
    """Stands for the run being killed."""


def test_fp16_run_resumes_exactly_with_its_scaler(render, tmp_path, monkeypatch):
    step = Precision.step
    calls = [0]

    def overflowing_first_step(self, loss, optimizer):  # the very first step of each run overflows
        calls[0] += 1
        return step(self, loss * float("inf") if calls[0] == 1 else loss, optimizer)

    monkeypatch.setattr(Precision, "step", overflowing_first_step)
    train(render=render, run=tmp_path / "whole", config=FP16, device="cpu")
    calls[0] = 0

    batches = [0]

    def killed_in_epoch_1(done, total):  # called after each training batch; epochs have two
        batches[0] += 1
        if batches[0] > 2:
            raise Stop

    with pytest.raises(Stop):
        train(render=render, run=tmp_path / "resumed", config=FP16, device="cpu", progress=killed_in_epoch_1)
    stopped = torch.load(tmp_path / "resumed" / "fold-0" / "last.pt", weights_only=True)
    assert stopped["epoch"] == 0 and stopped["scaler"]["scale"] == 32768.0
    train(render=render, run=tmp_path / "resumed", config=FP16, device="cpu", resume=True)
    whole, resumed = (
        torch.load(tmp_path / r / "fold-0" / "last.pt", weights_only=True) for r in ("whole", "resumed")
    )
    assert resumed["scaler"] == whole["scaler"]
    assert (whole["scaler"]["scale"], whole["scaler"]["_growth_tracker"]) == (32768.0, 3)
    for name, value in whole["model"].items():
        torch.testing.assert_close(resumed["model"][name], value, rtol=0, atol=0, msg=name)
    lines = [FoldFolder(tmp_path / r / "fold-0").records() for r in ("whole", "resumed")]
    assert [line["train"]["skipped_steps"] for line in lines[0]] == [1, 0]
    for one, two in zip(*lines, strict=True):
        assert {**one, "seconds": 0} == {**two, "seconds": 0}


def test_a_run_saved_with_the_old_boolean_resumes(render, tmp_path):
    config = replace(FP16, amp="off")
    batches = [0]

    def killed_in_epoch_1(done, total):
        batches[0] += 1
        if batches[0] > 2:
            raise Stop

    with pytest.raises(Stop):
        train(render=render, run=tmp_path / "run", config=config, device="cpu", progress=killed_in_epoch_1)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["amp"] == "off"
    (tmp_path / "run" / "config.json").write_text(json.dumps({**saved, "amp": False}))  # as written before
    lines = []
    train(render=render, run=tmp_path / "run", config=config, device="cpu", resume=True, log=lines.append)
    assert "fold 0: resumed after epoch 0" in lines
    assert [record["epoch"] for record in FoldFolder(tmp_path / "run" / "fold-0").records()] == [0, 1]


def test_a_cpu_run_touches_no_cuda(render, tmp_path, monkeypatch):
    def no_cuda(*args, **kwargs):
        raise AssertionError("a CPU run initialised CUDA")

    monkeypatch.setattr(torch.cuda, "_lazy_init", no_cuda)
    config = replace(FP16, epochs=1, max_batches=1, amp="auto", channels_last=True)
    result = train(render=render, run=tmp_path / "run", config=config, device="cpu")
    assert result.folds[0].final is not None
    assert not uses_channels_last(config, CPU) and uses_channels_last(config, torch.device("cuda"))
    assert Precision("auto", CPU).dtype is None


# ---- channels_last ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", list(METHODS))
def test_channels_last_gives_the_outputs_and_gradients_of_contiguous(method):
    config = tiny_config(method)
    contiguous, _ = model_and_optimizer(config)
    channels_last = copy.deepcopy(contiguous).to(memory_format=torch.channels_last)
    batch = {key: value.float() / 255 if key != "label" else value for key, value in fixed_batch().items()}
    results = []
    for model, layout in ((contiguous, torch.contiguous_format), (channels_last, torch.channels_last)):
        inputs = batch["image"].contiguous(memory_format=layout)
        output = model(inputs, target=batch["face"])
        losses = compute(config, output, batch)
        losses["total"].backward()
        results.append(
            (output, {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})
        )
    (one, grads_one), (two, grads_two) = results
    for field in ("logits", "embedding", "attention_image", "attention_map"):
        if getattr(one, field) is not None:
            torch.testing.assert_close(
                getattr(two, field), getattr(one, field), rtol=1e-4, atol=1e-5, msg=field
            )
    assert grads_one.keys() == grads_two.keys() and grads_one
    for name, grad in grads_one.items():
        torch.testing.assert_close(grads_two[name], grad, rtol=1e-3, atol=1e-5, msg=name)


def compute(config: TrainConfig, output, batch):
    from feratt.training.losses import compute_losses

    terms = get_method(config.method).terms
    return compute_losses(terms, output, batch["face"], batch["label"], CLASSES, loss_config(config))


# ---- torch.compile ----------------------------------------------------------------------------------------


def _c_compiler() -> str | None:
    return next((path for name in ("g++", "clang++", "c++") if (path := shutil.which(name))), None)


@pytest.mark.slow
@pytest.mark.skipif(_c_compiler() is None, reason="torch.compile on the CPU needs a C++ compiler; none found")
def test_compile_trains_a_step_of_the_cpu_small_model(render, tmp_path):
    settings = dict(method="baseline", epochs=1, batch_size=4, max_batches=1, workers=0, fold_size=2)
    options = {"preset": "cpu-small", "val_subjects": 1, **settings}
    runs = {}
    for name, compiled in (("compiled", True), ("eager", False)):
        train(
            render=render,
            run=tmp_path / name,
            config=TrainConfig.from_options({**options, "compile": compiled}),
            device="cpu",
        )
        runs[name] = FoldFolder(tmp_path / name / "fold-0").records()[0]
    compiled, eager = runs["compiled"], runs["eager"]
    assert compiled["train"]["samples"] == eager["train"]["samples"] == 4
    assert np.isfinite(compiled["train"]["loss_total"]) and np.isfinite(compiled["test"]["loss_total"])
    # The step's loss is taken before its update: the compiled graph computes what eager mode does.
    assert compiled["train"]["loss_total"] == pytest.approx(eager["train"]["loss_total"], rel=1e-4)
    trained = load_trained(tmp_path / "compiled", fold=0, which="last")  # the plain model's weights
    assert trained.config.compile and not any(k.startswith("_orig_mod") for k in trained.model.state_dict())


# ---- on CUDA (skipped without a GPU) ----------------------------------------------------------------


@pytest.mark.cuda
@needs_cuda
def test_cuda_auto_amp_is_bf16_or_fp16_with_a_scaler():
    precision = Precision("auto", torch.device("cuda"))
    assert precision.dtype is (torch.bfloat16 if cuda_bf16_supported() else torch.float16)
    assert (precision.scaler is not None) == (precision.dtype is torch.float16)


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("mode", ["auto", "fp16"])
def test_cuda_steps_under_amp_and_channels_last_fall(mode):
    device = torch.device("cuda")
    config = tiny_config("feratt-rep-cls", amp=mode)
    model, _ = model_and_optimizer(config)
    model = model.to(device).to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    precision = Precision(config.amp, device)
    assert uses_channels_last(config, device)
    steps = [
        run_epoch(
            model, [fixed_batch()], config, CLASSES, device, optimizer=optimizer, precision=precision
        ).losses
        for _ in range(6)
    ]
    assert all(np.isfinite(v) for losses in steps for v in losses.values())
    assert steps[-1]["total"] < steps[0]["total"]
