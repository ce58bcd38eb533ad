"""``perllm reproduce``: run the grid (processes or Ray); write CSV, JSON, report and plots."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from perllm.experiments import analysis, checkpoint, plots, trace_block, yardstick
from perllm.experiments.checkpoint import Call, Checkpoint, run_saving
from perllm.experiments.executors import ExecutorSpec
from perllm.experiments.grid import (
    ROW_FIELDS,
    GridConfig,
    nominal_rate,
    run_regret,
    run_task,
    tasks,
)
from perllm.experiments.pareto import pareto
from perllm.experiments.report import Setup, write_report
from perllm.experiments.rows import BoundRow, GridRow, RegretCurve, Row, write_csv
from perllm.experiments.trace_block import TraceRow, run_trace
from perllm.experiments.yardstick import BoundTask, bound_tasks, run_bound

REGRET_POLICIES = ("cs-ucb", "ucb1")
# How the checkpoint's results read back, by the first part of their key.
_SAVED: Mapping[str, Callable[[Mapping[str, Any]], Row]] = {
    "bound": BoundRow.from_json,
    "regret": RegretCurve.from_json,
    "run": GridRow.from_json,
    "trace": TraceRow.from_json,
}


def _decode(key: Any, data: Any) -> Row:
    """A result of the checkpoint, read back into its row."""
    return _SAVED[key[0]](data)


def _bound_tasks(grid: GridConfig) -> list[BoundTask]:
    """The bound at nominal load, once per deployment, bandwidth and seed (if in the sweep)."""
    if 1.0 not in grid.rate_factors:
        return []
    return bound_tasks(grid.deployments, grid.bandwidths, grid.seeds, grid.requests)


def _calls(grid: GridConfig) -> list[Call]:
    """Every run of the grid as ``(key, function, arguments)``."""
    # The bounds are the longest runs: submitted first, so they do not finish last.
    return [
        *((("bound", t.key), run_bound, (t,)) for t in _bound_tasks(grid)),
        *((("regret", job), run_regret, (*job, grid.requests, 0)) for job in _regret_jobs(grid)),
        *((("run", t.key), run_task, (t,)) for t in tasks(grid)),
        *((("trace", t.key), run_trace, (t,)) for t in grid.trace_tasks()),
    ]


def _regret_jobs(grid: GridConfig) -> list[tuple[str, str]]:
    return [(d, p) for d in grid.deployments for p in REGRET_POLICIES]


def _run_all(
    grid: GridConfig, executor: ExecutorSpec, advance: Callable[[int], None], saved: Checkpoint
) -> tuple[list[GridRow], list[RegretCurve], list[BoundRow], list[TraceRow]]:
    """Run what ``saved`` does not hold yet, recording each run there as it finishes."""
    results = saved.results
    run_saving(executor, [c for c in _calls(grid) if c[0] not in results], saved, advance)
    rows: list[GridRow] = [results["run", t.key] for t in tasks(grid)]
    curves: list[RegretCurve] = [results["regret", key] for key in _regret_jobs(grid)]
    bounds: list[BoundRow] = [results["bound", t.key] for t in _bound_tasks(grid)]
    replays: list[TraceRow] = [results["trace", t.key] for t in grid.trace_tasks()]
    return rows, curves, bounds, replays


def checkpoint_path(out: Path) -> Path:
    return out / checkpoint.FILENAME


def total_runs(grid: GridConfig) -> int:
    return len(_calls(grid))


def write_results_csv(rows: Sequence[GridRow], path: Path) -> None:
    """``results.csv``: one row per run, columns :data:`~perllm.experiments.grid.ROW_FIELDS`."""
    write_csv(rows, ROW_FIELDS, path)


def write_regret_csv(curves: Sequence[RegretCurve], path: Path) -> None:
    """``regret.csv``: one row per decision of each curve."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(("deployment", "policy", "time_s", "cumulative_regret"))
        for curve in curves:
            for t, r in zip(curve.time_s, curve.regret, strict=True):
                writer.writerow((curve.deployment, curve.policy, t, r))


def reproduce(
    grid: GridConfig,
    out: Path,
    executor: ExecutorSpec,
    advance: Callable[[int], None],
    command: str,
    *,
    resume: bool = False,
) -> Path:
    """Run the grid and write every output under ``out``; return the report's path.

    Each finished run is saved at once in ``out``'s checkpoint; with ``resume``, the runs saved
    there by an earlier, interrupted call with the same grid are kept and only the others run.
    """
    header = asdict(grid)
    with Checkpoint(checkpoint_path(out), header, resume=resume, decode=_decode) as saved:
        rows, curves, bounds, replays = _run_all(grid, executor, advance, saved)
    write_results_csv(rows, out / "results.csv")
    tables = analysis.cell_tables(rows)
    headline = analysis.headline(rows)
    versus_bound = yardstick.against_bound(rows, bounds)
    setup = Setup(grid, {d: nominal_rate(d) for d in grid.deployments}, command)
    document: dict[str, object] = {
        "setup": setup.to_json(),
        "headline": {f"{d}|{b}": cell.to_json() for (d, b), cell in headline.items()},
        "cells": {
            f"{d}|{b}": {policy: stats.to_json() for policy, stats in table.items()}
            for (d, b), table in sorted(tables.items())
        },
        "runs": [row.to_json() for row in rows],
    }
    if bounds:
        document["bound"] = {f"{d}|{b}": cell.to_json() for (d, b), cell in versus_bound.items()}
        document["bounds"] = [bound.to_json() for bound in bounds]
        yardstick.write_bounds_csv(bounds, out / "bounds.csv")
    if replays:
        document["traces"] = [row.to_json() for row in replays]
        trace_block.write_rows(replays, out / "traces.csv")
    (out / "results.json").write_text(json.dumps(document, indent=1) + "\n")
    write_regret_csv(curves, out / "regret.csv")
    figures = []
    for bandwidth in grid.bandwidths:
        name = f"goodput_energy_{bandwidth}.png"
        plots.goodput_energy(tables, bandwidth, out / name)
        figures.append(name)
        name = f"satisfaction_vs_rate_{bandwidth}.png"
        plots.satisfaction_vs_rate(rows, bandwidth, out / name)
        figures.append(name)
    plots.energy_split(tables, out / "energy_split.png")
    plots.regret(curves, out / "regret.png")
    figures += ["energy_split.png", "regret.png"]
    pareto_figures = []
    for deployment in grid.deployments if bounds else ():
        name = f"pareto_{deployment.replace('/', '-')}.png"
        pareto(rows, bounds, deployment, grid.bandwidths, out / name)
        pareto_figures.append(name)
    extra = yardstick.report_lines(versus_bound, pareto_figures) if bounds else []
    if replays:
        trace_block.plot(replays, out / "traces.png")
        extra += trace_block.report_lines(replays, "traces.png")
    report = out / "report.md"
    write_report(report, setup, tables, headline, figures, extra)
    return report
