"""Atomic file writes: write to a temporary name beside the target, then rename.

A target that is a symbolic link is written through: the file the link points to is replaced (its
temporary file lies beside that file), and the link stays a link.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def real_target(target: str | os.PathLike[str]) -> Path:
    """The file a write to `target` replaces: `target`, or the file it links to if it is a symbolic link."""
    target = Path(target)
    return Path(os.path.realpath(target)) if target.is_symlink() else target


#: What HDF5 says of a failed write, errno and all, where Python's OSError has no errno.
_HDF5_ERRNO = re.compile(r"errno = (\d+)")


def naming(
    exc: OSError, target: str | os.PathLike[str], tmp: str | os.PathLike[str] | None = None
) -> OSError:
    """`exc` as an OSError naming `target`, where it names no file or only the temporary file `tmp`; its
    reason one line (HDF5's several-line reports become the errno's text)."""
    if exc.filename is not None and (tmp is None or os.fspath(exc.filename) != os.fspath(tmp)):
        return exc
    found = _HDF5_ERRNO.search(str(exc.strerror or exc))
    if found:
        code = int(found.group(1))
        return OSError(code, os.strerror(code), os.fspath(target))
    reason = exc.strerror or (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return OSError(exc.errno, reason, os.fspath(target))


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `target` that replaces it only if the block succeeds.

    An OSError in the block that names no file, or only the temporary one, is raised naming `target`.
    """
    named = Path(target)
    target = real_target(named)
    try:
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{target.name}.", suffix=".tmp" + target.suffix, dir=target.parent
        )
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, os.fspath(named)) from exc
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        try:
            yield tmp
        except OSError as exc:
            error = naming(exc, named, tmp)
            if error is exc:
                raise
            raise error from exc
        # mkstemp creates 0600 files; give the result the permissions any new file would get.
        os.chmod(tmp, 0o666 & ~_current_umask())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(target: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` to `target` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def check_writable(target: str | os.PathLike[str]) -> None:
    """Raise OSError unless a file can be created at `target` (its folder exists and is writable)."""
    target = real_target(target)
    if target.is_dir():
        raise IsADirectoryError(f"{target} is a folder")
    parent = target.parent
    if not parent.is_dir():
        raise FileNotFoundError(f"folder {parent} does not exist")
    with tempfile.NamedTemporaryFile(dir=parent, prefix=".feratt-write-check."):
        pass


def remove_temporaries(target: str | os.PathLike[str]) -> list[Path]:
    """Remove what killed atomic writes of `target` left beside it; call only under its write lock."""
    target = real_target(target)
    removed = []
    for path in sorted(target.parent.glob(f".{glob.escape(target.name)}.*.tmp*")):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path)
    return removed
