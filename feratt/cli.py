"""The feratt command line: `feratt faces` builds a face bank; later commands render and train."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from feratt import __version__
from feratt.cli_errors import (
    FerattCommand,
    InternalError,
    UserError,
    interrupted,
    one_line_usage_errors,
    os_error_line,
    user_error,
)
from feratt.cli_options import (
    device_option,
    echo_main,
    method_option,
    overwrite_option,
    parse_range,
    progress_bar,
    run_folder_options,
    scoring_options,
    train_config_from_cli,
    training_options,
)
from feratt.cli_predict import export_command, predict_command
from feratt.errors import FerattError

if TYPE_CHECKING:
    from feratt.datasets.bank import BankResult

FACE_FORMATS = ("auto", "ckplus", "ckplus-folders", "bu3dfe", "jaffe", "folders", "csv")


class FerattGroup(click.Group):
    """The command group: the one place where errors become exit codes and one 'Error:' line.

    0 success; 2 a user error, bad input, a usage error or a failing file system; 1 an internal error,
    with its traceback only under `feratt --debug` or FERATT_DEBUG=1; 130 Ctrl-C (see feratt.cli_errors).
    """

    command_class = FerattCommand

    def make_context(
        self, info_name: str | None, args: list[str], parent: click.Context | None = None, **extra: Any
    ) -> click.Context:
        with one_line_usage_errors():
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: click.Context):
        try:
            with one_line_usage_errors():
                return super().invoke(ctx)
        except FerattError as exc:
            command = self.get_command(ctx, ctx.invoked_subcommand) if ctx.invoked_subcommand else None
            raise user_error(exc, command) from None
        except KeyboardInterrupt:
            raise interrupted(None, {}) from None
        except (click.ClickException, click.exceptions.Abort, click.exceptions.Exit):
            raise
        except OSError as exc:
            if ctx.params.get("debug"):
                raise
            raise UserError(os_error_line(exc)) from None
        except Exception as exc:
            if ctx.params.get("debug"):
                raise
            raise InternalError(
                f"internal error: {type(exc).__name__}: {' '.join(str(exc).split())} "
                "(feratt --debug shows the traceback)"
            ) from None


@click.group(cls=FerattGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="feratt")
@click.option("--debug", is_flag=True, envvar="FERATT_DEBUG", help="Show the traceback of an internal error.")
def main(debug: bool) -> None:
    """Build synthetic face-expression training sets and train FERAtt on them."""


@main.command("faces", context_settings={"show_default": True})
@click.argument("source")
@click.option(
    "--out", "-o", required=True, type=click.Path(dir_okay=False), help="Face bank to write (HDF5)."
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FACE_FORMATS),
    default="auto",
    help="Layout of SOURCE; 'auto' detects it. SOURCE 'builtin:demo' needs none.",
)
@click.option(
    "--size", type=click.IntRange(32, 1024), default=160, help="Side of the square face crops, in pixels."
)
@click.option(
    "--margin",
    type=click.FloatRange(0, 2),
    default=0.2,
    help="Padding around the mask's box, as a fraction of its longer side "
    "(of the inner-eye distance with landmarks).",
)
@click.option(
    "--masks",
    "masks_root",
    type=click.Path(exists=True, file_okay=False),
    help="Folder of mask images mirroring the image tree; they take precedence.",
)
@click.option(
    "--forehead",
    type=click.FloatRange(0, 1),
    default=0.0,
    help="Raise a landmark mask over the forehead by this fraction of the brow-to-chin height.",
)
@click.option(
    "--mask-method",
    type=click.Choice(("auto", "landmarks", "grabcut", "ellipse")),
    default="auto",
    help="Masks without a mask file: auto (landmark file, dlib landmarks, GrabCut, ellipse) or one of them.",
)
@click.option("--seed", type=int, default=0, help="Seed for the CK+ neutral choice and the demo faces.")
@click.option(
    "--neutral-subjects", type=click.IntRange(0), default=33, help="CK+: subjects with a neutral first frame."
)
@click.option(
    "--last-frames", type=click.IntRange(1), default=1, help="CK+: last frames of each labelled sequence."
)
@click.option("--no-neutral", is_flag=True, help="CK+: leave neutral out (7 classes).")
@click.option(
    "--bu-intensity", type=click.IntRange(1, 4), default=4, help="BU-3DFE: expression intensity to use."
)
@click.option(
    "--subject-regex",
    default=r"^([^_.\-]+)",
    help="folders: regular expression whose first group is the subject id in a file name.",
)
@click.option(
    "--demo-subjects",
    type=click.IntRange(1, 999),
    default=24,
    help="builtin:demo: number of synthetic subjects.",
)
@click.option(
    "--demo-per-class", type=click.IntRange(1), default=2, help="builtin:demo: faces per subject and class."
)
@click.option("--min-side", type=click.IntRange(1), default=32, help="Skip images with a side under this.")
@click.option("--jobs", "-j", type=int, default=-1, help="Parallel workers (-1: all cores, -2: all but one).")
@click.option("--preview", type=click.Path(dir_okay=False), help="Write a contact sheet PNG here.")
@overwrite_option("an existing file at --out or --preview that is not a bank of these settings")
def faces_command(source: str, fmt: str, no_neutral: bool, **options) -> None:
    """Read a face data set (or builtin:demo), mask and crop every face, and write a face bank."""
    from feratt.datasets.bank import BankRequest, build_bank

    request = BankRequest(source=source, format=fmt, include_neutral=not no_neutral, **options)
    with progress_bar("face", "faces") as progress:
        result = build_bank(request, progress=progress, log=click.echo)
    _print_summary(result)
    click.echo(f"wrote {request.out}: {result.total} faces, sha256 {result.checksum[:16]}")
    if request.preview:
        click.echo(f"wrote {request.preview}")


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _part(ctx: click.Context, param: click.Parameter, text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        part, parts = (int(v) for v in text.split("/"))
    except ValueError:
        raise click.BadParameter(f"takes I/K, such as 2/8; got {text!r}") from None
    return part, parts


@main.command("render", context_settings={"show_default": True})
@click.argument("bank", default="builtin:demo")
@click.option("--out", "-o", "render", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--coco-annotations", type=click.Path(dir_okay=False), help="COCO instances JSON.")
@click.option("--coco-images", type=click.Path(file_okay=False), help="Folder of the COCO images.")
@click.option("--exclude-categories", default="person", help="COCO categories whose images are left out.")
@click.option("--include-categories", help="Keep only images with these COCO categories.")
@click.option(
    "--min-side", type=click.IntRange(0), default=0, help="Smallest shorter side of a background (px)."
)
@click.option(
    "--backgrounds",
    "background_dir",
    type=click.Path(file_okay=False),
    help="A plain folder of background images instead of COCO.",
)
@click.option("--size", type=click.IntRange(16, 1024), default=128, help="Side of the square samples.")
@click.option("--per-face", type=click.IntRange(1), help="Samples per face [default: 10].")
@click.option("--total", type=click.IntRange(1), help="Samples in all, spread over the faces.")
@click.option(
    "--balance",
    type=click.Choice(["classes", "faces"]),
    default="classes",
    help="With --total: equal samples per class, or per face.",
)
@click.option("--shard-size", type=click.IntRange(1), default=1000, help="Samples per shard.")
@click.option(
    "--geometry",
    "--preset",
    "preset",
    type=click.Choice(["train", "eval"]),
    default="train",
    help="The authors' training (30/0.2/0.1) or evaluation (45/0.3/0.2) geometry ranges.",
)
@click.option("--scale", type=click.FloatRange(0, 0.9), help="Scale range: 1 +- this.")
@click.option("--flip-p", type=click.FloatRange(0, 1), help="Horizontal flip probability.")
@click.option("--rotation", type=click.FloatRange(0, 180), help="Rotation range, +- degrees.")
@click.option("--translation", type=click.FloatRange(0, 1), help="Translation range, +- fraction of size.")
@click.option("--warp", type=click.FloatRange(0, 0.5), help="Affine warp: corner jitter, fraction of size.")
@click.option("--perspective", type=click.FloatRange(0, 0.5), help="Perspective corner jitter instead.")
@click.option(
    "--background-scale",
    default="0.3:1.0",
    help="Background crop side, as a range of fractions of the photo's shorter side.",
)
@click.option("--no-luminance", is_flag=True, help="Turn luminance matching off.")
@click.option("--feather", type=click.FloatRange(0, 64), help="Alpha edge width in pixels; 0 = hard cut.")
@click.option(
    "--fit-mask",
    type=click.FloatRange(0, 1),
    help="Frame each face by its mask's bounding box, padded by this fraction of its side "
    "(default: the whole face-bank crop fills the frame, as the authors did).",
)
@click.option("--grey", is_flag=True, help="Grey images copied to 3 channels, as the authors did.")
@click.option("--no-colour", is_flag=True, help="Turn every colour augmentation off.")
@click.option("--compression", type=click.Choice(["gzip", "lzf", "none"]), default="gzip")
@click.option("--compression-level", type=click.IntRange(1, 9), default=1, help="gzip level.")
@click.option(
    "--crops-per-background",
    type=click.IntRange(1),
    default=16,
    help="Samples that share one decoded background photo (each with its own crop).",
)
@click.option("--seed", type=int, default=0)
@click.option("--jobs", "-j", type=int, default=-1, help="Parallel workers (-1: all cores, -2: all but one).")
@click.option("--backend", type=click.Choice(["loky", "dask"]), default="loky")
@click.option("--scheduler", help="Dask scheduler address, with --backend dask.")
@click.option("--part", callback=_part, help="Render only part I of K of the plan (I/K), for job arrays.")
@overwrite_option("a render of another configuration in --out, or files feratt did not write there")
def render_command(bank: str, render: str, **options) -> None:
    """Composite the faces of BANK onto background photos into sharded HDF5 (default: the demo set)."""
    from feratt.renderer.render import render as render_samples

    with progress_bar("sample", "render") as progress:
        result = render_samples(_render_request(bank, render, options), progress=progress, log=click.echo)
    click.echo(
        f"rendered {result.rendered_samples} samples in {result.rendered_shards} shards "
        f"({result.samples_per_second:.0f} samples/s); kept {result.reused_shards} complete shards"
    )
    if result.totals is None:
        click.echo(
            f"{len(result.missing_shards)} shards of the plan are not rendered yet; "
            f"after all parts finish, run: feratt index {result.render}"
        )
        return
    totals = result.totals
    per_class = ", ".join(f"{name} {count}" for name, count in totals.class_counts.items())
    click.echo(
        f"{totals.samples} samples in {totals.shards} shards of {totals.subjects} subjects; "
        f"per class: {per_class}"
    )
    click.echo(f"wrote {result.index}")


def _render_request(bank: str, render: str, options: dict):
    """The RenderRequest of the render command's options."""
    from feratt.config.rendering import preset_config
    from feratt.renderer.render import BackgroundSource, RenderRequest

    overrides = ("size", "scale", "flip_p", "rotation", "translation", "warp", "perspective")
    config = preset_config(
        options.pop("preset"),
        no_colour=options.pop("no_colour"),
        luminance=not options.pop("no_luminance"),
        background_scale=parse_range(options.pop("background_scale"), "--background-scale"),
        **{name: options.pop(name) for name in (*overrides, "feather", "fit_mask", "grey")},
    )
    backgrounds = BackgroundSource(
        coco_annotations=options.pop("coco_annotations"),
        coco_images=options.pop("coco_images"),
        folder=options.pop("background_dir"),
        exclude_categories=_names(options.pop("exclude_categories")),
        include_categories=_names(options.pop("include_categories") or ""),
        min_side=options.pop("min_side"),
    )
    return RenderRequest(bank=bank, render=render, backgrounds=backgrounds, config=config, **options)


