"""Atomic file writes: write to a temporary name beside the target, then rename."""

from __future__ import annotations

import contextlib
import glob
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `target` that replaces it only if the block succeeds."""
    target = Path(target)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=".tmp" + target.suffix, dir=target.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
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
    target = Path(target)
    if target.is_dir():
        raise IsADirectoryError(f"{target} is a folder")
    parent = target.parent
    if not parent.is_dir():
        raise FileNotFoundError(f"folder {parent} does not exist")
    with tempfile.NamedTemporaryFile(dir=parent, prefix=".feratt-write-check."):
        pass


def remove_temporaries(target: str | os.PathLike[str]) -> list[Path]:
    """Remove what killed atomic writes of `target` left beside it; call only under its write lock."""
    target = Path(target)
    removed = []
    for path in sorted(target.parent.glob(f".{glob.escape(target.name)}.*.tmp*")):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path)
    return removed
