"""CS-UCB's price over whole runs: deadlines met and energy at each ``miss-price`` on fixed traces.

Run: ``python benchmarks/price_ladder.py [--family gpu-edge] [--clusters 1001,1002,1005]
[--loads 0.7,1.5] [--prices 0,1,3,10,30,100,300,1000]``.

Each generated cluster (:mod:`perllm.clustergen`; the default numbers are GPU-edge tuning
clusters, never reported elsewhere) is simulated at each load (x its measured capacity) with the
same 1,000 requests for every price. Decision by decision a higher price never picks a likelier
miss or a cheaper server; this prints how far that order carries over to a whole run, where
each choice changes the loads and what is learned after it.
"""

from __future__ import annotations

import argparse
import sys

from rich.console import Console
from rich.table import Table

from perllm.cluster import scenario
from perllm.clustergen import generate
from perllm.clustergen.families import SHORT_RUNS, cluster_seed, family_settings
from perllm.errors import InputError
from perllm.sim.runner import run_once


def _numbers(text: str, name: str, kind: type[float] | type[int]) -> list[float]:
    try:
        return [kind(x) for x in text.split(",")]
    except ValueError:
        raise InputError(f"--{name}: expected comma-separated numbers, got {text!r}") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="gpu-edge")
    parser.add_argument("--clusters", default="1001,1002,1005")
    parser.add_argument("--loads", default="0.7,1.5", help="x capacity")
    parser.add_argument("--prices", default="0,1,3,10,30,100,300,1000")
    args = parser.parse_args()
    table = Table(title=f"CS-UCB by miss-price, {args.family}: deadlines met / weighted kJ")
    table.add_column("cluster, load")
    try:
        clusters = _numbers(args.clusters, "clusters", int)
        loads = _numbers(args.loads, "loads", float)
        prices = _numbers(args.prices, "prices", float)
        for price in prices:
            table.add_column(f"{price:g}", justify="right")
        settings = family_settings(args.family, SHORT_RUNS)
        for number in clusters:
            generated = generate(cluster_seed(args.family, int(number)), settings)
            source = f"{args.family} cluster {number:g}"
            cluster = scenario.build(scenario.parse(generated.data, source), source)
            for load in loads:
                rate = load * generated.capacity.rate_rps
                cells = []
                for price in prices:
                    params = {"miss-price": price}
                    s = run_once(cluster, "cs-ucb", rate_rps=rate, policy_params=params).summary
                    cells.append(f"{s.met} / {s.weighted_energy_j / 1e3:.0f}")
                table.add_row(f"{number:g}, {load:g}x", *cells)
    except InputError as err:
        print(f"price_ladder: {err}", file=sys.stderr)
        sys.exit(2)
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
