"""Terminal output: progress bars and summary tables (rich)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

if TYPE_CHECKING:
    from perllm.metrics.summary import Summary


@contextmanager
def progress_bar(
    total: int, label: str, *, enabled: bool = True
) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(done)``, which moves a progress bar on stderr to ``done`` of ``total``."""
    if not enabled:
        yield lambda done: None
        return
    console = Console(file=sys.stderr)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(label, total=total)
        yield lambda done: progress.update(task, completed=done)
        progress.update(task, completed=total)


@contextmanager
def stage_status(*, enabled: bool = True) -> Iterator[Callable[[str], None]]:
    """Yield ``say(text)``, which shows the current stage of a long computation on stderr."""
    if not enabled:
        yield lambda text: None
        return
    console = Console(file=sys.stderr)
    with console.status("starting") as status:
        started = time.perf_counter()

        def say(text: str) -> None:
            status.update(f"{text} [{time.perf_counter() - started:.0f} s]")

        yield say


def summary_table(summaries: Sequence[Summary], title: str) -> None:
    """Print one row per summary: goodput, satisfaction, latency and energy."""
    table = Table(title=title)
    columns = (
        "policy",
        "completed",
        "throughput/s",
        "goodput/s",
        "met %",
        "p50 s",
        "p95 s",
        "p99 s",
        "energy/req J",
        "tran J",
        "infer J",
        "idle J",
    )
    for column in columns:
        table.add_column(column, justify="left" if column == "policy" else "right")
    for s in summaries:
        energy = s.energy_j
        table.add_row(
            s.policy,
            str(s.completed),
            f"{s.throughput_rps:.3f}",
            f"{s.goodput_rps:.3f}",
            f"{100 * s.deadline_satisfaction:.1f}",
            f"{s.latency_p50_s:.2f}",
            f"{s.latency_p95_s:.2f}",
            f"{s.latency_p99_s:.2f}",
            f"{s.energy_per_request_j:.1f}",
            f"{energy.transmission:.0f}",
            f"{energy.inference:.0f}",
            f"{energy.idle:.0f}",
        )
    Console(width=max(Console().width, 150)).print(table)
