"""The feratt command line: `feratt faces` builds a face bank; later commands render and train."""

from __future__ import annotations

from pathlib import Path

import click

from feratt import __version__
from feratt.atomic import check_writable
from feratt.errors import FerattError

FACE_FORMATS = ("auto", "ckplus", "ckplus-folders", "bu3dfe", "jaffe", "folders", "csv")


class UserError(click.ClickException):
    """A user error: printed as one 'Error:' line, exit status 2."""

    exit_code = 2


#: Library fields whose command-line option is not simply `--field-name`.
FIELD_OPTIONS: dict[str, str] = {}


def option_for(field: str) -> str:
    """The command-line option that sets library field `field`."""
    return FIELD_OPTIONS.get(field, "--" + field.replace("_", "-"))


def user_error(exc: FerattError) -> UserError:
    """The one-line CLI error for a library error, naming the option when the error names a field."""
    message = str(exc)
    if exc.field is not None:
        message = f"{option_for(exc.field)}: {message}"
    return UserError(message)


class FerattGroup(click.Group):
    """The command group: the one place where library errors become one 'Error:' line and exit 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except FerattError as exc:
            raise user_error(exc) from None


@click.group(cls=FerattGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="feratt")
def main() -> None:
    """Build synthetic face-expression training sets and train FERAtt on them."""


@main.command()
@click.argument("source")
@click.option(
    "--out", "-o", "out", required=True, type=click.Path(dir_okay=False), help="Face bank to write (HDF5)."
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FACE_FORMATS),
    default="auto",
    show_default=True,
    help="Layout of SOURCE; 'auto' detects it. SOURCE 'builtin:demo' needs none.",
)
@click.option(
    "--size",
    type=click.IntRange(32, 1024),
    default=160,
    show_default=True,
    help="Side of the square face crops, in pixels.",
)
@click.option(
    "--margin",
    type=click.FloatRange(0, 2),
    default=0.2,
    show_default=True,
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
    show_default=True,
    help="Raise a landmark mask over the forehead by this fraction of the brow-to-chin height.",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Seed for the CK+ neutral choice and the demo faces.",
)
@click.option(
    "--neutral-subjects",
    type=click.IntRange(0),
    default=33,
    show_default=True,
    help="CK+: subjects whose first frame forms the neutral class.",
)
@click.option(
    "--last-frames",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="CK+: frames taken from the end of each labelled sequence.",
)
@click.option("--no-neutral", is_flag=True, help="CK+: leave neutral out (7 classes).")
@click.option(
    "--bu-intensity",
    type=click.IntRange(1, 4),
    default=4,
    show_default=True,
    help="BU-3DFE: expression intensity to use.",
)
@click.option(
    "--subject-regex",
    default=r"^([^_.\-]+)",
    show_default=True,
    help="folders: regular expression whose first group is the subject id in a file name.",
)
@click.option(
    "--demo-subjects",
    type=click.IntRange(1, 999),
    default=24,
    show_default=True,
    help="builtin:demo: number of synthetic subjects.",
)
@click.option(
    "--demo-per-class",
    type=click.IntRange(1),
    default=2,
    show_default=True,
    help="builtin:demo: faces per subject and class.",
)
@click.option(
    "--jobs", "-j", type=int, default=-1, show_default=True, help="Parallel workers (-1: all cores)."
)
@click.option("--preview", type=click.Path(dir_okay=False), help="Write a contact sheet PNG here.")
def faces(
    source: str,
    out: str,
    fmt: str,
    size: int,
    margin: float,
    masks_root: str | None,
    forehead: float,
    seed: int,
    neutral_subjects: int,
    last_frames: int,
    no_neutral: bool,
    bu_intensity: int,
    subject_regex: str,
    demo_subjects: int,
    demo_per_class: int,
    jobs: int,
    preview: str | None,
) -> None:
    """Read a face data set (or builtin:demo), mask and crop every face, and write a face bank."""
    from feratt.datasets.bank import BankOptions, build_faces, read_bank, write_bank
    from feratt.datasets.records import ReaderOptions
    from feratt.datasets.sources import list_faces

    for option, path in (("--out", out), ("--preview", preview)):
        if path is not None:
            try:
                check_writable(path)
            except OSError as exc:
                raise click.BadParameter(f"cannot write {path}: {exc}", param_hint=option) from None
    reader_options = ReaderOptions(
        seed=seed,
        neutral_subjects=neutral_subjects,
        last_frames=last_frames,
        include_neutral=not no_neutral,
        bu_intensity=bu_intensity,
        subject_regex=subject_regex,
        demo_subjects=demo_subjects,
        demo_per_class=demo_per_class,
    )
    bank_options = BankOptions(size=size, margin=margin, forehead=forehead, masks_root=masks_root, seed=seed)
    try:
        listing = list_faces(source, fmt, reader_options)
        if fmt == "auto":
            click.echo(f"detected format: {listing.format}")
        click.echo(f"{len(listing.entries)} faces listed in {listing.root} ({len(listing.classes)} classes)")
        results = build_faces(listing, bank_options, jobs=jobs, progress=True)
        summary = write_bank(out, listing, results, bank_options)
        _print_summary(summary, listing.notes)
        click.echo(f"wrote {out}: {summary.total} faces, sha256 {summary.checksum[:16]}")
        if preview:
            from feratt.atomic import atomic_write_bytes
            from feratt.datasets.preview import contact_sheet, encode_png

            atomic_write_bytes(preview, encode_png(contact_sheet(read_bank(out, verify=False))))
            click.echo(f"wrote {preview}")
    except FerattError as exc:
        raise UserError(str(exc)) from None


def _range(text: str, option: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in text.split(":"))
    except ValueError:
        raise click.BadParameter(
            f"takes LOW:HIGH, such as 0.3:1.0; got {text!r}", param_hint=option
        ) from None
    if low > high:
        raise click.BadParameter(f"LOW must not exceed HIGH; got {text!r}", param_hint=option)
    return low, high


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


@main.command()
@click.argument("bank", default="builtin:demo")
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--coco-annotations", type=click.Path(dir_okay=False), help="COCO instances JSON.")
@click.option("--coco-images", type=click.Path(file_okay=False), help="Folder of the COCO images.")
@click.option(
    "--exclude-categories",
    default="person",
    show_default=True,
    help="COCO categories whose images are left out (comma-separated).",
)
@click.option("--include-categories", default="", help="Keep only images with these COCO categories.")
@click.option(
    "--min-side",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="Drop backgrounds whose shorter side is smaller, in pixels.",
)
@click.option(
    "--backgrounds",
    "background_dir",
    type=click.Path(file_okay=False),
    help="A plain folder of background images instead of COCO.",
)
@click.option(
    "--size",
    type=click.IntRange(16, 1024),
    default=128,
    show_default=True,
    help="Side of the square samples.",
)
@click.option("--per-face", type=click.IntRange(1), help="Samples per face [default: 10].")
@click.option("--total", type=click.IntRange(1), help="Samples in all, spread over the faces.")
@click.option(
    "--balance",
    type=click.Choice(["classes", "faces"]),
    default="classes",
    show_default=True,
    help="With --total: equal samples per class, or per face.",
)
@click.option(
    "--shard-size", type=click.IntRange(1), default=1000, show_default=True, help="Samples per shard."
)
@click.option(
    "--geometry",
    "--preset",
    "preset",
    type=click.Choice(["train", "eval"]),
    default="train",
    show_default=True,
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
    show_default=True,
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
@click.option("--compression", type=click.Choice(["gzip", "lzf", "none"]), default="gzip", show_default=True)
@click.option(
    "--compression-level", type=click.IntRange(1, 9), default=1, show_default=True, help="gzip level."
)
@click.option(
    "--crops-per-background",
    type=click.IntRange(1),
    default=16,
    show_default=True,
    help="Samples that share one decoded background photo (each with its own crop).",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--jobs", "-j", type=int, default=-1, show_default=True, help="Parallel workers (-1: all).")
@click.option("--backend", type=click.Choice(["loky", "dask"]), default="loky", show_default=True)
@click.option("--scheduler", help="Dask scheduler address, with --backend dask.")
@click.option("--part", help="Render only part I of K of the plan (I/K), for job arrays.")
@click.option("--overwrite", is_flag=True, help="Replace a render of another configuration in --out.")
def render(bank: str, out: str, **options) -> None:
    """Composite the faces of BANK onto background photos into sharded HDF5 (default: the demo set)."""
    try:
        _render(bank, Path(out), **options)
    except FerattError as exc:
        raise UserError(str(exc)) from None


def _render_config(options: dict):
    from dataclasses import replace

    from feratt.renderer.config import PRESETS

    config = PRESETS[options["preset"]]
    geometry = {k: options[k] for k in ("scale", "flip_p", "rotation", "translation", "warp", "perspective")}
    geometry = {k: v for k, v in geometry.items() if v is not None}
    colour = config.colour
    if options["no_colour"]:
        colour = replace(colour, brightness_p=0.0, contrast_p=0.0, gamma_p=0.0, blur_p=0.0, noise_p=0.0)
    changes = {
        "size": options["size"],
        "geometry": replace(config.geometry, **geometry),
        "colour": colour,
        "luminance": not options["no_luminance"],
        "grey": options["grey"],
        "background_scale": _range(options["background_scale"], "--background-scale"),
        "balance": options["balance"],
        "fit_mask": options["fit_mask"],
    }
    if options["feather"] is not None:
        changes["feather"] = options["feather"]
    return replace(config, **changes)


def _backgrounds(options: dict):
    from feratt.cache import cache_dir
    from feratt.renderer import backgrounds

    coco = options["coco_annotations"], options["coco_images"]
    if any(coco) and not all(coco):
        raise click.UsageError("--coco-annotations and --coco-images go together")
    if all(coco) and options["background_dir"]:
        raise click.UsageError("give COCO or --backgrounds, not both")
    if all(coco):
        return backgrounds.coco_backgrounds(
            coco[0],
            coco[1],
            exclude_categories=_names(options["exclude_categories"]),
            include_categories=_names(options["include_categories"]),
            min_side=options["min_side"],
        )
    if options["background_dir"]:
        return backgrounds.folder_backgrounds(options["background_dir"], min_side=options["min_side"])
    return backgrounds.embedded_backgrounds(str(cache_dir() / "backgrounds"))


def _render(bank: str, out: Path, **options) -> None:
    from tqdm import tqdm

    from feratt.cache import cache_dir
    from feratt.datasets.bank import ensure_demo_bank, read_bank
    from feratt.manifests.plan import face_counts, make_plan, select_part
    from feratt.renderer.render import build_run, parse_part, prepare_out
    from feratt.renderer.render import render as run_render

    part, parts = parse_part(options["part"])
    if options["backend"] == "dask" and not options["scheduler"]:
        raise click.UsageError("--backend dask needs --scheduler ADDRESS")
    try:
        out.mkdir(parents=True, exist_ok=True)
        check_writable(out / ".feratt-check")
    except OSError as exc:
        raise click.BadParameter(f"cannot write to {out}: {exc}", param_hint="--out") from None
    config = _render_config(options)
    if bank == "builtin:demo":
        bank_path = ensure_demo_bank(cache_dir() / f"demo-bank-{options['seed']}.h5", seed=options["seed"])
    else:
        bank_path = Path(bank)
        if not bank_path.is_file():
            raise FerattError(f"face bank not found: {bank}")
    face_bank = read_bank(bank_path)
    if len(face_bank) == 0:
        raise FerattError(f"face bank {bank_path} holds no faces")
    background_set = _backgrounds(options)
    for line in background_set.report_lines():
        click.echo(line)
    per_face = options["per_face"] if options["per_face"] or options["total"] else 10
    counts = face_counts(
        face_bank.labels,
        len(face_bank.classes),
        per_face=per_face,
        total=options["total"],
        balance=options["balance"],
        seed=options["seed"],
    )
    tasks = make_plan(face_bank.subjects, counts, options["shard_size"])
    plan = {
        "per_face": per_face,
        "total": options["total"],
        "balance": options["balance"],
        "shard_size": options["shard_size"],
    }
    job, run = build_run(
        out=out,
        bank_path=str(bank_path),
        bank_sha256=face_bank.attrs["content_sha256"],
        classes=face_bank.classes,
        tasks=tasks,
        backgrounds=background_set,
        config=config,
        seed=options["seed"],
        plan=plan,
        compression=options["compression"],
        level=options["compression_level"],
        crops_per_background=options["crops_per_background"],
    )
    prepare_out(out, run, options["overwrite"])
    mine = select_part(tasks, part, parts)
    total = sum(len(t) for t in mine)
    click.echo(
        f"plan: {int(counts.sum())} samples of {len(face_bank)} faces in {len(tasks)} shards, "
        f"{len(set(face_bank.subjects))} subjects"
        + (f"; part {part}/{parts}: {len(mine)} shards" if parts > 1 else "")
    )
    with tqdm(total=total, unit="sample", desc="render", disable=None) as bar:
        summary = run_render(
            job,
            run,
            mine,
            jobs=options["jobs"],
            backend=options["backend"],
            scheduler=options["scheduler"],
            progress=bar.update,
        )
    click.echo(
        f"rendered {summary.rendered_samples} samples in {summary.rendered_shards} shards "
        f"({summary.samples_per_second:.0f} samples/s); kept {summary.reused_shards} complete shards"
    )
    if summary.missing:
        click.echo(
            f"{len(summary.missing)} shards of the plan are not rendered yet; "
            f"after all parts finish, run: feratt index {out}"
        )
    else:
        import json

        written = json.loads((out / "index.json").read_text())
        totals = written["totals"]
        per_class = ", ".join(f"{c} {totals['class_counts'][c]}" for c in written["classes"])
        click.echo(
            f"{totals['samples']} samples in {totals['shards']} shards of {totals['subjects']} subjects; "
            f"per class: {per_class}"
        )
        click.echo(f"wrote {out / 'index.json'}")


@main.command()
@click.argument("out", type=click.Path(file_okay=False))
def index(out: str) -> None:
    """Rebuild OUT/index.json and the manifests after every part of a render has finished."""
    from feratt.manifests import catalog

    try:
        run = catalog.read_json(Path(out) / catalog.RUN_FILE)
        missing = catalog.finalize(Path(out), run)
    except FerattError as exc:
        raise UserError(str(exc)) from None
    if missing:
        names = ", ".join(t.relpath for t in missing[:5])
        raise UserError(f"{len(missing)} shards are missing or incomplete, such as {names}")
    click.echo(f"wrote {Path(out) / catalog.INDEX_FILE}")


@main.command()
@click.argument("target", type=click.Path())
@click.option("--verify", "check", is_flag=True, help="Recheck every sha256 and the schema.")
@click.option("--sheet", type=click.Path(dir_okay=False), help="Write a contact sheet of samples here.")
@click.option(
    "--samples", type=click.IntRange(1, 400), default=24, show_default=True, help="Samples on the sheet."
)
def inspect(target: str, check: bool, sheet: str | None, samples: int) -> None:
    """Describe a render folder or one shard; optionally verify it and draw a sheet of samples."""
    from feratt.atomic import atomic_write_bytes
    from feratt.datasets.preview import encode_png
    from feratt.manifests import inspect as inspection

    try:
        for line in inspection.describe(Path(target)):
            click.echo(line)
        if sheet:
            atomic_write_bytes(sheet, encode_png(inspection.sample_sheet(Path(target), samples)))
            click.echo(f"wrote {sheet}")
        if check:
            problems = inspection.verify(Path(target))
            for problem in problems:
                click.echo(f"problem: {problem}")
            if problems:
                raise UserError(f"verification failed: {len(problems)} problems")
            click.echo("verified: every checksum and the schema match")
    except FerattError as exc:
        raise UserError(str(exc)) from None


_TRAIN_OPTIONS = (
    "method",
    "preset",
    "in_size",
    "width",
    "epochs",
    "batch_size",
    "lr",
    "attention_weight",
    "representation_weight",
    "classification_weight",
    "attention_loss",
    "classification_loss",
    "sigma",
    "class_means",
    "att_target",
    "teacher_forcing",
    "attention_channels",
    "ft_blocks",
    "rec_concat",
    "attention_weights",
    "fold_size",
    "val_subjects",
    "seed",
    "workers",
    "noise_sigma",
    "verify",
    "deterministic",
    "amp",
    "compile",
    "tensorboard",
    "max_batches",
    "real_test",
)


_TRAINING_OPTION_DECORATORS = [
    click.option(
        "--preset", default="paper", show_default=True, help="paper (128 px) or cpu-small (64 px, narrow)."
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
    click.option("--in-size", type=click.IntRange(32), help="Input size (default from the preset)."),
    click.option(
        "--width", type=click.FloatRange(0.05, 4), help="Width multiplier (default from the preset)."
    ),
    click.option("--attention-weight", type=float, default=10.0, show_default=True),
    click.option("--representation-weight", type=float, default=1.0, show_default=True),
    click.option("--classification-weight", type=float, default=1.0, show_default=True),
    click.option("--attention-loss", type=click.Choice(["mse", "tanh"]), default="mse", show_default=True),
    click.option("--classification-loss", type=click.Choice(["bce", "ce"]), default="bce", show_default=True),
    click.option(
        "--sigma",
        type=click.FloatRange(min=0, min_open=True),
        default=1.0,
        show_default=True,
        help="Sigma of the Gaussian manifold loss.",
    ),
    click.option(
        "--class-means",
        type=click.Choice(["batch", "leave-one-out"]),
        default="batch",
        show_default=True,
        help="Manifold loss class means: with the sample itself (their code) or without it.",
    ),
    click.option(
        "--att-target", type=click.Choice(["face", "input-masked"]), default="face", show_default=True
    ),
    click.option("--teacher-forcing", type=click.FloatRange(0, 1), default=0.0, show_default=True),
    click.option("--attention-channels", type=click.IntRange(1), default=1, show_default=True),
    click.option("--ft-blocks", type=click.IntRange(1), default=4, show_default=True),
    click.option("--rec-concat", is_flag=True, help="The later code's G_rec: concatenate input and G_att."),
    click.option(
        "--attention-weights",
        type=click.Path(dir_okay=False),
        help="Local torchvision resnet34 state_dict for the attention encoder.",
    ),
    click.option("--seed", type=int, default=0, show_default=True),
    click.option("--workers", type=click.IntRange(0), default=2, show_default=True, help="Loader workers."),
    click.option("--noise-sigma", help="Training-time Gaussian noise, a sigma range LOW:HIGH in [0, 1]."),
    click.option("--no-verify", "verify", flag_value=False, default=True, help="Skip shard sha256 checks."),
    click.option("--deterministic", is_flag=True, help="Repeatable runs (slower)."),
    click.option("--no-amp", "amp", flag_value=False, default=True, help="No mixed precision on CUDA."),
    click.option("--compile", is_flag=True, help="torch.compile the model."),
    click.option("--tensorboard", is_flag=True, help="Write TensorBoard logs."),
    click.option("--max-batches", type=click.IntRange(1), help="Stop each pass after this many batches."),
    click.option(
        "--real-test",
        type=click.Path(exists=True, dir_okay=False),
        help="Face bank: also test on the test subjects' unrendered faces (the paper's Real tables).",
    ),
]


def training_options(command):
    """The training options that `train` and `experiment` share."""
    for option in reversed(_TRAINING_OPTION_DECORATORS):
        command = option(command)
    return command


@main.command()
@click.argument("shards", type=click.Path(file_okay=False))
@click.option("--out", "-o", "run_dir", required=True, type=click.Path(file_okay=False), help="Run folder.")
@click.option(
    "--method", default="feratt-rep-cls", show_default=True, help="baseline, feratt-cls or feratt-rep-cls."
)
@click.option("--fold", default="0", show_default=True, help="Fold index, or 'all'.")
@click.option("--folds", "all_folds", flag_value="all", help="Train every fold in turn (same as --fold all).")
@training_options
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--resume", is_flag=True, help="Continue a killed run where it stopped.")
@click.pass_context
def train(
    ctx: click.Context,
    shards: str,
    run_dir: str,
    config_file: str | None,
    fold: str,
    all_folds: str | None,
    device: str,
    resume: bool,
    **options,
) -> None:
    """Train a method on the rendered SHARDS, one subject-independent fold at a time."""
    from feratt.training.trainer import pick_device
    from feratt.training.trainer import train as run_training

    try:
        config = _train_config(ctx, config_file, options)
        target = pick_device(device)
        summary = run_training(
            Path(shards),
            Path(run_dir),
            config,
            all_folds or fold,
            resume=resume,
            device=target,
            echo=click.echo,
        )
    except FerattError as exc:
        raise UserError(str(exc)) from None
    for which, metrics in summary["aggregate"].items():
        click.echo(
            f"{which}: " + ", ".join(f"{k} {v['mean']:.4f} +- {v['std']:.4f}" for k, v in metrics.items())
        )
    click.echo(f"wrote {Path(run_dir) / 'summary.json'}")


def _train_config(ctx: click.Context, config_file: str | None, options: dict):
    """The TrainConfig of the command line: the --config file's values, then explicit options."""
    from feratt.training.config import TrainConfig, load_config_file

    values = load_config_file(config_file) if config_file else {}
    for name in _TRAIN_OPTIONS:
        explicit = ctx.get_parameter_source(name) not in (
            click.core.ParameterSource.DEFAULT,
            click.core.ParameterSource.DEFAULT_MAP,
            None,
        )
        if name in options and (explicit or name not in values):
            values[name] = options[name]
    if isinstance(values.get("noise_sigma"), str):
        values["noise_sigma"] = _range(values["noise_sigma"], "--noise-sigma")
    return TrainConfig.from_dict(values).resolved()