@main.command("index")
@click.argument("render", metavar="OUT", type=click.Path(file_okay=False))
def index_command(render: str) -> None:
    """Rebuild OUT/index.json and the manifests after every part of a render has finished."""
    from feratt.renderer.render import index_render

    with progress_bar("shard", "index") as progress:
        click.echo(f"wrote {index_render(render, progress=progress).index}")


@main.command("inspect")
@click.argument("render", metavar="TARGET", type=click.Path())
@click.option("--verify", "check", is_flag=True, help="Recheck every sha256 and the schema.")
@click.option("--sheet", type=click.Path(dir_okay=False), help="Write a contact sheet of samples here.")
@click.option(
    "--samples", type=click.IntRange(1, 400), default=24, show_default=True, help="Samples on the sheet."
)
def inspect_command(render: str, check: bool, sheet: str | None, samples: int) -> None:
    """Describe a render folder or one shard; optionally verify it and draw a sheet of samples."""
    from feratt.renderer import inspect as api

    problems = []
    if check:
        with progress_bar("shard", "verify") as progress:
            problems = api.verify_render(render, progress=progress)
    for problem in problems:
        click.echo(f"problem: {problem}")
    if problems:
        raise UserError(f"verification failed: {len(problems)} problems")
    for line in api.inspect_render(render):
        click.echo(line)
    if sheet:
        api.save_sample_sheet(render, sheet, samples)
        click.echo(f"wrote {sheet}")
    if check:
        click.echo("verified: every checksum and the schema match")


