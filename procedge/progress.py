"""Progress bars for long steps (rich), quiet when PROCEDGE_QUIET is set."""

from __future__ import annotations

import contextlib
import os
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)


@contextlib.contextmanager
def progress_bar(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """Yield `advance(n)`; a live bar on a terminal, the final state otherwise."""
    if os.environ.get("PROCEDGE_QUIET"):
        yield lambda n=1: None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)


def info(message: str) -> None:
    if not os.environ.get("PROCEDGE_QUIET"):
        console.print(message, highlight=False, soft_wrap=True)  # one line, however long


def warn(message: str) -> None:
    """A warning the user should act on: printed even when PROCEDGE_QUIET hides progress."""
    console.print(f"[yellow]warning:[/yellow] {message}", highlight=False, soft_wrap=True)
