"""A child process that holds a feratt write lock, for tests of second writers."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def held_by_child(target: Path, shared: bool = False) -> Iterator[int]:
    """A child process holding the lock of `target` for the block; yields its pid."""
    ready = target.parent / f"{target.name}.ready"
    code = textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        from feratt.locks import exclusive
        with exclusive({str(target)!r}, shared={shared!r}):
            Path({str(ready)!r}).write_text("held")
            time.sleep(120)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert child.poll() is None, "the child died before taking the lock"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        yield child.pid
    finally:
        child.kill()
        child.wait()
        ready.unlink(missing_ok=True)
