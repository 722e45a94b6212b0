"""Readers for CK+ as distributed (sequences with emotion files) and for CK+ crops in class folders."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from feratt.artifacts.bank import Skipped
from feratt.datasets.classes import CANONICAL_CLASSES
from feratt.datasets.generic import finish_listing, read_class_folders, require_folder, visible_children
from feratt.datasets.imageio import is_image_file
from feratt.datasets.records import FaceEntry, FaceListing, ReaderOptions
from feratt.errors import BadInputFile, FerattError

#: The codes a CK+ emotion file holds, and the classes they stand for.
CKPLUS_EMOTION_CODES: dict[int, str] = {
    0: "neutral",
    1: "anger",
    2: "contempt",
    3: "disgust",
    4: "fear",
    5: "happy",
    6: "sadness",
    7: "surprise",
}

IMAGES_DIR = "cohn-kanade-images"
EMOTION_DIR = "Emotion"
LANDMARKS_DIR = "Landmarks"
EMOTION_SUFFIX = "_emotion.txt"
LANDMARKS_SUFFIX = "_landmarks.txt"

#: A CK+ frame name: subject, sequence, frame number (S010_004_00000017).
CKPLUS_FRAME_NAME = re.compile(r"(S\d{3})_(\d{3})_(\d{8})")

_VALID_CODES = ", ".join(f"{code} {name}" for code, name in CKPLUS_EMOTION_CODES.items())


@dataclass
class _Sequence:
    subject: str
    name: str
    frames: list[Path] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.subject}/{self.name}"


def _read_emotion_code(path: Path) -> int:
    """The emotion code in a CK+ emotion file; BadInputFile if unreadable, FerattError if not a code."""
    try:
        text = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInputFile(str(path), f"cannot read emotion file: {exc}") from None
    if not text:
        raise BadInputFile(str(path), "empty emotion file")
    try:
        value = float(text)
    except ValueError:
        raise BadInputFile(str(path), f"emotion file does not hold one number: {text[:40]!r}") from None
    if not math.isfinite(value):
        raise BadInputFile(str(path), f"emotion file holds {text!r}, not a number")
    if value != int(value) or int(value) not in CKPLUS_EMOTION_CODES:
        raise FerattError(f"{path}: emotion code {text} is not a CK+ code; valid codes: {_VALID_CODES}")
    return int(value)


def _sequence_folders(folder: Path, skipped: list[Skipped]) -> Iterator[tuple[str, str, Path]]:
    """Subject, sequence name and path of every `<folder>/<subject>/<sequence>/` folder."""
    for subject_dir in visible_children(folder, skipped):
        if subject_dir.is_dir():
            for seq_dir in visible_children(subject_dir, skipped):
                if seq_dir.is_dir():
                    yield subject_dir.name, seq_dir.name, seq_dir


def _list_sequences(images: Path, skipped: list[Skipped]) -> dict[str, _Sequence]:
    sequences: dict[str, _Sequence] = {}
    for subject, name, seq_dir in _sequence_folders(images, skipped):
        seq = _Sequence(subject, name)
        seq.frames = [p for p in visible_children(seq_dir, skipped) if p.is_file() and is_image_file(p)]
        sequences[seq.key] = seq
    return sequences


def _list_emotion_files(emotion: Path, skipped: list[Skipped]) -> dict[str, list[Path]]:
    files: dict[str, list[Path]] = {}
    for subject, name, seq_dir in _sequence_folders(emotion, skipped):
        found = [p for p in visible_children(seq_dir, skipped) if p.name.lower().endswith(EMOTION_SUFFIX)]
        if found:
            files[f"{subject}/{name}"] = found
    return files


def _choose_neutral_sequences(
    sequences: dict[str, _Sequence], count: int, seed: int
) -> tuple[list[_Sequence], int]:
    """Pick `count` subjects at random, then one random sequence of each; return them and the pool size."""
    by_subject: dict[str, list[_Sequence]] = {}
    for key in sorted(sequences):
        seq = sequences[key]
        if seq.frames:
            by_subject.setdefault(seq.subject, []).append(seq)
    subjects = sorted(by_subject)
    rng = np.random.default_rng(seed)
    if count >= len(subjects):
        chosen = list(range(len(subjects)))
    else:
        chosen = sorted(int(i) for i in rng.choice(len(subjects), size=count, replace=False))
    picks = []
    for i in chosen:
        options = by_subject[subjects[i]]
        picks.append(options[int(rng.integers(len(options)))])
    return picks, len(subjects)


def _entry(root: Path, seq: _Sequence, frame: Path, label: int) -> FaceEntry:
    landmarks = root / LANDMARKS_DIR / seq.subject / seq.name / f"{frame.stem}{LANDMARKS_SUFFIX}"
    return FaceEntry(
        source=str(frame),
        label=label,
        subject=seq.subject,
        relpath=f"{IMAGES_DIR}/{seq.subject}/{seq.name}/{frame.name}",
        landmarks=str(landmarks) if landmarks.is_file() else None,
    )


def _check_ckplus(root: Path, options: ReaderOptions) -> None:
    require_folder(root, "ckplus")
    for name in (IMAGES_DIR, EMOTION_DIR):
        if not (root / name).is_dir():
            raise FerattError(f"{root} is not a CK+ folder: it has no {name}/ folder")
    if options.last_frames < 1:
        raise FerattError(
            f"the number of frames per sequence must be at least 1, got {options.last_frames}",
            field="last_frames",
        )
    if options.neutral_subjects < 0:
        raise FerattError(
            f"the number of neutral subjects must be 0 or more, got {options.neutral_subjects}",
            field="neutral_subjects",
        )


def _peak_frames(
    key: str, path: Path, seq: _Sequence | None, index: dict[str, int], last_frames: int
) -> tuple[int, list[Path]]:
    """The label and frames of one labelled sequence: up to `last_frames` ending at the peak frame.

    BadInputFile when the sequence cannot be used.
    """
    if seq is None or not seq.frames:
        raise BadInputFile(str(path), f"sequence {key} has no frames in {IMAGES_DIR}/")
    cls = CKPLUS_EMOTION_CODES[_read_emotion_code(path)]
    if cls not in index:
        raise BadInputFile(str(path), "emotion code 0 (neutral), but the neutral class is excluded")
    peak_stem = path.name[: -len(EMOTION_SUFFIX)]
    stems = [frame.stem for frame in seq.frames]
    if peak_stem not in stems:
        raise BadInputFile(str(path), f"names frame {peak_stem}, which is not in {IMAGES_DIR}/{key}/")
    peak = stems.index(peak_stem)
    # The first frame of a CK+ sequence is neutral, so an expression window never reaches back to it.
    start = max(peak - last_frames + 1, 1 if peak > 0 else 0)
    return index[cls], seq.frames[start : peak + 1]


def _labelled_entries(
    root: Path,
    sequences: dict[str, _Sequence],
    emotion_files: dict[str, list[Path]],
    index: dict[str, int],
    last_frames: int,
    skipped: list[Skipped],
) -> tuple[list[FaceEntry], int]:
    """The frames of every usable labelled sequence, and how many sequences gave fewer than asked."""
    entries: list[FaceEntry] = []
    shortened = 0
    for key in sorted(emotion_files):
        files = emotion_files[key]
        if len(files) > 1:
            skipped.extend(
                Skipped(str(path), f"sequence {key} has {len(files)} emotion files") for path in files
            )
            continue
        try:
            label, frames = _peak_frames(key, files[0], sequences.get(key), index, last_frames)
        except BadInputFile as exc:
            skipped.append(Skipped(exc.path, exc.reason))
            continue
        shortened += len(frames) < last_frames
        seq = sequences[key]
        entries.extend(_entry(root, seq, frame, label) for frame in frames)
    return entries, shortened


def _sequence_notes(
    sequences: dict[str, _Sequence], emotion_files: dict[str, list[Path]], shortened: int, last_frames: int
) -> list[str]:
    notes = []
    unlabelled = sum(1 for key, seq in sequences.items() if seq.frames and key not in emotion_files)
    if unlabelled:
        notes.append(f"{unlabelled} sequences without an emotion file (unlabelled), not used")
    no_frames = sum(1 for key, seq in sequences.items() if not seq.frames and key not in emotion_files)
    if no_frames:
        notes.append(f"{no_frames} sequence folders in {IMAGES_DIR}/ hold no frames")
    if shortened:
        notes.append(
            f"{shortened} labelled sequences have fewer than {last_frames} frames between the first "
            "frame and the peak; they gave fewer frames"
        )
    return notes


def _neutral_entries(
    root: Path,
    sequences: dict[str, _Sequence],
    labelled: list[FaceEntry],
    label: int,
    options: ReaderOptions,
    notes: list[str],
) -> tuple[list[FaceEntry], list[str]]:
    """The first frames of one random sequence of each randomly chosen subject, and those sequences."""
    picks, pool = _choose_neutral_sequences(sequences, options.neutral_subjects, options.seed)
    if pool < options.neutral_subjects:
        notes.append(
            f"only {pool} subjects have frames, fewer than the {options.neutral_subjects} asked for "
            "the neutral class; took one sequence of each"
        )
    used = {entry.source for entry in labelled}
    kept = [seq for seq in picks if str(seq.frames[0]) not in used]
    clashes = len(picks) - len(kept)
    if clashes:
        notes.append(
            f"{clashes} neutral picks left out: their first frame is also a labelled sequence's peak"
        )
    return [_entry(root, seq, seq.frames[0], label) for seq in kept], [seq.key for seq in kept]


def read_ckplus(root: Path, options: ReaderOptions) -> FaceListing:
    """List CK+ by the paper's protocol: peak frame(s) of labelled sequences plus random neutral frames."""
    _check_ckplus(root, options)
    classes = CANONICAL_CLASSES if options.include_neutral else CANONICAL_CLASSES[1:]
    index = {cls: i for i, cls in enumerate(classes)}
    skipped: list[Skipped] = []
    sequences = _list_sequences(root / IMAGES_DIR, skipped)
    emotion_files = _list_emotion_files(root / EMOTION_DIR, skipped)
    entries, shortened = _labelled_entries(
        root, sequences, emotion_files, index, options.last_frames, skipped
    )
    notes = _sequence_notes(sequences, emotion_files, shortened, options.last_frames)
    neutral_keys: list[str] = []
    if options.include_neutral:
        neutral, neutral_keys = _neutral_entries(root, sequences, entries, index["neutral"], options, notes)
        entries.extend(neutral)
    protocol = {
        "protocol": f"ckplus-{len(classes)}",
        "last_frames": options.last_frames,
        "include_neutral": options.include_neutral,
        "neutral_subjects": options.neutral_subjects if options.include_neutral else 0,
        "seed": options.seed,
        "neutral_sequences": sorted(neutral_keys),
    }
    listing = FaceListing("ckplus", str(root), tuple(classes), entries, skipped, protocol, notes)
    return finish_listing(listing)


def _ckplus_subject(stem: str) -> str | None:
    match = CKPLUS_FRAME_NAME.fullmatch(stem)
    return match.group(1) if match else None


def read_ckplus_folders(root: Path, options: ReaderOptions) -> FaceListing:
    """List CK+ crops sorted into class folders (`<root>/<class>/S010_004_00000017.png`, as CK+48)."""
    return read_class_folders(
        root,
        "ckplus-folders",
        _ckplus_subject,
        "name does not match S###_###_########",
        {"protocol": "ckplus-folders"},
    )
