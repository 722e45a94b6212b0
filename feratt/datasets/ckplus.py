"""Readers for CK+ as distributed (sequences with emotion files) and for CK+ crops in class folders."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from feratt.datasets.classes import CANONICAL_CLASSES
from feratt.datasets.generic import finish_listing, read_class_folders, require_folder, visible_children
from feratt.datasets.imageio import is_image_file
from feratt.datasets.records import FaceEntry, FaceListing, ReaderOptions, Skipped
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


def _list_sequences(images: Path, skipped: list[Skipped]) -> dict[str, _Sequence]:
    sequences: dict[str, _Sequence] = {}
    for subject_dir in visible_children(images, skipped):
        if not subject_dir.is_dir():
            continue
        for seq_dir in visible_children(subject_dir, skipped):
            if not seq_dir.is_dir():
                continue
            seq = _Sequence(subject_dir.name, seq_dir.name)
            seq.frames = [p for p in visible_children(seq_dir, skipped) if p.is_file() and is_image_file(p)]
            sequences[seq.key] = seq
    return sequences


def _list_emotion_files(emotion: Path, skipped: list[Skipped]) -> dict[str, list[Path]]:
    files: dict[str, list[Path]] = {}
    for subject_dir in visible_children(emotion, skipped):
        if not subject_dir.is_dir():
            continue
        for seq_dir in visible_children(subject_dir, skipped):
            if not seq_dir.is_dir():
                continue
            found = [p for p in visible_children(seq_dir, skipped) if p.name.lower().endswith(EMOTION_SUFFIX)]
            if found:
                files[f"{subject_dir.name}/{seq_dir.name}"] = found
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


def read_ckplus(root: Path, options: ReaderOptions) -> FaceListing:
    """List CK+ by the paper's protocol: peak frame(s) of labelled sequences plus random neutral frames."""
    require_folder(root, "ckplus")
    for name in (IMAGES_DIR, EMOTION_DIR):
        if not (root / name).is_dir():
            raise FerattError(f"{root} is not a CK+ folder: it has no {name}/ folder")
    if options.last_frames < 1:
        raise FerattError(f"last_frames must be at least 1, got {options.last_frames}")
    if options.neutral_subjects < 0:
        raise FerattError(f"neutral_subjects must be 0 or more, got {options.neutral_subjects}")

    classes = CANONICAL_CLASSES if options.include_neutral else CANONICAL_CLASSES[1:]
    index = {cls: i for i, cls in enumerate(classes)}
    skipped: list[Skipped] = []
    notes: list[str] = []
    entries: list[FaceEntry] = []
    sequences = _list_sequences(root / IMAGES_DIR, skipped)
    emotion_files = _list_emotion_files(root / EMOTION_DIR, skipped)

    shortened = 0
    for key in sorted(emotion_files):
        files = emotion_files[key]
        if len(files) > 1:
            for path in files:
                skipped.append(Skipped(str(path), f"sequence {key} has {len(files)} emotion files"))
            continue
        path = files[0]
        seq = sequences.get(key)
        if seq is None or not seq.frames:
            skipped.append(Skipped(str(path), f"sequence {key} has no frames in {IMAGES_DIR}/"))
            continue
        try:
            code = _read_emotion_code(path)
        except BadInputFile as exc:
            skipped.append(Skipped(exc.path, exc.reason))
            continue
        cls = CKPLUS_EMOTION_CODES[code]
        if cls not in index:
            skipped.append(Skipped(str(path), "emotion code 0 (neutral), but the neutral class is excluded"))
            continue
        peak_stem = path.name[: -len(EMOTION_SUFFIX)]
        stems = [frame.stem for frame in seq.frames]
        if peak_stem not in stems:
            skipped.append(
                Skipped(str(path), f"names frame {peak_stem}, which is not in {IMAGES_DIR}/{key}/")
            )
            continue
        peak = stems.index(peak_stem)
        # The first frame of a CK+ sequence is neutral, so an expression window never reaches back to it.
        start = max(peak - options.last_frames + 1, 1 if peak > 0 else 0)
        if peak + 1 - start < options.last_frames:
            shortened += 1
        entries.extend(_entry(root, seq, frame, index[cls]) for frame in seq.frames[start : peak + 1])

    unlabelled = sum(1 for key, seq in sequences.items() if seq.frames and key not in emotion_files)
    if unlabelled:
        notes.append(f"{unlabelled} sequences without an emotion file (unlabelled), not used")
    no_frames = sum(1 for key, seq in sequences.items() if not seq.frames and key not in emotion_files)
    if no_frames:
        notes.append(f"{no_frames} sequence folders in {IMAGES_DIR}/ hold no frames")
    if shortened:
        notes.append(
            f"{shortened} labelled sequences have fewer than {options.last_frames} frames between the first "
            "frame and the peak; they gave fewer frames"
        )

    neutral_keys: list[str] = []
    if options.include_neutral:
        picks, pool = _choose_neutral_sequences(sequences, options.neutral_subjects, options.seed)
        if pool < options.neutral_subjects:
            notes.append(
                f"only {pool} subjects have frames, fewer than the {options.neutral_subjects} asked for "
                "the neutral class; took one sequence of each"
            )
        used = {entry.source for entry in entries}
        clashes = 0
        for seq in picks:
            frame = seq.frames[0]
            if str(frame) in used:
                clashes += 1
                continue
            entries.append(_entry(root, seq, frame, index["neutral"]))
            neutral_keys.append(seq.key)
        if clashes:
            notes.append(
                f"{clashes} neutral picks left out: their first frame is also a labelled sequence's peak"
            )

    listing = FaceListing(
        format="ckplus",
        root=str(root),
        classes=tuple(classes),
        entries=entries,
        skipped=skipped,
        protocol={
            "protocol": f"ckplus-{len(classes)}",
            "last_frames": options.last_frames,
            "include_neutral": options.include_neutral,
            "neutral_subjects": options.neutral_subjects if options.include_neutral else 0,
            "seed": options.seed,
            "neutral_sequences": sorted(neutral_keys),
        },
        notes=notes,
    )
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
