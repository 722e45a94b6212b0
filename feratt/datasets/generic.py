"""Readers for generic layouts (class folders, a CSV list) and the helpers every reader shares."""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Callable
from pathlib import Path

from feratt.artifacts.bank import Skipped
from feratt.datasets.classes import canonical_name, ordered_classes
from feratt.datasets.imageio import is_image_file
from feratt.datasets.records import FaceEntry, FaceListing, ReaderOptions
from feratt.errors import FerattError

#: Names that operating systems and archivers leave behind; readers ignore them silently, like dot-files.
ARTEFACT_NAMES = frozenset({"__MACOSX", "Thumbs.db", "desktop.ini"})

#: The columns a CSV list of faces must have (other columns are ignored).
CSV_COLUMNS: tuple[str, ...] = ("path", "label", "subject")

DEFAULT_SUBJECT_REGEX = r"^([^_.\-]+)"


def is_hidden(name: str) -> bool:
    """Whether a file or folder name is a hidden file or an OS/archive artefact, ignored silently."""
    return name.startswith(".") or name in ARTEFACT_NAMES


def visible_children(folder: Path, skipped: list[Skipped] | None = None) -> list[Path]:
    """The non-hidden entries of `folder`, sorted by name; an unlistable folder is skipped if `skipped`."""
    try:
        names = os.listdir(folder)
    except OSError as exc:
        reason = f"cannot list folder: {exc.strerror or exc}"
        if skipped is None:
            raise FerattError(f"{folder}: {reason}") from None
        skipped.append(Skipped(str(folder), reason))
        return []
    return [folder / name for name in sorted(names) if not is_hidden(name)]


def require_folder(root: Path, fmt: str) -> None:
    """Raise FerattError unless `root` is an existing folder."""
    if not root.exists():
        raise FerattError(f"path not found: {root}")
    if not root.is_dir():
        raise FerattError(f"{root} is not a folder; format {fmt} reads a folder")


def finish_listing(listing: FaceListing) -> FaceListing:
    """Sort entries by relpath and skipped files by path; raise FerattError if no face was found."""
    listing.entries.sort(key=lambda e: e.relpath)
    listing.skipped.sort(key=lambda s: s.path)
    if not listing.entries:
        message = f"no faces found in {listing.root} (format {listing.format})"
        if listing.skipped:
            first = listing.skipped[0]
            message += f"; {len(listing.skipped)} files skipped, first: {first.path}: {first.reason}"
        raise FerattError(message)
    return listing


def read_class_folders(
    root: Path,
    fmt: str,
    subject_of: Callable[[str], str | None],
    mismatch_reason: str,
    protocol: dict[str, object],
) -> FaceListing:
    """List `<root>/<class>/<image>`: classes from folder names, subjects from `subject_of(file stem)`."""
    require_folder(root, fmt)
    skipped: list[Skipped] = []
    notes: list[str] = []
    found: list[tuple[str, str, str, str]] = []  # class, relpath, source, subject
    folders_of: dict[str, list[str]] = {}
    nested = 0
    loose_files = 0
    for child in visible_children(root):
        if not child.is_dir():
            loose_files += 1
            continue
        try:
            cls = canonical_name(child.name)
        except FerattError as exc:
            raise FerattError(f"{child}: class folder name not recognised: {exc}") from None
        folders_of.setdefault(cls, []).append(child.name)
        for path in visible_children(child, skipped):
            if path.is_dir():
                nested += 1
                continue
            if not is_image_file(path):
                skipped.append(Skipped(str(path), "not an image file"))
                continue
            subject = subject_of(path.stem)
            if not subject:
                skipped.append(Skipped(str(path), mismatch_reason))
                continue
            found.append((cls, f"{child.name}/{path.name}", str(path), subject))

    classes = ordered_classes(cls for cls, _, _, _ in found)
    index = {cls: i for i, cls in enumerate(classes)}
    entries = [FaceEntry(source=s, label=index[c], subject=subj, relpath=r) for c, r, s, subj in found]

    for cls, names in sorted(folders_of.items()):
        if len(names) > 1:
            listed = ", ".join(f"{n}/" for n in names)
            notes.append(f"folders {listed} all hold class {cls}; merged")
    empty = sorted(n for cls, names in folders_of.items() if cls not in index for n in names)
    if empty:
        listed = ", ".join(f"{n}/" for n in empty)
        notes.append(f"{len(empty)} class folders hold no usable image and were left out: {listed}")
    if nested:
        notes.append(
            f"{nested} subfolders inside class folders ignored (only images directly inside are used)"
        )
    if loose_files:
        notes.append(f"{loose_files} files directly in {root} ignored (faces go in class folders)")
    listing = FaceListing(
        format=fmt,
        root=str(root),
        classes=classes,
        entries=entries,
        skipped=skipped,
        protocol=protocol,
        notes=notes,
    )
    return finish_listing(listing)