@main.command("train")
@click.argument("render", metavar="SHARDS", type=click.Path(file_okay=False))
@click.option("--out", "-o", "run", required=True, type=click.Path(file_okay=False), help="Run folder.")
@method_option
@click.option("--fold", default="0", show_default=True, help="Fold index, or 'all'.")
@click.option("--folds", "all_folds", flag_value="all", help="Train every fold in turn (same as --fold all).")
@training_options
@device_option
@run_folder_options
@click.pass_context
def train_command(
    ctx: click.Context,
    render: str,
    run: str,
    config_file: str | None,
    fold: str,
    all_folds: str | None,
    device: str,
    resume: bool,
    overwrite: bool,
    **options,
) -> None:
    """Train a method on the rendered SHARDS, one subject-independent fold at a time.

    With --resume, the options not given take the run's own values; a larger --epochs extends it."""
    from feratt.artifacts.run import RunFolder
    from feratt.training.train import train as run_training

    saved = RunFolder(run).config() if resume else None
    config = train_config_from_cli(ctx, config_file, options, saved)
    with progress_bar("img", "train") as progress:
        result = run_training(
            render=render, run=run, config=config, folds=all_folds or fold, resume=resume,
            device=device, overwrite=overwrite, progress=progress, log=click.echo,
        )  # fmt: skip
    for which, figures in result.aggregate.items():
        echo_main(f"{which}: " + ", ".join(f"{k} {v.mean:.4f} +- {v.std:.4f}" for k, v in figures.items()))
    echo_main(f"wrote {RunFolder(run).summary_file}")


