"""One writer per output: a second writer is refused with the holder named; a killed holder frees it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from feratt.errors import FerattError
from feratt.locks import exclusive, lock_path_for


def _hold_in_child(target, ready):
    code = textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        from feratt.locks import exclusive
        with exclusive({str(target)!r}):
            Path({str(ready)!r}).write_text("held")
            time.sleep(60)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 30
    while not ready.exists():
        assert child.poll() is None, "the child died before taking the lock"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return child


def test_second_writer_is_refused_with_the_holders_pid_and_host(tmp_path):
    out = tmp_path / "render"
    out.mkdir()
    child = _hold_in_child(out, tmp_path / "ready")
    try:
        with pytest.raises(FerattError) as caught, exclusive(out):
            pass
        message = str(caught.value)
        assert f"pid {child.pid} on {socket.gethostname()}" in message
        assert str(out) in message
    finally:
        child.kill()
        child.wait()


def test_a_killed_holder_leaves_no_lock(tmp_path):
    out = tmp_path / "render"
    out.mkdir()
    child = _hold_in_child(out, tmp_path / "ready")
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    with exclusive(out) as path:
        assert path == out / ".feratt.lock"
        assert path.read_text() == f"pid {os.getpid()} on {socket.gethostname()}\n"


def test_lock_of_a_file_sits_beside_it_and_is_reentrant_after_release(tmp_path):
    bank = tmp_path / "bank.h5"
    assert lock_path_for(bank) == tmp_path / ".bank.h5.lock"
    with exclusive(bank):
        pass
    with exclusive(bank):
        pass


def test_two_locks_in_one_process_on_one_target_conflict(tmp_path):
    with (
        exclusive(tmp_path),
        pytest.raises(FerattError, match="being written by another"),
        exclusive(tmp_path),
    ):
        pass