def compile_subject_regex(pattern: str) -> re.Pattern[str]:
    """Compile a subject pattern, raising FerattError if it is invalid or has no capture group."""
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise FerattError(f"invalid subject pattern {pattern!r}: {exc}", field="subject_regex") from None
    if compiled.groups < 1:
        raise FerattError(
            f"subject pattern {pattern!r} has no capture group; put the subject part in parentheses, "
            f"e.g. {DEFAULT_SUBJECT_REGEX}",
            field="subject_regex",
        )
    return compiled


def read_folders(root: Path, options: ReaderOptions) -> FaceListing:
    """List faces in `<root>/<class>/<image>` folders, taking subjects from file names."""
    pattern = compile_subject_regex(options.subject_regex)

    def subject_of(stem: str) -> str | None:
        match = pattern.search(stem)
        return match.group(1) if match else None

    return read_class_folders(
        root,
        "folders",
        subject_of,
        f"subject pattern {options.subject_regex!r} did not match the file name",
        {"protocol": "folders", "subject_regex": options.subject_regex},
    )


def _sniff_delimiter(header_line: str) -> str:
    # Spreadsheets in some locales save with ";" or tabs; the header tells which one.
    if "," in header_line:
        return ","
    for delimiter in (";", "\t"):
        if delimiter in header_line:
            return delimiter
    return ","


def read_csv(root: Path, options: ReaderOptions) -> FaceListing:
    """List faces named in a CSV file with columns path, label, subject (paths relative to the CSV)."""
    if not root.exists():
        raise FerattError(f"path not found: {root}")
    if not root.is_file():
        raise FerattError(f"{root} is not a file; format csv reads a .csv file")
    try:
        text = root.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise FerattError(f"cannot read {root}: {exc}") from None
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise FerattError(f"{root}: empty CSV file; required columns: {', '.join(CSV_COLUMNS)}")
    reader = csv.reader(lines, delimiter=_sniff_delimiter(lines[0]))
    header = [name.strip().lower() for name in next(reader)]
    missing = [c for c in CSV_COLUMNS if c not in header]
    if missing:
        raise FerattError(
            f"{root}: missing column(s) {', '.join(missing)}; required columns: {', '.join(CSV_COLUMNS)} "
            f"(found: {', '.join(h for h in header if h) or 'none'})"
        )
    column = {name: header.index(name) for name in CSV_COLUMNS}
    base = root.parent
    skipped: list[Skipped] = []
    found: list[tuple[str, str, str, str]] = []
    seen: dict[str, int] = {}
    for values in reader:
        row = reader.line_num
        if not any(v.strip() for v in values):
            continue
        cells = {name: (values[i].strip() if i < len(values) else "") for name, i in column.items()}
        written, label, subject = cells["path"], cells["label"], cells["subject"]
        empty = [name for name in CSV_COLUMNS if not cells[name]]
        if empty:
            skipped.append(Skipped(f"{root}:{row}", f"row {row}: empty {' and '.join(empty)}"))
            continue
        try:
            cls = canonical_name(label)
        except FerattError as exc:
            raise FerattError(f"{root} row {row}: {exc}") from None
        path = Path(written)
        if not path.is_absolute():
            path = base / path
        source = str(path)
        if source in seen:
            skipped.append(Skipped(source, f"row {row}: same file as row {seen[source]}"))
            continue
        if not path.exists():
            skipped.append(Skipped(source, f"row {row}: file not found"))
            continue
        if not path.is_file() or not is_image_file(path):
            skipped.append(Skipped(source, f"row {row}: not an image file"))
            continue
        seen[source] = row
        found.append((cls, written, source, subject))

    classes = ordered_classes(cls for cls, _, _, _ in found)
    index = {cls: i for i, cls in enumerate(classes)}
    entries = [FaceEntry(source=s, label=index[c], subject=subj, relpath=r) for c, r, s, subj in found]
    listing = FaceListing(
        format="csv",
        root=str(root),
        classes=classes,
        entries=entries,
        skipped=skipped,
        protocol={"protocol": "csv"},
    )
    return finish_listing(listing)