@main.command()
@click.argument("shards", type=click.Path(file_okay=False))
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
@training_options
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.pass_context
def experiment(
    ctx: click.Context,
    shards: str,
    exp_dir: str,
    methods: str,
    fold_spec: str,
    eval_shards: str | None,
    config_file: str | None,
    device: str,
    **options,
) -> None:
    """Train and evaluate each method on each fold of SHARDS; tables, significance tests and report.md."""
    from feratt.experiments.experiment import run_experiment
    from feratt.training.losses import method_terms
    from feratt.training.trainer import pick_device

    names = list(dict.fromkeys(_names(methods)))
    if not names:
        raise click.BadParameter("name at least one method", param_hint="--methods")
    try:
        for name in names:
            method_terms(name)
        config = _train_config(ctx, config_file, options)
        real_test = config.real_test
        results = run_experiment(
            Path(shards),
            Path(exp_dir),
            names,
            fold_spec,
            config,
            real_test=real_test,
            eval_shards=Path(eval_shards) if eval_shards else None,
            device=pick_device(device),
            echo=click.echo,
        )
    except FerattError as exc:
        raise UserError(str(exc)) from None
    for split in results["splits"]:
        click.echo(f"{split} test:")
        click.echo((Path(exp_dir) / f"table-{split}.md").read_text().rstrip())
    click.echo(f"wrote {Path(exp_dir) / 'report.md'}")


