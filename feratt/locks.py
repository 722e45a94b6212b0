"""One writer per output: advisory file locks that die with the process holding them.

A lock is `fcntl.flock` on a small lock file beside (or inside) what is written; the kernel drops it
when the holder exits, even on kill -9, so no stale lock outlives a crash. The file records the
holder's pid and host for the message a second writer gets. flock may not hold across hosts on
network file systems (NFS before v4, some FUSE mounts): there, run one writer per folder yourself.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from feratt.errors import FerattError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]


class Locked(FerattError):
    """Another process holds the lock; the message names it."""


def lock_path_for(target: str | os.PathLike[str]) -> Path:
    """The lock file of `target`: `.feratt.lock` inside a folder, `.NAME.lock` beside a file (beside the
    file a symbolic link points to, which is what a write through the link replaces)."""
    target = Path(target)
    if target.is_dir():
        return target / ".feratt.lock"
    if target.is_symlink():
        target = Path(os.path.realpath(target))
    return target.with_name(f".{target.name}.lock")


def _holder(handle) -> str:
    handle.seek(0)
    text = "; ".join(line.strip() for line in handle.read().splitlines() if line.strip())
    return text or "an unknown process"


def _try_lock(handle, shared: bool = False) -> bool:
    if fcntl is not None:
        try:
            fcntl.flock(handle.fileno(), (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True
    import msvcrt

    # Windows has no shared lock here: a shared holder excludes every other holder too.
    try:
        msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
    except OSError:
        return False
    return True


READING = "reading"


def _take(handle, shared: bool, role: str = "") -> bool:
    """Take the lock; the first holder replaces the holder lines, a further shared holder adds its own."""
    me = f"pid {os.getpid()} on {socket.gethostname()}{f' {role}' if role else ''}\n"
    if _try_lock(handle):
        handle.seek(0)
        handle.truncate()
        handle.write(me)
        handle.flush()
        # Downgrade to shared; not atomic, so an exclusive taker may slip in between and win.
        return not shared or fcntl is None or _try_lock(handle, shared=True)
    if not shared or fcntl is None or not _shared_soon(handle):
        return False
    handle.seek(0, os.SEEK_END)
    handle.write(me)
    handle.flush()
    return True


#: How long a shared taker waits out another shared taker's moment of exclusive hold (its first line).
_SHARED_WAIT = 1.0


def _shared_soon(handle) -> bool:
    """Take the lock shared, waiting out another shared taker that holds it exclusively for a moment."""
    deadline = time.monotonic() + _SHARED_WAIT
    while not _try_lock(handle, shared=True):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _refusal(handle, what: str, writer: bool = True) -> Locked:
    holder = _holder(handle)
    doing = "read" if holder.endswith(READING) else "written"
    advice = "wait for it to finish" + (", or write elsewhere" if writer else "")
    return Locked(f"{what} is being {doing} by another feratt process ({holder}); {advice}")


@contextlib.contextmanager
def exclusive(
    target: str | os.PathLike[str], what: str | None = None, *, shared: bool = False
) -> Iterator[Path]:
    """Hold the write lock of `target` for the block; FerattError naming the holder if another has it.

    `shared=True` takes a lock that other shared holders may hold too (writers that each touch their
    own part of `target`, such as the parts of one render) while it still excludes every exclusive one.
    """
    target = Path(target)
    path = lock_path_for(target)
    try:
        handle = open(path, "a+")  # noqa: SIM115 - held open for the whole block
    except OSError as exc:
        raise FerattError(f"cannot lock {target}: {exc.strerror or exc}") from None
    with handle:
        if not _take(handle, shared):
            raise _refusal(handle, what or str(target))
        yield path


@contextlib.contextmanager
def reading(target: str | os.PathLike[str], what: str | None = None) -> Iterator[Path | None]:
    """Hold `target`'s lock shared while reading it, so that no exclusive writer replaces it meanwhile.

    Where the lock file cannot be made (a read-only folder, which no writer changes either) the block
    runs without it; a writer holding the lock is refused with its holder named.
    """
    target = Path(target)
    path = lock_path_for(target)
    try:
        handle = open(path, "a+")  # noqa: SIM115 - held open for the whole block
    except OSError:
        yield None
        return
    with handle:
        if not _take(handle, shared=True, role=READING):
            raise _refusal(handle, what or str(target), writer=False)
        yield path
