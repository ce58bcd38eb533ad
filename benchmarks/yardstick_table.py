"""Policies against the bound on every built-in scenario: deadlines met and goodput.

Run: ``python benchmarks/yardstick_table.py [--requests 2000] [--seed 0] [--rate-factor 1.0]
[--jobs 2] [--executor ray [--ray-address HOST:PORT]]``. Each policy row is ``perllm simulate
--scenario S --policy P --requests N --rate R --seed K --json`` and the bound ``perllm bound``
with the same arguments.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from perllm.bound import bound_for_run
from perllm.cluster import scenario
from perllm.errors import InputError
from perllm.experiments.executors import open_executor
from perllm.experiments.sweep_args import add_sweep_arguments, executor_spec
from perllm.metrics.summary import Summary
from perllm.sim.runner import run_once

POLICIES = ("planner", "cs-ucb", "least-loaded", "greedy-latency", "oracle", "cloud-only")


def _simulate(args: tuple[str, str, int, float, int]) -> Summary:
    name, policy, requests, rate, seed = args
    return run_once(
        scenario.load(name), policy, requests=requests, rate_rps=rate, seed=seed
    ).summary


def _bound(args: tuple[str, int, float, int]) -> dict[str, Any]:
    name, requests, rate, seed = args
    result = bound_for_run(scenario.load(name), requests=requests, rate_rps=rate, seed=seed)
    return {**result.to_json(), "total_s": result.timings_s["total"], "frontier_obj": result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rate-factor", type=float, default=1.0)
    parser.add_argument("--jobs", type=int, default=2)
    add_sweep_arguments(parser, "--jobs", resume=False)
    args = parser.parse_args()
    names = scenario.builtin_names()
    rates = {n: scenario.load(n).workload.arrivals.rate_rps * args.rate_factor for n in names}
    work = [(n, p, args.requests, rates[n], args.seed) for n in names for p in POLICIES]
    try:
        with open_executor(executor_spec(args, args.jobs)) as pool:
            for n in names:
                pool.submit(("bound", n), _bound, (n, args.requests, rates[n], args.seed))
            for item in work:
                pool.submit(("run", item), _simulate, item)
            results = dict(pool.completed())
    except InputError as err:
        print(f"yardstick_table: {err}", file=sys.stderr)
        sys.exit(2)
    bounds = {n: results["bound", n] for n in names}
    runs = [results["run", item] for item in work]
    table = Table(
        title=f"{args.requests} requests, {args.rate_factor:g} x nominal load, seed {args.seed}"
    )
    for column in ("scenario", "policy", "met", "goodput/s", "of bound", "energy x bound"):
        table.add_column(column, justify="left" if column in ("scenario", "policy") else "right")
    for name in names:
        bound = bounds[name]
        table.add_row(
            name,
            "bound",
            f"<= {bound['met_upper_bound']}",
            f"<= {bound['goodput_upper_bound_rps']:.3f}",
            f"({bound['total_s']:.1f} s)",
            f">= {bound['energy_lower_bound_j']:,.0f} J",
        )
        for summary in (s for s in runs if s.scenario == name):
            floor = bound["frontier_obj"].energy_lower_bound_at(summary.met)
            table.add_row(
                "",
                summary.policy,
                str(summary.met),
                f"{summary.goodput_rps:.3f}",
                f"{summary.goodput_rps / bound['goodput_upper_bound_rps']:.3f}",
                f"{summary.weighted_energy_j / floor:.2f}x",
            )
    Console(width=150).print(table)


if __name__ == "__main__":
    main()
