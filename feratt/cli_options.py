"""Options and progress display that several feratt commands share."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import click

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def compose(*decorators: Decorator) -> Decorator:
    """One decorator applying `decorators` in the order they would be stacked in source."""

    def apply(command: Callable[..., Any]) -> Callable[..., Any]:
        for decorator in reversed(decorators):
            command = decorator(command)
        return command

    return apply


device_option = click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")

#: Batch size, loader workers and device of the commands that score a trained model.
scoring_options = compose(
    click.option("--batch-size", type=click.IntRange(1), default=100, show_default=True),
    click.option("--workers", type=click.IntRange(0), default=0, show_default=True, help="Loader workers."),
    device_option,
)


@contextlib.contextmanager
def progress_bar(unit: str, description: str | None = None) -> Iterator[Callable[[int, int | None], None]]:
    """A `progress(done, total)` callback drawing a tqdm bar on a terminal (nothing elsewhere)."""
    from tqdm import tqdm

    bar = tqdm(unit=unit, desc=description, disable=None, leave=False)
    seen = 0

    def progress(done: int, total: int | None) -> None:
        nonlocal seen
        if done < seen or total != bar.total:
            bar.reset(total=total)
            seen = 0
        bar.update(done - seen)
        seen = done

    try:
        yield progress
    finally:
        bar.close()
