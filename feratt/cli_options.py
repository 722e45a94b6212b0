"""Options and progress display that several feratt commands share."""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Iterator
from typing import Any

import click

from feratt.config.methods import METHODS
from feratt.config.training import CHOICES, TrainConfig, load_config_file
from feratt.errors import FerattError

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def compose(*decorators: Decorator) -> Decorator:
    """One decorator applying `decorators` in the order they would be stacked in source."""

    def apply(command: Callable[..., Any]) -> Callable[..., Any]:
        for decorator in reversed(decorators):
            command = decorator(command)
        return command

    return apply


def echo_main(message: str = "") -> None:
    """click.echo in rank 0 of a torchrun job (and in a process run alone): one copy of each line."""
    if os.environ.get("RANK", "0") == "0":
        click.echo(message)


device_option = click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")


def overwrite_option(replaces: str) -> Decorator:
    """The `--overwrite` flag of a command whose output may hold earlier files: what it `replaces`."""
    return click.option("--overwrite", is_flag=True, help=f"Replace {replaces}.")


#: Batch size, loader workers and device of the commands that score a trained model.
scoring_options = compose(
    click.option("--batch-size", type=click.IntRange(1), default=100, show_default=True),
    click.option("--workers", type=click.IntRange(0), default=0, show_default=True, help="Loader workers."),
    device_option,
)


@contextlib.contextmanager
def progress_bar(unit: str, description: str | None = None) -> Iterator[Callable[[int, int | None], None]]:
    """A `progress(done, total)` callback drawing a tqdm bar on a terminal (nothing elsewhere).

    The bar opens on the first call, so lines a stage logs before its work starts come first.
    """
    from tqdm import tqdm

    bar = None
    seen = 0

    def progress(done: int, total: int | None) -> None:
        nonlocal bar, seen
        if bar is None:
            bar = tqdm(total=total, unit=unit, desc=description, disable=None, leave=False)
        elif done < seen or total != bar.total:
            bar.reset(total=total)
            seen = 0
        bar.update(done - seen)
        seen = done

    try:
        yield progress
    finally:
        if bar is not None:
            bar.close()


def parse_range(text: str, option: str) -> tuple[float, float]:
    """LOW:HIGH as two floats, LOW <= HIGH; a click error naming `option` otherwise."""
    try:
        low, high = (float(v) for v in text.split(":"))
    except ValueError:
        raise click.BadParameter(
            f"takes LOW:HIGH, such as 0.3:1.0; got {text!r}", param_hint=option
        ) from None
    if low > high:
        raise click.BadParameter(f"LOW must not exceed HIGH; got {text!r}", param_hint=option)
    return low, high


method_option = click.option(
    "--method", default="feratt-rep-cls", show_default=True, help=f"One of {', '.join(METHODS)}."
)

