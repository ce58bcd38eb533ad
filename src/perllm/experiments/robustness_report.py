"""The robustness benchmark's outputs: CSV files, terminal tables and a plot (the definitions
of every measure: :mod:`perllm.experiments.robustness`; trace cells:
:mod:`perllm.experiments.robustness_traces`)."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from perllm.experiments.robustness import (
    FRUGAL_WITHIN,
    CloudCheck,
    PolicyScore,
    cells,
    goodput_ratio,
    scores,
    strongest_other,
    win_matrix,
)
from perllm.experiments.robustness_runs import ROW_FIELDS
from perllm.experiments.robustness_traces import TraceCluster
from perllm.experiments.rows import GeneratedCluster, RunRow, write_csv

__all__ = [
    "SCORE_FIELDS",
    "FamilyScores",
    "plot",
    "print_cloud_checks",
    "print_tables",
    "print_trace_heading",
    "write_csvs",
    "write_scores",
]

SCORE_FIELDS = (
    "family",
    "policy",
    "cells",
    "win_rate",
    "goodput_ratio",
    "energy_per_met_vs_most_met",
    "mean_satisfaction",
    "dominated",
    "frugal_ratio_geomean",
    "frugal_within_1_25",
    "frugal_ratio_p95",
    "bound_fraction",
    "cloud_check_cells",
    "cloud_check_share",
)


@dataclass(frozen=True, slots=True)
class FamilyScores:
    """One cluster family's scores and cloud-only checks (what ``scores.csv`` holds)."""

    family: str
    scores: list[PolicyScore]
    cloud_checks: list[CloudCheck]


def write_csvs(rows: Sequence[RunRow], clusters: Sequence[GeneratedCluster], out: Path) -> None:
    """``robustness.csv`` (one row per run) and ``clusters.csv`` (one row per cluster; a trace
    cell cluster's arrivals are ``trace FILE`` and its classes their names, joined by ``+``)."""
    write_csv(rows, ROW_FIELDS, out / "robustness.csv")
    with (out / "clusters.csv").open("w", newline="") as handle:
        table = csv.writer(handle)
        table.writerow(
            (
                "family",
                "cluster",
                "description",
                "servers",
                "requests",
                "capacity_rps",
                "fluid_rps",
                "arrivals",
                "classes",
            )
        )
        for c in clusters:
            data, arrivals = c.data, c.data["workload"]["arrivals"]
            classes = data["workload"]["classes"]
            process = arrivals["process"] + (f" cv {arrivals['cv']}" if "cv" in arrivals else "")
            if "trace" in data["workload"]:
                process = f"trace {data['workload']['trace']['path']}"
                classes = "+".join(cls["name"] for cls in classes)
            table.writerow(
                (
                    c.family,
                    c.seed,
                    data["description"],
                    len(data["servers"]),
                    data["requests"],
                    c.capacity.rate_rps,
                    c.capacity.fluid_rps,
                    process,
                    classes if isinstance(classes, str) else "trace-mix",
                )
            )


def _pct(value: float) -> str:
    return "-" if math.isnan(value) else f"{100 * value:.1f}%"


def print_tables(
    rows: Sequence[RunRow],
    contenders: list[str],
    policies: list[str],
    loads: list[float],
    family: str = "mixed",
) -> list[PolicyScore]:
    """Print the per-policy summary and the win-rate matrix; return the scores."""
    results = scores(rows, contenders, policies)
    has_bound = any(not math.isnan(s.bound_fraction) for s in results)
    n_cells = len(cells(rows))
    table = Table(
        title=(
            f"family {family}: {n_cells} cells (cluster x load x seed); ratios: geometric mean "
            "over cells against the other non-oracle policy meeting the most deadlines in each "
            "cell; dominated: share of cells where another policy meets as many deadlines "
            "(0.1-pt tolerance) at <= 0.95x the energy per met request; frugal: energy per met "
            "over the least of the policies meeting >= its deadlines - 0.5 pt"
        )
    )
    columns = [
        "policy",
        "win rate",
        "goodput ratio",
        *[f"@{x:g}x" for x in loads],
        "energy/met vs most-met",
        "met %",
        "dominated",
        "frugal",
        f"frugal <={FRUGAL_WITHIN:g}",
        "frugal p95",
    ]
    if has_bound:
        columns.append("of bound")
    for column in columns:
        table.add_column(column, justify="left" if column == "policy" else "right")
    for s in sorted(results, key=lambda s: -s.goodput_ratio):
        cells_ = [
            escape(s.policy),
            _pct(s.win_rate),
            f"{s.goodput_ratio:.3f}",
            *[f"{s.goodput_ratio_by_load.get(x, math.nan):.3f}" for x in loads],
            f"{s.energy_ratio:.3f}",
            f"{100 * s.mean_satisfaction:.1f}",
            _pct(s.dominated),
            f"{s.frugal_ratio:.3f}",
            _pct(s.frugal_within),
            f"{s.frugal_p95:.3f}",
        ]
        if has_bound:
            cells_.append(_pct(s.bound_fraction))
        table.add_row(*cells_)
    console = Console(width=max(Console().width, 160))
    console.print(table)
    matrix = win_matrix(cells(rows), contenders)
    grid = Table(title="win rate on goodput, row against column (ties count one half)")
    grid.add_column("")
    for q in contenders:
        grid.add_column(escape(q), justify="right")
    for p in contenders:
        grid.add_row(
            escape(p), *["" if p == q else f"{100 * matrix[p][q]:.0f}" for q in contenders]
        )
    console.print(grid)
    return results


