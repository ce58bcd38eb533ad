"""A sweep of one CS-UCB parameter against the baselines: CS-UCB's frontier, cell by cell.

The sweep runs CS-UCB at a few values of one parameter (each a variant labelled
``cs-ucb[KEY=VALUE]``, see :func:`sweep_label`) and every baseline once. In a cell, the
*frontier* is the set of the sweep's points there, and it **dominates** a baseline ``q`` when
some point meets at least ``q``'s deadlines, up to :data:`~perllm.experiments.robustness.TOLERANCE`
of the cell's requests, at no more than ``q``'s energy per met request.

Summaries are geometric means over cells: the deadlines-met share as ``(met + 1/2) /
(requests + 1/2)`` (finite when a run meets nothing) and the energy per met request. The plot's
x axis divides each run's energy per met request by the least of the swept and baseline runs of
its cell before taking the geometric mean: 1 is the cheapest run in every cell, and since the
divisor is shared by every policy of a cell, the points keep the distances (on a log axis) of
the raw geometric means while the axis reads as "times the cheapest".
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from perllm.experiments.robustness import (
    SMOOTHING,
    TOLERANCE,
    Runs,
    cells,
    energy_per_met,
    geomean,
)
from perllm.experiments.rows import RunRow

__all__ = [
    "MAX_SWEEP_VALUES",
    "SweepPoint",
    "SweepRow",
    "SweepSummary",
    "frontier_dominates",
    "plot_sweep",
    "print_sweep",
    "summarize_sweep",
    "sweep_label",
    "write_sweep_csv",
]

MAX_SWEEP_VALUES = 5


def sweep_label(key: str, value: str) -> str:
    """The label of CS-UCB run with ``key`` set to ``value``: ``cs-ucb[key=value]``."""
    return f"cs-ucb[{key}={value}]"


@dataclass(frozen=True, slots=True)
class SweepPoint:
    """One value of the swept parameter and the label its runs carry."""

    label: str
    value: str


@dataclass(frozen=True, slots=True)
class SweepRow:
    """One sweep point or baseline, summarised over the cells it ran in.

    ``frontier_dominates``: for a baseline, the share of its cells where CS-UCB's frontier
    dominates it; ``nan`` for a sweep point.
    """

    label: str
    value: str | None  # the swept value; None for a baseline
    cells: int
    met_share: float
    energy_per_met_j: float
    relative_energy: float
    frontier_dominates: float


@dataclass(frozen=True, slots=True)
class SweepSummary:
    """The sweep's rows, and over all (cell, baseline) pairs how often the frontier dominates."""

    key: str
    rows: list[SweepRow]
    dominated_pairs: int
    pairs: int

    @property
    def share(self) -> float:
        return self.dominated_pairs / self.pairs if self.pairs else math.nan


def frontier_dominates(runs: Runs, frontier: Sequence[str], baseline: str) -> bool:
    """Whether some run of ``frontier`` in this cell meets ``baseline``'s deadlines (up to
    :data:`TOLERANCE` of the requests) at no more than its energy per met request."""
    theirs = runs[baseline]
    floor = float(theirs.met) - TOLERANCE * float(theirs.requests)
    cap = energy_per_met(theirs)
    return any(
        float(runs[s].met) >= floor and energy_per_met(runs[s]) <= cap
        for s in frontier
        if s in runs
    )


def _met_share(row: RunRow) -> float:
    return (float(row.met) + SMOOTHING) / (float(row.requests) + SMOOTHING)


