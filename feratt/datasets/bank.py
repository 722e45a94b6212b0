"""The face-bank stage as one call: list a data set, cut out every face, write the bank and a preview."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar

from feratt.artifacts.bank import BankHeader, FaceBank, Skipped, safe_text, write_bank
from feratt.atomic import atomic_write_bytes, check_writable, remove_temporaries
from feratt.datasets.demo import DEMO_SOURCE
from feratt.datasets.faces import MASK_CHOICES, BankOptions, FaceResult, build_faces
from feratt.datasets.generic import DEFAULT_SUBJECT_REGEX
from feratt.datasets.landmarks import describe as describe_landmarks
from feratt.datasets.landmarks import require_landmarks
from feratt.datasets.records import FaceListing, ReaderOptions
from feratt.datasets.sources import list_faces
from feratt.errors import FerattError
from feratt.locks import exclusive
from feratt.progress import Log, Progress, no_log
from feratt.requests import check_fields, check_jobs, check_seed, request_from

__all__ = ["BankRequest", "BankResult", "build_bank", "ensure_demo_bank"]

_MAX_WARNINGS = 50  # decoder warnings listed among a bank's notes; the rest are counted

OptionsT = TypeVar("OptionsT")


@dataclass(frozen=True)
class BankRequest:
    """What `build_bank` reads, how it cuts out the faces, and where it writes the bank."""

    source: str | os.PathLike[str]
    out: str | os.PathLike[str]
    format: str = "auto"
    size: int = 160
    margin: float = 0.2
    masks_root: str | os.PathLike[str] | None = None
    forehead: float = 0.0
    seed: int = 0
    neutral_subjects: int = 33
    last_frames: int = 1
    include_neutral: bool = True
    bu_intensity: int = 4
    subject_regex: str = DEFAULT_SUBJECT_REGEX
    demo_subjects: int = 24
    demo_per_class: int = 2
    jobs: int = -1
    min_side: int = 32
    mask_method: str = "auto"  # auto, landmarks, grabcut or ellipse; see feratt.datasets.faces
    preview: str | os.PathLike[str] | None = None
    overwrite: bool = False  # replace an existing file at `out` (or `preview`) that is not this bank

    def __post_init__(self) -> None:
        check_fields(self)
        if not 32 <= self.size <= 1024:
            raise FerattError(f"the face size must be 32 to 1024 pixels, got {self.size}", field="size")
        if not 0 <= self.margin <= 2:
            raise FerattError(f"the margin must be 0 to 2, got {self.margin}", field="margin")
        if not 0 <= self.forehead <= 1:
            raise FerattError(f"the forehead raise must be 0 to 1, got {self.forehead}", field="forehead")
        if self.min_side < 1:
            raise FerattError(
                f"the minimum image side must be at least 1 pixel, got {self.min_side}", field="min_side"
            )
        if self.mask_method not in MASK_CHOICES:
            choices = ", ".join(MASK_CHOICES)
            raise FerattError(
                f"the mask method must be one of {choices}, not {self.mask_method!r}", field="mask_method"
            )
        if self.mask_method == "landmarks":
            require_landmarks("--mask-method landmarks", "mask_method")
        check_jobs(self.jobs)
        check_seed(self.seed)

    def reader_options(self) -> ReaderOptions:
        """The options the data set readers take."""
        return _subset(ReaderOptions, self)

    def bank_options(self) -> BankOptions:
        """The options that cut out the faces."""
        options = _subset(BankOptions, self)
        return options if self.masks_root is None else replace(options, masks_root=os.fspath(self.masks_root))


def _subset(cls: type[OptionsT], request: BankRequest) -> OptionsT:
    """A stage's options dataclass `cls` with each of its fields taken from the request's same field."""
    return cls(**{field.name: getattr(request, field.name) for field in fields(cls)})


def _check_request(request: BankRequest) -> None:
    """Fail before any work if the masks folder is missing or the bank or preview cannot be written."""
    if request.masks_root is not None and not Path(request.masks_root).is_dir():
        raise FerattError(f"masks folder {request.masks_root} does not exist", field="masks_root")
    for name in ("out", "preview"):
        path = getattr(request, name)
        if path is not None:
            try:
                check_writable(path)
            except OSError as exc:
                raise FerattError(f"cannot write {os.fspath(path)}: {exc}", field=name) from None


@dataclass(frozen=True)
class BankResult:
    """A written face bank: its path, source, faces per class, subject and mask method, and skipped files."""

    path: Path
    format: str
    root: str
    classes: tuple[str, ...]
    per_class: dict[str, int]
    per_subject: dict[str, int]
    per_method: dict[str, int]
    conversions: dict[str, int]
    skipped: list[Skipped]
    notes: list[str]
    checksum: str
    preview: Path | None = None

    @property
    def total(self) -> int:
        """The number of faces in the bank."""
        return sum(self.per_class.values())


def _count(counts: dict[str, int], key: str) -> None:
    counts[key] = counts.get(key, 0) + 1


@dataclass
class _Tally:
    """What has gone into a bank being written: counts, skipped files and notes."""

    listing: FaceListing
    skipped: list[Skipped]
    per_class: dict[str, int]
    notes: list[str] = field(default_factory=list)
    warned: int = 0
    per_subject: dict[str, int] = field(default_factory=dict)
    per_method: dict[str, int] = field(default_factory=dict)
    conversions: dict[str, int] = field(default_factory=dict)

    @classmethod
    def start(cls, listing: FaceListing) -> _Tally:
        skipped = [skipped.safe() for skipped in listing.skipped]
        return cls(listing, skipped, dict.fromkeys(listing.classes, 0), list(listing.notes))

    def add(self, result: FaceResult) -> None:
        self.skipped.extend(skipped.safe() for skipped in result.skipped)
        kept = max(0, _MAX_WARNINGS - self.warned)  # past _MAX_WARNINGS decoder warnings, only count them
        self.notes.extend(map(safe_text, result.notes[:kept]))
        self.warned += len(result.notes)
        face = result.face
        if face is None:
            return
        self.per_class[self.listing.classes[face.label]] += 1
        _count(self.per_subject, face.subject)
        _count(self.per_method, face.method)
        if face.conversion:
            _count(self.conversions, face.conversion)

    def all_notes(self) -> list[str]:
        if self.warned > _MAX_WARNINGS:
            return [*self.notes, f"decoder warnings not listed: {self.warned - _MAX_WARNINGS}"]
        return self.notes

    def result(self, path: Path, checksum: str) -> BankResult:
        return BankResult(
            path=path,
            format=self.listing.format,
            root=self.listing.root,
            classes=self.listing.classes,
            per_class=self.per_class,
            per_subject=dict(sorted(self.per_subject.items())),
            per_method=dict(sorted(self.per_method.items())),
            conversions=self.conversions,
            skipped=self.skipped,
            notes=self.all_notes(),
            checksum=checksum,
        )


def bank_header(listing: FaceListing, options: BankOptions) -> BankHeader:
    """What a bank of `listing`'s faces, cut out with `options`, records besides its faces."""
    return BankHeader(
        format=listing.format,
        source=safe_text(listing.root),
        classes=listing.classes,
        face_size=options.size,
        margin=options.margin,
        forehead=options.forehead,
        masks_root=safe_text(options.masks_root or ""),
        seed=options.seed,
        protocol=json.dumps(listing.protocol, sort_keys=True),
        mask_method=options.mask_method,
    )