@main.command("experiment")
@click.argument("render", metavar="SHARDS", type=click.Path(file_okay=False))
@click.option(
    "--out", "-o", "exp_dir", required=True, type=click.Path(file_okay=False), help="Experiment folder."
)
@click.option(
    "--methods",
    default="baseline,feratt-cls,feratt-rep-cls",
    show_default=True,
    help="Comma-separated methods to compare.",
)
@click.option("--folds", "fold_spec", default="all", show_default=True, help="'all' or one fold index.")
@click.option(
    "--eval-shards",
    type=click.Path(file_okay=False),
    help="Test on this render of the same bank instead (e.g. one made with --geometry eval).",
)
@overwrite_option("what --out holds that feratt's experiments did not write")
@training_options
@device_option
@click.pass_context
def experiment_command(
    ctx: click.Context,
    render: str,
    exp_dir: str,
    methods: str,
    fold_spec: str,
    eval_shards: str | None,
    config_file: str | None,
    device: str,
    overwrite: bool,
    **options,
) -> None:
    """Train and evaluate each method on each fold of SHARDS; tables, significance tests and report.md."""
    from feratt.experiments.experiment import run_experiment

    names = _names(methods)
    if not names:
        raise click.BadParameter("name at least one method", param_hint="--methods")
    config = train_config_from_cli(ctx, config_file, options)
    with progress_bar("sample", "test") as progress:
        result = run_experiment(
            render=Path(render),
            out=Path(exp_dir),
            methods=names,
            folds=fold_spec,
            config=config,
            eval_render=Path(eval_shards) if eval_shards else None,
            device=device,
            overwrite=overwrite,
            progress=progress,
            log=click.echo,
        )
    for split, part in result.splits.items():
        echo_main(f"{split} test:")
        echo_main(part.markdown.rstrip())
    echo_main(f"wrote {result.report}")


@main.command("evaluate")
@click.argument("run", metavar="RUN_OR_CHECKPOINT", type=click.Path(exists=True))
@click.option(
    "--shards", "render", required=True, type=click.Path(file_okay=False), help="The render to test on."
)
@click.option("--fold", type=click.IntRange(0), help="Fold, when RUN holds several.")
@click.option(
    "--which",
    type=click.Choice(["best", "last"]),
    default="best",
    show_default=True,
    help="The best-on-validation or the last checkpoint.",
)
@click.option(
    "--real-test",
    type=click.Path(exists=True, dir_okay=False),
    help="Face bank: also test on the test subjects' unrendered faces.",
)
@click.option(
    "--out",
    "-o",
    "out_file",
    type=click.Path(dir_okay=False),
    help="Results JSON [default: beside the checkpoint].",
)
@scoring_options
def evaluate_command(**options) -> None:
    """Evaluate a trained model on its fold's test subjects: metrics JSON and confusion-matrix PNGs."""
    from feratt.experiments import evaluate as evaluation

    with progress_bar("sample", "test") as progress:
        result = evaluation.evaluate(progress=progress, log=click.echo, **options)
    for split, m in result.splits.items():
        click.echo(
            f"{split}: accuracy {100 * m.accuracy:.2f}, precision {100 * m.precision:.2f}, "
            f"recall {100 * m.recall:.2f}, F1 {100 * m.f1:.2f} (paper F1), "
            f"macro-F1 {100 * m.macro_f1:.2f} on {m.samples} samples"
        )
    click.echo(f"wrote {result.path}")


