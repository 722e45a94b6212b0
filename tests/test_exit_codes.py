"""Exit codes are mapped in one place: 2 for user errors and file-system failures, 1 for bugs."""

from __future__ import annotations

import errno

import click
import pytest
from click.testing import CliRunner

from feratt.cli import FerattGroup, main
from feratt.errors import FerattError


def _group(failure: BaseException) -> click.Group:
    @click.group(cls=FerattGroup)
    @click.option("--debug", is_flag=True, envvar="FERATT_DEBUG")
    def group(debug: bool) -> None:
        pass

    @group.command()
    def fail() -> None:
        raise failure

    return group


def _run(group: click.Group, *args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(group, list(args), env=env or {"FERATT_DEBUG": ""})


def test_library_error_is_one_line_with_exit_2_and_names_the_option():
    result = _run(_group(FerattError("the fold size must be at least 1", field="fold_size")), "fail")
    assert result.exit_code == 2
    assert result.output == "Error: --fold-size: the fold size must be at least 1\n"


def test_disk_full_is_one_line_naming_the_file():
    failure = OSError(errno.ENOSPC, "No space left on device", "/data/bank.h5")
    result = _run(_group(failure), "fail")
    assert result.exit_code == 2
    assert result.output == "Error: /data/bank.h5: No space left on device\n"


def test_internal_error_is_one_line_with_exit_1():
    result = _run(_group(ZeroDivisionError("division by zero")), "fail")
    assert result.exit_code == 1
    assert result.output == (
        "Error: internal error: ZeroDivisionError: division by zero (feratt --debug shows the traceback)\n"
    )


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_debug_lets_the_traceback_through(how):
    group = _group(ZeroDivisionError("division by zero"))
    if how == "flag":
        result = _run(group, "--debug", "fail")
    else:
        result = _run(group, "fail", env={"FERATT_DEBUG": "1"})
    assert isinstance(result.exception, ZeroDivisionError)
    assert result.exit_code == 1


def test_main_is_the_mapping_group():
    assert isinstance(main, FerattGroup)
    assert "--debug" in CliRunner().invoke(main, ["--help"]).output
