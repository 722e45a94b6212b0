"""Exceptions that carry a message meant for the user."""

from __future__ import annotations


class FerattError(Exception):
    """A user-facing error: one line for the user; the CLI exits with status 2.

    `field` names the setting the error is about (a request or TrainConfig field, such as
    `fold_size`), so that a front end can name its own option for it; the message names the concept.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class BadInputFile(Exception):
    """One input file cannot be used; the run skips it and records the reason."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