_TRAINING_OPTION_DECORATORS = (
    click.option(
        "--preset",
        default="paper",
        show_default=True,
        help="paper (128 px) or cpu-small (64 px, narrow, batch 32, lr 1e-3): its settings replace the "
        "defaults shown here; flags and --config override it.",
    ),
    click.option(
        "--config", "config_file", type=click.Path(dir_okay=False), help="JSON or YAML file of options."
    ),
    click.option(
        "--fold-size",
        type=click.IntRange(1),
        default=10,
        show_default=True,
        help="Test subjects per fold (leave-K-subjects-out).",
    ),
    click.option(
        "--val-subjects",
        type=click.IntRange(0),
        default=2,
        show_default=True,
        help="Training subjects held out to pick the best checkpoint.",
    ),
    click.option("--epochs", type=click.IntRange(1), default=60, show_default=True),
    click.option("--batch-size", type=click.IntRange(1), default=200, show_default=True),
    click.option("--lr", type=float, default=1e-4, show_default=True),
    click.option(
        "--lr-schedule",
        type=click.Choice(CHOICES["lr_schedule"]),
        default="constant",
        show_default=True,
        help="Per-epoch learning rate: constant, warm-up then cosine to 0, or one-cycle.",
    ),
    click.option(
        "--warmup-epochs", type=click.IntRange(0), default=0, show_default=True, help="Linear lr warm-up."
    ),
    click.option(
        "--in-size",
        type=click.IntRange(32),
        help="Input side, a multiple of 32 (of 64 for FERAtt); default from the preset.",
    ),
    click.option(
        "--width", type=click.FloatRange(0.05, 4), help="Width multiplier (default from the preset)."
    ),
    click.option("--attention-weight", type=float, default=10.0, show_default=True),
    click.option("--representation-weight", type=float, default=1.0, show_default=True),
    click.option("--classification-weight", type=float, default=1.0, show_default=True),
    click.option(
        "--attention-only-epochs",
        type=click.IntRange(0),
        default=0,
        show_default=True,
        help="First epochs train the attention loss alone.",
    ),
    click.option(
        "--ramp-epochs",
        type=click.IntRange(0),
        default=0,
        show_default=True,
        help="Then classification and representation weights ramp up linearly over this many epochs.",
    ),
    click.option(
        "--representation-ramp-epochs",
        type=click.IntRange(0),
        default=0,
        show_default=True,
        help="The manifold loss's weight alone ramps up from 0 over this many epochs.",
    ),
    click.option(
        "--attention-loss", type=click.Choice(CHOICES["attention_loss"]), default="mse", show_default=True
    ),
    click.option(
        "--classification-loss",
        type=click.Choice(CHOICES["classification_loss"]),
        default="bce",
        show_default=True,
    ),
    click.option(
        "--sigma",
        type=click.FloatRange(min=0, min_open=True),
        default=1.0,
        show_default=True,
        help="Sigma of the Gaussian manifold loss.",
    ),
    click.option(
        "--class-means",
        type=click.Choice(CHOICES["class_means"]),
        default="batch",
        show_default=True,
        help="Manifold loss class means: with the sample itself (their code) or without it.",
    ),
    click.option("--att-target", type=click.Choice(CHOICES["att_target"]), default="face", show_default=True),
    click.option("--teacher-forcing", type=click.FloatRange(0, 1), default=0.0, show_default=True),
    click.option("--attention-channels", type=click.IntRange(1), default=1, show_default=True),
    click.option("--ft-blocks", type=click.IntRange(1), default=4, show_default=True),
    click.option("--rec-concat", is_flag=True, help="The later code's G_rec: concatenate input and G_att."),
    click.option(
        "--pretrain-attention",
        type=click.IntRange(0),
        default=0,
        show_default=True,
        help="Epochs of attention-only pre-training (no labels, G_rep frozen) before --epochs.",
    ),
    click.option(
        "--detach-attention",
        is_flag=True,
        help="G_rep's gradients stop at I_att: G_att, G_ft and G_rec learn from the attention loss alone.",
    ),
    click.option(
        "--identity-init/--no-identity-init",
        default=None,
        help="G_ft and G_rec start as the identity, so that I_att starts as the gated input "
        "[default: on in the cpu-small preset, off in the paper preset].",
    ),
    click.option(
        "--attention-weights",
        type=click.Path(dir_okay=False),
        help="Local torchvision resnet34 state_dict for the attention encoder.",
    ),
    click.option("--seed", type=int, default=0, show_default=True),
    click.option("--workers", type=click.IntRange(0), default=2, show_default=True, help="Loader workers."),
    click.option(
        "--samples-per-epoch",
        type=click.IntRange(1),
        help="Fresh samples every epoch: epochs take consecutive slices of a shuffled order of the render.",
    ),
    click.option(
        "--test-every",
        type=click.IntRange(1),
        default=1,
        show_default=True,
        help="Score the test parts every N epochs (and at the last epoch and every new best on "
        "validation): for renders whose test split costs more than training.",
    ),
    click.option("--noise-sigma", help="Training-time Gaussian noise, a sigma range LOW:HIGH in [0, 1]."),
    click.option("--no-verify", "verify", flag_value=False, default=True, help="Skip shard sha256 checks."),
    click.option("--deterministic", is_flag=True, help="Repeatable runs (slower)."),
    click.option(
        "--amp",
        type=click.Choice(CHOICES["amp"]),
        default="auto",
        show_default=True,
        help="Mixed precision: auto is bf16 on CUDA where supported, fp16 with a gradient scaler on "
        "other GPUs, off on the CPU.",
    ),
    click.option(
        "--no-channels-last",
        "channels_last",
        flag_value=False,
        default=True,
        help="Keep the contiguous layout on CUDA.",
    ),
    click.option("--compile", is_flag=True, help="torch.compile the model."),
    click.option("--tensorboard", is_flag=True, help="Write TensorBoard logs."),
    click.option("--max-batches", type=click.IntRange(1), help="Stop each pass after this many batches."),
    click.option(
        "--real-test",
        type=click.Path(exists=True, dir_okay=False),
        help="Face bank: also test on the test subjects' unrendered faces (the paper's Real tables).",
    ),
)


#: The training options `train` and `experiment` share, in --help order.
training_options = compose(*_TRAINING_OPTION_DECORATORS)

#: What `train` does with a run folder that holds the folds it trains already.
run_folder_options = compose(
    click.option(
        "--resume",
        is_flag=True,
        help="Continue a stopped run with its own settings; a larger --epochs extends it.",
    ),
    click.option(
        "--overwrite",
        is_flag=True,
        help="Train the folds again with the run's own settings, replacing their files; nothing else.",
    ),
)


def _fields(config: TrainConfig) -> dict[str, object]:
    return {field.name: getattr(config, field.name) for field in dataclasses.fields(config)}


def train_config_from_cli(
    ctx: click.Context,
    config_file: str | None,
    options: dict[str, object],
    saved: TrainConfig | None = None,
) -> TrainConfig:
    """The TrainConfig of a command line: a flag given explicitly, then the --config file, then `saved` (the
    run that --resume continues), then the preset, then the defaults (TrainConfig.from_options)."""
    from_file = load_config_file(config_file) if config_file else {}
    values = {**(_fields(saved) if saved is not None else {}), **from_file}
    explicit = {
        name
        for name in (field.name for field in dataclasses.fields(TrainConfig))
        if name in options
        and ctx.get_parameter_source(name)
        not in (click.core.ParameterSource.DEFAULT, click.core.ParameterSource.DEFAULT_MAP, None)
    }
    values.update({name: options[name] for name in explicit})
    if isinstance(values.get("noise_sigma"), str):
        values["noise_sigma"] = parse_range(values["noise_sigma"], "--noise-sigma")
    try:
        return TrainConfig.from_options(values).resolved()
    except FerattError as exc:
        if config_file and exc.field in from_file and exc.field not in explicit:
            raise FerattError(f"{config_file}: {exc}") from None  # the value came from the file
        raise