def write_faces(
    path: str | os.PathLike[str], listing: FaceListing, results: Iterable[FaceResult], options: BankOptions
) -> BankResult:
    """Write processed faces to a face bank at `path`, atomically; what went into it."""
    path = Path(path)
    tally = _Tally.start(listing)
    try:
        with write_bank(path, bank_header(listing, options)) as writer:
            for result in results:
                tally.add(result)
                if result.face is not None:
                    writer.add(result.face)
            if len(writer) == 0:
                raise FerattError(f"none of the {len(listing.entries)} faces in {listing.root} could be read")
            checksum = writer.finish(tally.skipped, tally.all_notes())
    finally:
        close = getattr(results, "close", None)
        if close is not None:
            close()  # stop the workers of an abandoned build
    return tally.result(path, checksum)


def _check_outputs(request: BankRequest, listing: FaceListing) -> None:
    """Refuse a bank or preview path that is one of the inputs or lies in the source tree, and an existing
    file there unless it is a bank of the same source and settings (rebuilt) or `overwrite` is given."""
    source = Path(request.source) if request.source != DEMO_SOURCE else None
    trees = [path for path in (source, request.masks_root) if path is not None and Path(path).is_dir()]
    inputs = {Path(entry.source).resolve() for entry in listing.entries}
    inputs |= {Path(entry.landmarks).resolve() for entry in listing.entries if entry.landmarks}
    if source is not None and source.is_file():
        inputs.add(source.resolve())
    rebuilt = _same_bank(Path(request.out), bank_header(listing, request.bank_options()))
    for name in ("out", "preview"):
        path = getattr(request, name)
        if path is None:
            continue
        resolved, shown = Path(path).resolve(), os.fspath(path)
        if resolved in inputs:
            raise FerattError(f"{shown} is one of the inputs: write the {name} elsewhere", field=name)
        tree = next((Path(t) for t in trees if Path(t).resolve() in resolved.parents), None)
        if tree is not None:
            message = f"{shown} lies in the source tree {tree}: write the {name} elsewhere"
            raise FerattError(message, field=name)
        if Path(path).exists() and not rebuilt and not request.overwrite:
            what = "face bank of another source or settings" if _is_bank(Path(path)) else "file"
            raise FerattError(
                f"{os.fspath(path)} exists already (a {what}); overwrite replaces it, or write elsewhere",
                field="overwrite",
            )


