"""The callbacks every stage of the Python API takes: progress counts and log lines."""

from __future__ import annotations

from collections.abc import Callable

#: `progress(done, total)`: `done` units of the current pass finished out of `total` (None: unknown).
#: A new pass (an epoch, say) starts again from a smaller `done`.
Progress = Callable[[int, "int | None"], None]
#: `log(line)`: one human-readable line about what a stage is doing.
Log = Callable[[str], None]


def no_progress(done: int, total: int | None) -> None:
    """A progress callback that ignores its calls."""


def no_log(line: str) -> None:
    """A log callback that ignores its lines."""
