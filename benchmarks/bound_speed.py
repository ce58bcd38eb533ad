"""How long the bound takes: model size and solve times at growing trace lengths.

Run: ``python benchmarks/bound_speed.py [--scenario perllm-paper] [--requests 2000 10000]
[--rate-factor 1.0]``. Each row is ``perllm bound --scenario S --requests N --rate R``
(one process, HiGHS on one thread).
"""

from __future__ import annotations

import argparse
import time

from rich.console import Console
from rich.table import Table

from perllm.bound import bound_for_run
from perllm.cluster import scenario


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="perllm-paper")
    parser.add_argument("--requests", type=int, nargs="+", default=[2000, 10000])
    parser.add_argument("--rate-factor", type=float, nargs="+", default=[1.0, 1.5])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    cluster = scenario.load(args.scenario)
    table = Table(title=f"perllm bound on {args.scenario}, seed {args.seed}")
    columns = ("requests", "rate", "variables", "rows", "met <=", "most met s", "goodput s")
    for column in (*columns, "frontier s", "total s"):
        table.add_column(column, justify="right")
    for n in args.requests:
        for factor in args.rate_factor:
            rate = cluster.workload.arrivals.rate_rps * factor
            started = time.perf_counter()
            result = bound_for_run(cluster, requests=n, rate_rps=rate, seed=args.seed)
            total = time.perf_counter() - started
            t = result.timings_s
            table.add_row(
                f"{n:,}",
                f"{rate:g}",
                f"{result.model['variables']:,}",
                f"{result.model['rows']:,}",
                f"{result.met_upper_bound:,} ({result.met_upper_bound / n:.1%})",
                f"{t['most_met']:.1f}",
                f"{t['goodput']:.1f}",
                f"{t['total'] - t['most_met'] - t['goodput']:.1f}",
                f"{total:.1f}",
            )
    Console(width=150).print(table)


if __name__ == "__main__":
    main()