@main.command()
@click.argument("run_path", metavar="RUN_OR_CHECKPOINT", type=click.Path(exists=True))
@click.option("--shards", required=True, type=click.Path(file_okay=False), help="The render to test on.")
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
@click.option("--batch-size", type=click.IntRange(1), default=100, show_default=True)
@click.option("--workers", type=click.IntRange(0), default=0, show_default=True, help="Loader workers.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
def evaluate(
    run_path: str,
    shards: str,
    fold: int | None,
    which: str,
    real_test: str | None,
    out_file: str | None,
    batch_size: int,
    workers: int,
    device: str,
) -> None:
    """Evaluate a trained model on its fold's test subjects: metrics JSON and confusion-matrix PNGs."""
    from feratt.experiments.evaluate import evaluate_to_files
    from feratt.training.trainer import pick_device

    try:
        path, results = evaluate_to_files(
            Path(run_path),
            Path(shards),
            fold=fold,
            which=which,
            real_test=real_test,
            out_file=Path(out_file) if out_file else None,
            batch_size=batch_size,
            workers=workers,
            device=pick_device(device),
        )
    except FerattError as exc:
        raise UserError(str(exc)) from None
    for note in results.get("notes", []):
        click.echo(f"note: {note}")
    for split in ("synthetic", "real"):
        if split in results:
            m = results[split]
            click.echo(
                f"{split}: accuracy {100 * m['accuracy']:.2f}, precision {100 * m['precision']:.2f}, "
                f"recall {100 * m['recall']:.2f}, F1 {100 * m['f1']:.2f} (paper F1), "
                f"macro-F1 {100 * m['macro_f1']:.2f} on {m['samples']} samples"
            )
    click.echo(f"wrote {path}")


def _sigmas(ctx: click.Context, param: click.Parameter, value: str) -> list[float]:
    from feratt.experiments.noise import parse_sigmas

    try:
        return parse_sigmas(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@main.command()
@click.argument("runs", metavar="RUN...", nargs=-1, required=True, type=click.Path())
@click.option("--shards", required=True, type=click.Path(file_okay=False), help="The render to test on.")
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
@click.option("--batch-size", type=click.IntRange(1), default=100, show_default=True)
@click.option("--workers", type=click.IntRange(0), default=0, show_default=True, help="Loader workers.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
def noise(
    runs: tuple[str, ...],
    shards: str,
    sigmas: list[float],
    real_test: str | None,
    lab_l: bool,
    fold: str,
    out: str | None,
    image_index: int,
    seed: int,
    batch_size: int,
    workers: int,
    device: str,
) -> None:
    """Accuracy of each RUN (one method each) under Gaussian noise: figures 7-9, noise.json and noise.csv."""
    from feratt.experiments.noise import noise_experiment
    from feratt.training.trainer import pick_device

    folder = Path(out) if out else Path(runs[0]) / "noise"
    try:
        result = noise_experiment(
            [Path(r) for r in runs],
            Path(shards),
            sigmas,
            folder,
            real_test=real_test,
            lab_l=lab_l,
            fold=fold,
            seed=seed,
            batch_size=batch_size,
            workers=workers,
            device=pick_device(device),
            image_index=image_index,
            echo=click.echo,
        )
    except FerattError as exc:
        raise UserError(str(exc)) from None
    for path in result["written"]:
        click.echo(f"wrote {path}")


@main.command()
@click.argument("run_path", metavar="RUN", type=click.Path(exists=True))
@click.option("--shards", required=True, type=click.Path(file_okay=False), help="The render to embed.")
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
@click.option("--batch-size", type=click.IntRange(1), default=100, show_default=True)
@click.option("--workers", type=click.IntRange(0), default=0, show_default=True, help="Loader workers.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
def embed(
    run_path: str,
    shards: str,
    fold: int | None,
    out: str | None,
    max_points: int,
    perplexity: float,
    seed: int,
    batch_size: int,
    workers: int,
    device: str,
) -> None:
    """Embed a FERAtt fold's samples: k-NN accuracy on z, embeddings.npz and the t-SNE of figure 6."""
    from feratt.experiments.embed import embed_experiment
    from feratt.training.trainer import pick_device

    try:
        result = embed_experiment(
            Path(run_path),
            Path(shards),
            fold=fold,
            out=Path(out) if out else None,
            max_points=max_points,
            perplexity=perplexity,
            seed=seed,
            batch_size=batch_size,
            workers=workers,
            device=pick_device(device),
            echo=click.echo,
        )
    except FerattError as exc:
        raise UserError(str(exc)) from None
    for name in ("embeddings.npz", "embed.json", "tsne.png"):
        click.echo(f"wrote {Path(result['out']) / name}")


@main.command()
@click.argument("checkpoint", metavar="CHECKPOINT", type=click.Path(exists=True))
@click.argument("images", metavar="IMAGE...", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of lines.")
@click.option(
    "--save-attention",
    type=click.Path(file_okay=False),
    help="FERAtt: write each model input and its I_att as PNGs into this folder.",
)
@click.option("--fold", type=click.IntRange(0), help="Fold, when the run folder holds several.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
def predict(
    checkpoint: str,
    images: tuple[str, ...],
    as_json: bool,
    save_attention: str | None,
    fold: int | None,
    device: str,
) -> None:
    """Classify face IMAGEs (files or folders) with a run folder, fold folder or .pt CHECKPOINT."""
    import json

    from feratt.experiments import predict as prediction
    from feratt.experiments.runs import load_trained
    from feratt.training.trainer import pick_device

    try:
        trained = load_trained(Path(checkpoint), fold=fold, device=pick_device(device))
        if save_attention and not trained.is_feratt:
            raise FerattError(
                f"--save-attention needs a FERAtt model; {trained.checkpoint} is {trained.method}, "
                "which has no attention image"
            )
        paths = prediction.expand_image_paths(images)
        size = int(trained.config.in_size)
        inputs = [prediction.prepare_image(prediction.read_rgb(p), size) for p in paths]
        result = prediction.predict_images(trained, inputs)
        written = prediction.save_attention(result, paths, save_attention) if save_attention else []
    except FerattError as exc:
        raise UserError(str(exc)) from None
    if as_json:
        document = {
            "checkpoint": str(trained.checkpoint),
            "method": trained.method,
            "fold": trained.fold,
            "epoch": trained.epoch,
            "classes": result.classes,
            "predictions": [
                {
                    "path": str(path),
                    "probabilities": dict(zip(result.classes, map(float, row), strict=True)),
                    "prediction": label,
                }
                for path, row, label in zip(paths, result.probabilities, result.labels, strict=True)
            ],
        }
        click.echo(json.dumps(document, indent=2))
    else:
        for path, row, label in zip(paths, result.probabilities, result.labels, strict=True):
            ranked = sorted(zip(result.classes, row, strict=True), key=lambda item: -item[1])
            click.echo(f"{path}: {label} ({row.max():.3f})  " + ", ".join(f"{c} {p:.3f}" for c, p in ranked))
    if written:
        click.echo(f"wrote {len(written)} images to {save_attention}", err=as_json)


def _print_summary(summary, notes: list[str], listed: int = 50) -> None:
    width = max(len(c) for c in summary.classes)
    click.echo("faces per class:")
    for name, count in summary.per_class.items():
        click.echo(f"  {name:<{width}}  {count}")
    subjects = summary.per_subject
    click.echo(f"faces per subject ({len(subjects)} subjects):")
    click.echo("  " + ", ".join(f"{s} {n}" for s, n in subjects.items()))
    click.echo("masks by method: " + ", ".join(f"{m} {n}" for m, n in summary.per_method.items()))
    if summary.conversions:
        click.echo("images converted: " + ", ".join(f"{k} {n}" for k, n in summary.conversions.items()))
    for note in notes:
        click.echo(f"note: {note}")
    click.echo(f"files skipped: {len(summary.skipped)}")
    for skipped in summary.skipped[:listed]:
        click.echo(f"  {skipped.path}: {skipped.reason}")
    if len(summary.skipped) > listed:
        click.echo(f"  ... and {len(summary.skipped) - listed} more, listed in the bank's 'skipped' table")


if __name__ == "__main__":
    main()
