"""Names read from files (subjects, classes, sources) as file names, and paths kept inside their folder.

A name from a data set or from a file feratt reads is data: it may hold `/`, `..`, a NUL or a leading dot.
`file_name` is the one place such a name becomes part of a path; `inside` checks, after resolving links,
that a path feratt is about to write lies in the folder it writes.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path, PureWindowsPath

from feratt.errors import FerattError

_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_KEEP = re.compile(r"[A-Za-z0-9_-]")
_MAX_NAME = 100  # characters: far below every file system's limit, with room for a suffix


def file_name(name: str) -> str:
    """A file or folder name for `name`: `name` itself when it is safe, else an escaped form.

    Safe: letters, digits, `_`, `-` and `.`, not first, and no `..`. Any other character becomes `%XX`
    (its UTF-8 bytes), so that distinct names keep distinct file names; a long one is cut and gets a hash.
    """
    if _SAFE.fullmatch(name) and ".." not in name and len(name) <= _MAX_NAME:
        return name
    escaped = "".join(char if _KEEP.fullmatch(char) else _percent(char) for char in name)
    if len(escaped) > _MAX_NAME or not escaped:
        digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:16]
        escaped = f"{escaped[: _MAX_NAME - 17]}~{digest}"
    return escaped


def _percent(char: str) -> str:
    return "".join(f"%{byte:02X}" for byte in char.encode("utf-8", "surrogatepass"))


def stays_inside(relative: str) -> bool:
    """Whether a relative path read from a file stays in the folder it is joined to: not absolute, no `..`."""
    if not relative or "\0" in relative:
        return False
    path = PureWindowsPath(relative)  # reads both separators, and drives
    return not path.is_absolute() and not path.drive and not path.root and ".." not in path.parts


def inside(root: str | os.PathLike[str], path: str | os.PathLike[str], what: str = "") -> Path:
    """`path`, once checked to lie inside `root` after resolving links; a FerattError otherwise."""
    root, path = Path(root), Path(path)
    resolved_root = root.resolve()
    resolved = path.resolve()
    if resolved != resolved_root and resolved_root not in resolved.parents:
        name = what or str(path)
        raise FerattError(
            f"{name} would be written to {resolved}, outside {root} (a link or a name leads out of it)"
        )
    return path