def _sigmas(ctx: click.Context, param: click.Parameter, value: str) -> list[float]:
    from feratt.experiments.noise import parse_sigmas

    try:
        return parse_sigmas(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@main.command("noise")
@click.argument("runs", metavar="RUN...", nargs=-1, required=True, type=click.Path())
@click.option(
    "--shards", "render", required=True, type=click.Path(file_okay=False), help="The render to test on."
)
@click.option(
    "--sigmas",
    default="0.01,0.05,0.07,0.09,0.1,0.2,0.3",
    show_default=True,
    callback=_sigmas,
    help="Noise levels (comma-separated); 0, the clean reference, is always added.",
)
@click.option(
    "--real-test",
    type=click.Path(exists=True, dir_okay=False),
    help="Face bank: also test on the test subjects' unrendered faces (figure 8).",
)
@click.option("--lab-l", is_flag=True, help="Add the noise to Lab lightness (sigma x 100) instead of RGB.")
@click.option("--fold", default="all", show_default=True, help="Fold index, or 'all' (each with a best.pt).")
@click.option(
    "--out", "-o", type=click.Path(file_okay=False), help="Output folder [default: the first RUN's noise/]."
)
@click.option(
    "--image-index",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="Figure 7: this sample of the test split.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Noise seed, shared by every method.")
@overwrite_option("an earlier noise run's results in --out, or files feratt did not write there")
@scoring_options
def noise_command(**options) -> None:
    """Accuracy of each RUN (one method each) under Gaussian noise: figures 7-9, noise.json and noise.csv."""
    from feratt.experiments.noise import noise_robustness

    with progress_bar("sample", "noise") as progress:
        result = noise_robustness(progress=progress, log=click.echo, **options)
    for path in result.written:
        click.echo(f"wrote {path}")


@main.command("embed")
@click.argument("run", metavar="RUN", type=click.Path(exists=True))
@click.option(
    "--shards", "render", required=True, type=click.Path(file_okay=False), help="The render to embed."
)
@click.option("--fold", type=click.IntRange(0), help="Fold, when RUN holds several.")
@click.option(
    "--out", "-o", type=click.Path(file_okay=False), help="Output folder [default: the fold's embed/]."
)
@click.option(
    "--max-points",
    type=click.IntRange(4),
    default=4000,
    show_default=True,
    help="Test points in the t-SNE (a class-stratified sample when there are more).",
)
@click.option("--perplexity", type=click.FloatRange(0, min_open=True), default=30.0, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@overwrite_option("an earlier embedding in --out, or files feratt did not write there")
@scoring_options
def embed_command(**options) -> None:
    """Embed a FERAtt fold's samples: k-NN accuracy on z, embeddings.npz and the t-SNE of figure 6."""
    from feratt.experiments import embed as embedding

    with progress_bar("sample", "embed") as progress:
        result = embedding.embed(progress=progress, log=click.echo, **options)
    for path in result.written:
        click.echo(f"wrote {path}")


main.add_command(predict_command)
main.add_command(export_command)


def _print_summary(result: BankResult, listed: int = 50) -> None:
    """Print what went into a face bank: faces per class, subject and mask method, notes, skipped files."""
    width = max(len(c) for c in result.classes)
    click.echo("faces per class:")
    for name, count in result.per_class.items():
        click.echo(f"  {name:<{width}}  {count}")
    subjects = result.per_subject
    click.echo(f"faces per subject ({len(subjects)} subjects):")
    click.echo("  " + ", ".join(f"{s} {n}" for s, n in subjects.items()))
    click.echo("masks by method: " + ", ".join(f"{m} {n}" for m, n in result.per_method.items()))
    if result.conversions:
        click.echo("images converted: " + ", ".join(f"{k} {n}" for k, n in result.conversions.items()))
    for note in result.notes:
        click.echo(f"note: {note}")
    click.echo(f"files skipped: {len(result.skipped)}")
    for skipped in result.skipped[:listed]:
        click.echo(f"  {skipped.path}: {skipped.reason}")
    if len(result.skipped) > listed:
        click.echo(f"  ... and {len(result.skipped) - listed} more, listed in the bank's 'skipped' table")


if __name__ == "__main__":
    main()
