"""``perllm reproduce``: run the grid in worker processes and write CSV, JSON, report and plots."""

from __future__ import annotations

import csv
import json
import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import asdict
from pathlib import Path
from typing import Any

from perllm.experiments import analysis, plots, yardstick
from perllm.experiments.grid import (
    ROW_FIELDS,
    GridConfig,
    Task,
    nominal_rate,
    run_regret,
    run_task,
    tasks,
)
from perllm.experiments.pareto import pareto
from perllm.experiments.report import write_report
from perllm.experiments.yardstick import BoundTask, bound_tasks, run_bound

REGRET_POLICIES = ("cs-ucb", "ucb1")


Rows = list[dict[str, Any]]


def _bound_tasks(grid: GridConfig) -> list[BoundTask]:
    """The bound at nominal load, once per deployment, bandwidth and seed (if in the sweep)."""
    if 1.0 not in grid.rate_factors:
        return []
    return bound_tasks(grid.deployments, grid.bandwidths, grid.seeds, grid.requests)


def _run_all(grid: GridConfig, jobs: int, advance: Callable[[int], None]) -> tuple[Rows, ...]:
    todo = tasks(grid)
    regret_jobs = [(d, p) for d in grid.deployments for p in REGRET_POLICIES]
    bounds_todo = _bound_tasks(grid)
    rows: dict[tuple[Any, ...], dict[str, Any]] = {}
    curves: dict[tuple[str, str], dict[str, Any]] = {}
    bounds: dict[tuple[str, str, int], dict[str, Any]] = {}
    done = 0
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        # The bounds are the longest tasks: submitted first, so they do not finish last.
        bound_futures: dict[Future[dict[str, Any]], BoundTask] = {
            pool.submit(run_bound, t): t for t in bounds_todo
        }
        regret_futures: dict[Future[dict[str, Any]], tuple[str, str]] = {
            pool.submit(run_regret, d, p, grid.requests, 0): (d, p) for d, p in regret_jobs
        }
        futures: dict[Future[dict[str, Any]], Task] = {pool.submit(run_task, t): t for t in todo}
        for future in as_completed([*bound_futures, *futures, *regret_futures]):
            if future in futures:
                rows[futures[future].key] = future.result()
            elif future in bound_futures:
                bounds[bound_futures[future].key] = future.result()
            else:
                curves[regret_futures[future]] = future.result()
            done += 1
            advance(done)
    ordered = [rows[t.key] for t in todo]
    return ordered, [curves[key] for key in regret_jobs], [bounds[t.key] for t in bounds_todo]


def total_runs(grid: GridConfig) -> int:
    regrets = len(grid.deployments) * len(REGRET_POLICIES)
    return len(tasks(grid)) + regrets + len(_bound_tasks(grid))


def write_csv(rows: Sequence[dict[str, Any]], path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=ROW_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def reproduce(
    grid: GridConfig, out: Path, jobs: int, advance: Callable[[int], None], command: str
) -> Path:
    """Run the grid and write every output under ``out``; return the report's path."""
    rows, curves, bounds = _run_all(grid, jobs, advance)
    write_csv(rows, out / "results.csv")
    tables = analysis.cell_tables(rows)
    headline = analysis.headline(rows)
    versus_bound = yardstick.against_bound(rows, bounds)
    setup = {
        **asdict(grid),
        "nominal_rate_rps": {d: nominal_rate(d) for d in grid.deployments},
        "command": command,
    }
    document = {
        "setup": setup,
        "headline": headline,
        "cells": {f"{d}|{b}": table for (d, b), table in sorted(tables.items())},
        "runs": rows,
    }
    if bounds:
        document["bound"] = {f"{d}|{b}": cell for (d, b), cell in versus_bound.items()}
        document["bounds"] = bounds
        yardstick.write_bounds_csv(bounds, out / "bounds.csv")
    (out / "results.json").write_text(json.dumps(document, indent=1) + "\n")
    with (out / "regret.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(("deployment", "policy", "time_s", "cumulative_regret"))
        for curve in curves:
            for t, r in zip(curve["time_s"], curve["regret"], strict=True):
                writer.writerow((curve["deployment"], curve["policy"], t, r))
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
    report = out / "report.md"
    write_report(report, setup, tables, headline, figures, extra)
    return report
