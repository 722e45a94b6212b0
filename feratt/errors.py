"""Exceptions that carry a message meant for the user."""


class FerattError(Exception):
    """A user-facing error: the CLI prints its message on one line and exits with status 2."""


class BadInputFile(Exception):
    """One input file cannot be used; the run skips it and records the reason."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