def _is_bank(path: Path) -> bool:
    try:
        FaceBank.open(path, verify=False)
    except FerattError:
        return False
    return True


def _same_bank(path: Path, header: BankHeader) -> bool:
    """Whether `path` holds a bank of the same source and settings as `header` (a rerun rebuilds it)."""
    try:
        theirs = FaceBank.open(path, verify=False).header
    except FerattError:
        return False
    keep = ("feratt_version", "notes")
    return replace(theirs, **{k: getattr(header, k) for k in keep}) == header


def write_preview(bank: str | os.PathLike[str], sheet: str | os.PathLike[str]) -> None:
    """Write a contact sheet of `bank`, a row per class, as a PNG at `sheet`."""
    from feratt.datasets.preview import contact_sheet, encode_png

    atomic_write_bytes(sheet, encode_png(contact_sheet(FaceBank.open(bank, verify=False))))


def build_bank(
    request: BankRequest | None = None,
    /,
    *,
    progress: Progress | None = None,
    log: Log | None = None,
    **fields: Any,
) -> BankResult:
    """Read a face data set (or builtin:demo), mask and crop every face, and write a face bank."""
    request = request_from(BankRequest, request, fields)
    log = log or no_log
    _check_request(request)
    listing = list_faces(os.fspath(request.source), request.format, request.reader_options())
    if request.format == "auto":
        log(f"detected format: {listing.format}")
    log(f"{len(listing.entries)} faces listed in {safe_text(listing.root)} ({len(listing.classes)} classes)")
    if request.mask_method in ("auto", "landmarks"):
        log(describe_landmarks())
    out = Path(request.out)
    _check_outputs(request, listing)
    with exclusive(out, what=f"face bank {out}"):
        _check_outputs(request, listing)  # again, now that no other writer can change them
        removed = remove_temporaries(out)
        if removed:
            files = "file" if len(removed) == 1 else "files"
            log(f"removed {len(removed)} temporary {files} an interrupted run left beside {out}")
        options = request.bank_options()
        results = build_faces(listing, options, jobs=request.jobs, progress=progress)
        result = write_faces(out, listing, results, options)
        if request.preview is None:
            return result
        write_preview(out, request.preview)
    return replace(result, preview=Path(request.preview))


def ensure_demo_bank(path: Path, seed: int = 0, jobs: int = -1) -> Path:
    """Build the default demo face bank at `path` unless a valid one is already there."""
    if path.is_file():
        try:
            FaceBank.open(path)
            return path
        except FerattError:
            pass
    path.parent.mkdir(parents=True, exist_ok=True)
    build_bank(source=DEMO_SOURCE, out=path, seed=seed, jobs=jobs, overwrite=True)  # a broken cache goes
    return path
