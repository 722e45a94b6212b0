"""One writer per output: a second writer is refused with the holder named; a killed holder frees it."""

from __future__ import annotations

import os
import signal
import socket

import pytest
from lock_helpers import held_by_child

from feratt.errors import FerattError
from feratt.locks import exclusive, lock_path_for


def test_second_writer_is_refused_with_the_holders_pid_and_host(tmp_path):
    out = tmp_path / "render"
    out.mkdir()
    with held_by_child(out) as pid, pytest.raises(FerattError) as caught, exclusive(out):
        pass
    message = str(caught.value)
    assert f"pid {pid} on {socket.gethostname()}" in message
    assert str(out) in message


def test_a_killed_holder_leaves_no_lock(tmp_path):
    out = tmp_path / "render"
    out.mkdir()
    with held_by_child(out) as pid:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        with exclusive(out) as path:
            assert path == out / ".feratt.lock"
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


def test_shared_holders_coexist_and_exclude_an_exclusive_one(tmp_path):
    out = tmp_path / "render"
    out.mkdir()
    host = socket.gethostname()
    with held_by_child(out, shared=True) as pid:
        with exclusive(out, shared=True):
            with pytest.raises(FerattError) as caught, exclusive(out):
                pass
            assert f"pid {pid} on {host}; pid {os.getpid()} on {host}" in str(caught.value)
        with pytest.raises(FerattError, match=f"pid {pid} on "), exclusive(out, what="the render"):
            pass
    with exclusive(out) as path:
        assert path.read_text() == f"pid {os.getpid()} on {host}\n"


def test_a_shared_taker_is_refused_while_an_exclusive_one_holds(tmp_path):
    with (
        held_by_child(tmp_path) as pid,
        pytest.raises(FerattError, match=f"pid {pid} on "),
        exclusive(tmp_path, shared=True),
    ):
        pass