def print_trace_heading(cells: Sequence[TraceCluster], traces: Sequence[str]) -> None:
    """Say that the tables to follow are trace cells; per trace, how many clusters ran and
    which were skipped (their requests fitting no server, of their window)."""
    print(
        "\nTrace cells, reported apart from the synthetic cells: each generated cluster replays "
        "a production trace's first requests (arrivals and lengths from the trace, timestamps "
        "stretched to the load x the cluster's capacity measured on that trace; TTFT + TPOT "
        "deadlines; docs/traces.md)."
    )
    for trace in traces:
        mine = [c for c in cells if c.trace == trace]
        skips = [c for c in mine if c.skipped]
        line = f"trace {trace}: {len(mine) - len(skips)} of {len(mine)} clusters run"
        if skips:
            which = ", ".join(f"{c.seed} ({c.unfit:,} of {c.window:,})" for c in skips)
            line += f"; {len(skips)} skipped, over half their requests fitting no server: {which}"
        print(line)


def print_cloud_checks(checks: Sequence[CloudCheck], family: str = "mixed") -> None:
    """One line per check: the share of cloud-only's good cells a policy matches."""
    for c in checks:
        if not c.cells:
            print(
                f"family {family}: cloud-only check of {c.policy}: no cell where {c.reference} "
                "meets >= 95% of deadlines"
            )
            continue
        print(
            f"family {family}: cloud-only check: {c.policy} meets as many deadlines as "
            f"{c.reference} at <= 1.10x its energy per met request in {_pct(c.share)} "
            f"({c.passed} of {c.cells}) of the cells where {c.reference} meets >= 95% of deadlines"
        )


def write_scores(families: Sequence[FamilyScores], path: Path) -> None:
    """``scores.csv``: one row per (family, policy), columns :data:`SCORE_FIELDS`."""
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=SCORE_FIELDS)
        writer.writeheader()
        for f in families:
            checks = {c.policy: c for c in f.cloud_checks}
            for s in f.scores:
                check = checks.get(s.policy)
                writer.writerow(
                    {
                        "family": f.family,
                        "policy": s.policy,
                        "cells": s.cells,
                        "win_rate": s.win_rate,
                        "goodput_ratio": s.goodput_ratio,
                        "energy_per_met_vs_most_met": s.energy_ratio,
                        "mean_satisfaction": s.mean_satisfaction,
                        "dominated": s.dominated,
                        "frugal_ratio_geomean": s.frugal_ratio,
                        "frugal_within_1_25": s.frugal_within,
                        "frugal_ratio_p95": s.frugal_p95,
                        "bound_fraction": s.bound_fraction,
                        "cloud_check_cells": "" if check is None else check.cells,
                        "cloud_check_share": "" if check is None else check.share,
                    }
                )


def plot(
    rows: Sequence[RunRow], results: list[PolicyScore], contenders: list[str], path: Path
) -> None:
    """Left: each policy's per-cell goodput ratios (box plot); right: its geometric-mean
    goodput ratio against its energy-per-met-request ratio."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = [s.policy for s in sorted(results, key=lambda s: -s.goodput_ratio)]
    per_policy: dict[str, list[float]] = {p: [] for p in order}
    for runs in cells(rows).values():
        for p in order:
            best = strongest_other(runs, p, contenders) if p in runs else None
            if best is not None:
                per_policy[p].append(goodput_ratio(runs[p], runs[best]))
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 5.5))
    left.boxplot([per_policy[p] for p in order], showfliers=False)
    left.set_xticks(range(1, len(order) + 1), order, rotation=45, ha="right")
    left.set_yscale("log")
    left.axhline(1.0, color="grey", lw=0.8)
    left.set_ylabel("goodput / most-met other policy's (per cell)")
    left.set_title("goodput against the other policy meeting the most deadlines")
    colours = plt.get_cmap("tab20")
    for k, s in enumerate(results):
        right.scatter(s.energy_ratio, s.goodput_ratio, color=colours(k % 20))
        right.annotate(s.policy, (s.energy_ratio, s.goodput_ratio), fontsize=8)
    right.set_xscale("log")
    right.set_yscale("log")
    right.axhline(1.0, color="grey", lw=0.8)
    right.axvline(1.0, color="grey", lw=0.8)
    right.set_xlabel("energy per met request / most-met other's (geometric mean)")
    right.set_ylabel("goodput / most-met other's (geometric mean)")
    right.set_title("up and to the left is better")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
