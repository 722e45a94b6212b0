"""Output folders: feratt writes only into a folder that is new, empty, or marked as its own of that kind.

Each stage that writes a folder (render, run, experiment, noise, embed) claims it first. A claimed folder
holds a marker, `.feratt-folder.json`, that names its kind. A folder feratt wrote before markers existed
is recognised by its stage's own file (render.json, folds.json, ...) and marked then. Any other folder
that holds files is a user's: it is refused, unless the caller overwrites, and then only feratt's own
files in it are replaced.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from feratt import __version__
from feratt.errors import FerattError
from feratt.jsonfile import read_json, write_json

MARKER = ".feratt-folder.json"
MARKER_KIND = "feratt-folder"
#: Each kind of output folder, and the files that mark a folder its stage wrote before markers existed.
KINDS: dict[str, tuple[str, ...]] = {
    "render": ("render.json",),
    "run": ("folds.json",),
    "experiment": ("experiment.json",),
    "noise": ("noise.json",),
    "embed": ("embed.json",),
}
#: Kinds whose folder holds one run's results, which a second run replaces only when told to overwrite.
RESULT_KINDS = ("noise", "embed")
#: Names feratt itself leaves in any folder it writes: its lock, its marker, its write check and the
#: temporaries of an interrupted atomic write.
_OWN = re.compile(r"\.feratt[.-].*|\..+\.tmp.*")


def folder_kind(path: str | os.PathLike[str]) -> str | None:
    """The kind the folder's marker names; None when it has no marker."""
    marker = Path(path) / MARKER
    if not marker.is_file():
        return None
    payload = read_json(marker)
    kind = payload.get("kind") if isinstance(payload, dict) else None
    folder = payload.get("folder") if isinstance(payload, dict) else None
    if kind != MARKER_KIND or folder not in KINDS:
        raise FerattError(f"{marker} is not a feratt folder marker")
    return folder


def foreign_entries(path: str | os.PathLike[str]) -> list[str]:
    """The names in a folder that feratt did not leave there itself, sorted."""
    folder = Path(path)
    if not folder.is_dir():
        return []
    return sorted(entry.name for entry in folder.iterdir() if not _OWN.fullmatch(entry.name))


def check_output(path: str | os.PathLike[str], kind: str, *, overwrite: bool, field: str = "out") -> None:
    """Refuse `path` as a `kind` output folder: a file, a folder of another kind, or a user's folder
    (one holding files feratt did not write) unless `overwrite`; the earlier results of a result kind
    unless `overwrite`."""
    if kind not in KINDS:
        raise ValueError(f"unknown output folder kind {kind!r}")
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise FerattError(f"{folder} is a file, not a folder: give a folder for the {kind}", field=field)
    marked = folder_kind(folder)
    legacy = [name for name in KINDS[kind] if (folder / name).is_file()]
    if legacy and kind in RESULT_KINDS and not overwrite:
        raise FerattError(
            f"{folder} holds the results of an earlier {kind} run ({legacy[0]}); overwrite replaces "
            "them, or write elsewhere",
            field="overwrite",
        )
    if marked == kind:
        return
    if marked is not None:
        raise FerattError(
            f"{folder} is a feratt {marked} folder, not {_an(kind)} folder: write the {kind} elsewhere",
            field=field,
        )
    foreign = foreign_entries(folder)
    if foreign and not legacy and not overwrite:
        listed = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise FerattError(
            f"{folder} holds files feratt did not write ({listed}); write the {kind} to a new or empty "
            "folder, or overwrite to write into it (only feratt's own files there are replaced)",
            field="overwrite",
        )


def _an(word: str) -> str:
    return f"{'an' if word[0] in 'aeiou' else 'a'} {word}"


def claim_output(path: str | os.PathLike[str], kind: str, *, overwrite: bool, field: str = "out") -> Path:
    """`path` checked as a `kind` output folder (see check_output), created if need be, and marked."""
    check_output(path, kind, overwrite=overwrite, field=field)
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    if folder_kind(folder) is None:
        write_json(folder / MARKER, {"kind": MARKER_KIND, "folder": kind, "feratt_version": __version__})
    return folder
