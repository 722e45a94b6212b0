"""The feratt command line: `feratt faces` builds a face bank; later commands render and train."""

from __future__ import annotations

import click

from feratt import __version__

FACE_FORMATS = ("auto", "ckplus", "ckplus-folders", "bu3dfe", "jaffe", "folders", "csv")


class UserError(click.ClickException):
    """A user error: printed as one 'Error:' line, exit status 2."""

    exit_code = 2


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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
    from feratt.atomic import check_writable
    from feratt.datasets.bank import BankOptions, build_faces, read_bank, write_bank
    from feratt.datasets.records import ReaderOptions
    from feratt.datasets.sources import list_faces
    from feratt.errors import FerattError

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