def summarize_sweep(
    rows: Iterable[RunRow],
    key: str,
    points: Sequence[SweepPoint],
    baselines: Sequence[str],
) -> SweepSummary:
    """Summarise the sweep points and the baselines (see the module docstring)."""
    grouped = cells(rows)
    frontier = [p.label for p in points]
    labels = [*frontier, *baselines]
    shares: dict[str, list[float]] = {label: [] for label in labels}
    energies: dict[str, list[float]] = {label: [] for label in labels}
    relative: dict[str, list[float]] = {label: [] for label in labels}
    wins: dict[str, list[float]] = {label: [] for label in baselines}
    for runs in grouped.values():
        present = [label for label in labels if label in runs]
        if not present:
            continue
        least = min(energy_per_met(runs[label]) for label in present)
        for label in present:
            shares[label].append(_met_share(runs[label]))
            energies[label].append(energy_per_met(runs[label]))
            relative[label].append(energy_per_met(runs[label]) / least if least > 0 else 1.0)
        if any(s in runs for s in frontier):
            for q in baselines:
                if q in runs:
                    wins[q].append(float(frontier_dominates(runs, frontier, q)))
    values = {p.label: p.value for p in points}
    summary_rows = [
        SweepRow(
            label=label,
            value=values.get(label),
            cells=len(shares[label]),
            met_share=geomean(shares[label]),
            energy_per_met_j=geomean(energies[label]),
            relative_energy=geomean(relative[label]),
            frontier_dominates=(
                sum(wins[label]) / len(wins[label]) if wins.get(label) else math.nan
            ),
        )
        for label in labels
    ]
    dominated = sum(int(sum(v)) for v in wins.values())
    pairs = sum(len(v) for v in wins.values())
    return SweepSummary(key, summary_rows, dominated, pairs)


def _pct(value: float) -> str:
    return "-" if math.isnan(value) else f"{100 * value:.1f}%"


def print_sweep(summary: SweepSummary, family: str, console: Console | None = None) -> None:
    """Print the sweep's table and the frontier's overall dominance share."""
    console = console or Console(width=max(Console().width, 160))
    n_cells = max((row.cells for row in summary.rows), default=0)
    table = Table(
        title=(
            f"family {family}: CS-UCB swept over {summary.key}, {n_cells} cells; geometric "
            "means over cells; frontier dominates: share of the baseline's cells where some "
            "sweep point meets as many deadlines (0.1-pt tolerance) at <= its energy per met"
        )
    )
    for column in ("policy", summary.key, "met %", "J per met", "x cheapest", "frontier dom."):
        table.add_column(column, justify="left" if column == "policy" else "right")
    for row in summary.rows:
        table.add_row(
            escape(row.label),
            "" if row.value is None else row.value,
            f"{100 * row.met_share:.2f}",
            f"{row.energy_per_met_j:.4g}",
            f"{row.relative_energy:.3f}",
            "" if row.value is not None else _pct(row.frontier_dominates),
        )
    console.print(table)
    console.print(
        f"family {family}: CS-UCB's frontier dominates the baseline in {_pct(summary.share)} "
        f"of {summary.pairs} (cell, baseline) pairs"
    )


def plot_sweep(summary: SweepSummary, family: str, path: Path) -> None:
    """CS-UCB's frontier as a line and each baseline as a labelled point: x energy per met
    request over the cell's cheapest (geometric mean), y deadlines met (geometric mean)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweep = [row for row in summary.rows if row.value is not None]
    baselines = [row for row in summary.rows if row.value is None]
    fig, ax = plt.subplots(figsize=(8, 5.5))
    ax.plot(
        [row.relative_energy for row in sweep],
        [100 * row.met_share for row in sweep],
        "o-",
        color="tab:red",
        label=f"cs-ucb, {summary.key} swept",
    )
    for row in sweep:
        ax.annotate(str(row.value), (row.relative_energy, 100 * row.met_share), fontsize=8)
    for row in baselines:
        ax.scatter(row.relative_energy, 100 * row.met_share, color="tab:blue", marker="s")
        ax.annotate(row.label, (row.relative_energy, 100 * row.met_share), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("energy per met request / the cell's cheapest run's (geometric mean)")
    ax.set_ylabel("deadlines met % (geometric mean over cells)")
    ax.set_title(f"family {family}: up and to the left is better")
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_sweep_csv(summaries: Sequence[tuple[str, SweepSummary]], path: Path) -> None:
    """``sweep.csv``: one row per (family, sweep point or baseline)."""
    fields = (
        "family",
        "policy",
        "key",
        "value",
        "cells",
        "met_share_geomean",
        "energy_per_met_j_geomean",
        "energy_over_cheapest_geomean",
        "frontier_dominates",
    )
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(fields)
        for family, summary in summaries:
            for row in summary.rows:
                writer.writerow(
                    (
                        family,
                        row.label,
                        summary.key,
                        "" if row.value is None else row.value,
                        row.cells,
                        row.met_share,
                        row.energy_per_met_j,
                        row.relative_energy,
                        "" if row.value is not None else row.frontier_dominates,
                    )
                )
