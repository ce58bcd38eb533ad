"""Every policy on one scenario, one seed, one load: the table quoted in the README.

Run: ``python benchmarks/policy_table.py [--scenario perllm-paper] [--requests 20000]
[--seed 1] [--jobs 2] [--executor ray [--ray-address HOST:PORT]]``. Each row is ``perllm
simulate --scenario S --policy P --requests N --seed K``.
"""

from __future__ import annotations

import argparse
import sys

from perllm.cluster import scenario
from perllm.errors import InputError
from perllm.experiments.executors import map_in_order
from perllm.experiments.show import summary_table
from perllm.experiments.sweep_args import add_sweep_arguments, executor_spec
from perllm.metrics.summary import Summary
from perllm.policies.registry import ENTRIES
from perllm.sim.runner import run_once


def _run(args: tuple[str, str, int, int]) -> Summary:
    name, policy, requests, seed = args
    return run_once(scenario.load(name), policy, requests=requests, seed=seed).summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="perllm-paper")
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=2)
    add_sweep_arguments(parser, "--jobs", resume=False)
    args = parser.parse_args()
    work = [(args.scenario, e.name, args.requests, args.seed) for e in ENTRIES]
    try:
        summaries = map_in_order(executor_spec(args, args.jobs), _run, work)
    except InputError as err:
        print(f"policy_table: {err}", file=sys.stderr)
        sys.exit(2)
    summaries.sort(key=lambda s: -s.goodput_rps)
    summary_table(summaries, title=f"{args.scenario}, {args.requests} requests, seed {args.seed}")


if __name__ == "__main__":
    main()
