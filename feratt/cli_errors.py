"""How the command line ends a run that fails or is stopped: one line on stderr and an exit status.

0 success; 2 a user error, bad input, a usage error or a failing file system; 1 an internal error;
130 an interruption (Ctrl-C), with a line saying what the command kept and how to go on.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import IO, Any

import click

from feratt.errors import FerattError


class UserError(click.ClickException):
    """A user error: printed as one 'Error:' line, exit status 2."""

    exit_code = 2


class InternalError(click.ClickException):
    """A bug or an unforeseen failure: one 'Error:' line, exit status 1 (a traceback with --debug)."""

    exit_code = 1


class UsageLine(click.ClickException):
    """A usage error (an unknown option, a value out of range) as one 'Error:' line, without click's
    usage text and hint; exit status 2, as click gives it."""

    exit_code = 2

    def __init__(self, error: click.UsageError) -> None:
        super().__init__(" ".join(error.format_message().split()))
        self.exit_code = error.exit_code


class Interrupted(click.ClickException):
    """Ctrl-C: one 'Interrupted:' line saying what was kept and how to go on; exit status 130."""

    exit_code = 130

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"Interrupted: {self.format_message()}", file=file or sys.stderr)


#: Library fields whose command-line option is not simply `--field-name`.
FIELD_OPTIONS: dict[str, str] = {"masks_root": "--masks"}


def option_for(field: str, command: click.Command | None = None) -> str:
    """The command-line option (or argument) of `command` that sets library field `field`."""
    for param in command.params if command is not None else ():
        if param.name == field:
            if isinstance(param, click.Option):
                return next((opt for opt in param.opts if opt.startswith("--")), param.opts[0])
            return param.human_readable_name
    return FIELD_OPTIONS.get(field, "--" + field.replace("_", "-"))


def user_error(exc: FerattError, command: click.Command | None = None) -> UserError:
    """The one-line CLI error for a library error, naming the option when the error names a field."""
    message = str(exc)
    if exc.field is not None:
        message = f"{option_for(exc.field, command)}: {message}"
    return UserError(message)


def os_error_line(exc: OSError) -> str:
    """One line for an operating-system error, naming the file it concerns."""
    reason = " ".join((exc.strerror or str(exc)).split())
    return f"{exc.filename}: {reason}" if exc.filename else reason


@contextlib.contextmanager
def one_line_usage_errors() -> Iterator[None]:
    """Click's usage errors as one 'Error:' line (no usage text, hint or blank line)."""
    try:
        yield
    except click.exceptions.NoArgsIsHelpError:
        raise  # `feratt` alone: the help
    except click.UsageError as exc:
        raise UsageLine(exc) from None


GENERIC_KEPT = (
    "nothing is half-written (each file is written whole or not at all); rerun the command to finish"
)

#: What each command keeps when it is interrupted, and how to go on, from its parameters.
KEPT: dict[str, Callable[[dict[str, Any]], str]] = {
    "faces": lambda p: (
        f"{p['out']} is as it was (a face bank is written whole or not at all); rerun the command to build it"
    ),
    "render": lambda p: (
        f"the complete shards in {p['render']} are kept; rerun the same command to render the rest"
    ),
    "index": lambda p: f"{p['render']} is as it was; rerun feratt index {p['render']}",
    "train": lambda p: (
        f"each fold in {p['run']} keeps the checkpoints of its last finished epoch; "
        "rerun the same command with --resume to continue"
    ),
    "experiment": lambda p: (
        f"the finished folds and evaluations in {p['exp_dir']} are kept; rerun the same command to continue"
    ),
    "predict": lambda p: (
        f"the annotated files finished in {p['annotate']} are kept (each one whole); "
        "rerun with --overwrite to write them all again"
        if p.get("annotate")
        else GENERIC_KEPT
    ),
    "export": lambda p: f"{p['out']} is as it was; rerun the command to export",
}


def interrupted(command: str | None, params: dict[str, Any]) -> Interrupted:
    """The line for a run of `command` (with `params`) stopped by Ctrl-C."""
    kept = KEPT.get(command or "")
    try:
        line = kept(params) if kept is not None else GENERIC_KEPT
    except KeyError:
        line = GENERIC_KEPT
    return Interrupted(line)


class FerattCommand(click.Command):
    """A feratt command: Ctrl-C ends it with the line saying what it kept (exit status 130)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise interrupted(self.name, ctx.params) from None
