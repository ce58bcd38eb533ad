"""The robustness benchmark's outputs: CSV files, terminal tables and a plot."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from perllm.experiments.robustness import (
    PolicyScore,
    cells,
    goodput_ratio,
    scores,
    strongest_other,
    win_matrix,
)
from perllm.experiments.robustness_runs import ROW_FIELDS

__all__ = ["plot", "print_tables", "write_csvs"]


def write_csvs(rows: list[dict[str, Any]], clusters: list[dict[str, Any]], out: Path) -> None:
    """``robustness.csv`` (one row per run) and ``clusters.csv`` (one row per cluster)."""
    with (out / "robustness.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=ROW_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    with (out / "clusters.csv").open("w", newline="") as handle:
        table = csv.writer(handle)
        table.writerow(
            (
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
            data, arrivals = c["data"], c["data"]["workload"]["arrivals"]
            classes = data["workload"]["classes"]
            process = arrivals["process"] + (f" cv {arrivals['cv']}" if "cv" in arrivals else "")
            table.writerow(
                (
                    c["seed"],
                    data["description"],
                    len(data["servers"]),
                    data["requests"],
                    c["capacity"]["rate_rps"],
                    c["capacity"]["fluid_rps"],
                    process,
                    classes if isinstance(classes, str) else "trace-mix",
                )
            )


def print_tables(
    rows: list[dict[str, Any]], contenders: list[str], policies: list[str], loads: list[float]
) -> list[PolicyScore]:
    """Print the per-policy summary and the win-rate matrix; return the scores."""
    results = scores(rows, contenders, policies)
    has_bound = any(not math.isnan(s.bound_fraction) for s in results)
    n_cells = len(cells(rows))
    table = Table(
        title=(
            f"{n_cells} cells (cluster x load x seed); ratios: geometric mean over cells "
            "against the strongest other non-oracle policy in each cell "
            "(goodput > 1 and energy/met < 1 favour the policy)"
        )
    )
    columns = [
        "policy",
        "win rate",
        "goodput ratio",
        *[f"@{x:g}x" for x in loads],
        "energy/met ratio",
        "met %",
        "beats all",
        "by load (%)",
        "within 1%",
    ]
    if has_bound:
        columns.append("of bound")
    for column in columns:
        table.add_column(column, justify="left" if column == "policy" else "right")
    for s in sorted(results, key=lambda s: -s.goodput_ratio):
        cells_ = [
            s.policy,
            "-" if math.isnan(s.win_rate) else f"{100 * s.win_rate:.1f}%",
            f"{s.goodput_ratio:.3f}",
            *[f"{s.goodput_ratio_by_load.get(x, math.nan):.3f}" for x in loads],
            f"{s.energy_ratio:.3f}",
            f"{100 * s.mean_satisfaction:.1f}",
            "-" if math.isnan(s.beats_all) else f"{100 * s.beats_all:.1f}%",
            " / ".join(f"{100 * s.beats_all_by_load.get(x, math.nan):.0f}" for x in loads),
            "-" if math.isnan(s.beats_all_within) else f"{100 * s.beats_all_within:.1f}%",
        ]
        if has_bound:
            cells_.append(f"{100 * s.bound_fraction:.1f}%")
        table.add_row(*cells_)
    console = Console(width=max(Console().width, 160))
    console.print(table)
    matrix = win_matrix(cells(rows), contenders)
    grid = Table(title="win rate on goodput, row against column (ties count one half)")
    grid.add_column("")
    for q in contenders:
        grid.add_column(q, justify="right")
    for p in contenders:
        grid.add_row(p, *["" if p == q else f"{100 * matrix[p][q]:.0f}" for q in contenders])
    console.print(grid)
    return results


def plot(
    rows: list[dict[str, Any]], results: list[PolicyScore], contenders: list[str], path: Path
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
    left.set_ylabel("goodput / strongest other policy's (per cell)")
    left.set_title("goodput against the strongest other policy")
    colours = plt.get_cmap("tab20")
    for k, s in enumerate(results):
        right.scatter(s.energy_ratio, s.goodput_ratio, color=colours(k % 20))
        right.annotate(s.policy, (s.energy_ratio, s.goodput_ratio), fontsize=8)
    right.set_xscale("log")
    right.set_yscale("log")
    right.axhline(1.0, color="grey", lw=0.8)
    right.axvline(1.0, color="grey", lw=0.8)
    right.set_xlabel("energy per met request / strongest other's (geometric mean)")
    right.set_ylabel("goodput / strongest other's (geometric mean)")
    right.set_title("up and to the left is better")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
