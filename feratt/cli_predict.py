"""The commands that use a trained model on new faces: `feratt predict` and `feratt export`."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import click

from feratt.cli_errors import FerattCommand
from feratt.cli_options import device_option, progress_bar

fold_option = click.option("--fold", type=click.IntRange(0), help="Fold, when the run folder holds several.")
render_option = click.option(
    "--render",
    type=click.Path(exists=True, file_okay=False),
    help="Frame faces as this render framed them (for checkpoints older than the framing record).",
)


@contextlib.contextmanager
def warnings_as_lines() -> Iterator[None]:
    """Show the library's warnings (an assumed framing, say) as one 'warning:' line each on stderr."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        try:
            yield
        finally:
            for warning in caught:
                if issubclass(warning.category, UserWarning):
                    click.echo(f"warning: {warning.message}", err=True)


@click.command("predict", cls=FerattCommand)
@click.argument("checkpoint", metavar="CHECKPOINT", type=click.Path(exists=True))
@click.argument("images", metavar="INPUT...", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of a table.")
@click.option(
    "--no-detect", is_flag=True, help="Each image is a face crop: classify it whole, centre-cropped."
)
@click.option(
    "--annotate",
    type=click.Path(file_okay=False),
    help="Write each image (PNG) and video (mp4, with per-frame JSON lines) with its faces drawn here.",
)
@click.option(
    "--save-attention",
    type=click.Path(file_okay=False),
    help="FERAtt: write each face's model input and its I_att as PNGs into this folder.",
)
@click.option(
    "--every", type=click.IntRange(1), default=1, show_default=True, help="Videos: every k-th frame."
)
@click.option(
    "--smooth",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="Videos: average each face's probabilities over N classified frames.",
)
@click.option(
    "--detector",
    type=click.Choice(("auto", "hog", "cnn", "cascade", "yunet")),
    default="auto",
    show_default=True,
    help="auto: dlib's HOG with 68 landmarks (feratt[landmarks]), else the LBP cascade; cnn: dlib's MMOD; "
    "yunet: OpenCV's YuNet from --detector-model.",
)
@click.option(
    "--detector-model",
    type=click.Path(exists=True, dir_okay=False),
    help="A local YuNet .onnx file (--detector yunet, or auto).",
)
@click.option(
    "--detector-side",
    type=click.IntRange(48),
    default=640,
    show_default=True,
    help="The cascade and HOG run on a copy no larger than this (larger finds smaller faces, slower).",
)
@click.option(
    "--min-neighbours",
    type=click.IntRange(1),
    default=4,
    show_default=True,
    help="Raw cascade detections a face needs (fewer: more faces and more false ones).",
)
@render_option
@click.option("--overwrite", is_flag=True, help="Replace annotated files already in --annotate.")
@fold_option
@device_option
def predict_command(checkpoint: str, images: tuple[str, ...], as_json: bool, **options: Any) -> None:
    """Find and classify the faces in IMAGEs, videos and folders with a checkpoint or an exported .onnx."""
    import json

    from feratt.codec import encode
    from feratt.datasets.detect import DetectorSettings
    from feratt.inference.predict import predict as run_predict

    detector = DetectorSettings(
        detector=options.pop("detector"),
        side=options.pop("detector_side"),
        min_neighbours=options.pop("min_neighbours"),
        model=options.pop("detector_model"),
    )

    def note(line: str) -> None:
        click.echo(f"warning: {line}", err=True)

    with warnings_as_lines(), progress_bar("item", "predict") as progress:
        result = run_predict(
            checkpoint=checkpoint,
            images=images,
            detect=not options.pop("no_detect"),
            detector=detector,
            progress=progress,
            log=note,
            **{key: value for key, value in options.items() if value is not None},
        )
    if as_json:
        click.echo(json.dumps(encode(result), indent=2))
    else:
        _print_table(result)
    for label, paths, where in (
        ("images", result.attention_written, options.get("save_attention")),
        ("annotated files", result.annotated, options.get("annotate")),
    ):
        if paths:
            click.echo(f"wrote {len(paths)} {label} to {where}", err=as_json)


def _print_table(result: Any) -> None:
    """One line per face (the old one-line form for whole images), then images without faces, videos."""
    for item in result.predictions:
        ranked = ", ".join(f"{name} {p:.3f}" for name, p in item.ranked())
        if item.box is None:
            click.echo(f"{item.path}: {item.prediction} ({item.probability:.3f})  {ranked}")
            continue
        x, y, width, height = (round(v) for v in item.box)
        where = f"face {item.face} at {x},{y} {width}x{height}"
        click.echo(f"{item.path} {where}: {item.prediction} ({item.probability:.3f})  {ranked}")
    for path in result.no_face:
        click.echo(f"{path}: no face found")
    for video in result.videos:
        tracks = video.tracks
        counts = f"{video.frames} frames, {video.classified_frames} classified, {len(tracks)} faces followed"
        click.echo(f"{video.path}: {counts}")
        for track in tracks:
            span = f"frames {track.first_frame}-{track.last_frame}"
            label = track.prediction
            mean = track.probabilities[label]
            click.echo(f"  face #{track.track} ({span}): {label} ({mean:.3f} mean)")


@click.command("export", cls=FerattCommand)
@click.argument("checkpoint", metavar="CHECKPOINT", type=click.Path(exists=True))
@click.argument("out", metavar="OUT.onnx", type=click.Path(dir_okay=False))
@fold_option
@render_option
@click.option("--overwrite", is_flag=True, help="Replace OUT.onnx if it exists.")
def export_command(checkpoint: str, out: str, fold: int | None, render: str | None, overwrite: bool) -> None:
    """Write a checkpoint's model as ONNX (dynamic batch; class names, input size and framing inside)."""
    from feratt.inference.export import export_onnx

    with warnings_as_lines():
        result = export_onnx(checkpoint=checkpoint, out=out, fold=fold, render=render, overwrite=overwrite)
    size = result.input_size
    click.echo(
        f"wrote {result.path}: {result.method}, {len(result.classes)} classes, input {size}x{size}, "
        f"outputs {', '.join(result.outputs)}"
    )
    click.echo(f"framing: {result.framing.describe()}")
