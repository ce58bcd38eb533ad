"""Prefix-aware routing on Mooncake's conversation trace (a quality benchmark).

Run: ``python benchmarks/prefix_reuse.py [--scenario NAME] [--policies a,b,..] [--speeds 1,2]
[--seed K]``.

Replays the whole trace (12,031 requests, 12k-token prompts on average, prompts named in
512-token blocks that repeat across a conversation's turns) on ``mooncake-cloud``: 4 H100,
4 A100 and 2 RTX 4090, at the trace's own times and compressed (``--speeds``: 2 is twice the
trace's mean rate of 3.4 requests/s). Every server caches prefixes (an LRU of its KV cache's
size); what differs is the router. Each policy runs twice: with the router's record of the
prompt blocks it sent to each server (``prefix-record: true``, :mod:`perllm.prefix`) and
without it, on the same requests. Prints, per policy and record, the deadlines met, goodput,
weighted energy per met request, the share of prompt tokens whose prefill the servers' caches
saved, and the goodput over the same policy's without the record. ``least-loaded`` is
``prefix-affinity`` without the signal.

Attribution: Mooncake trace (Apache 2.0), Qin et al., "Mooncake", USENIX FAST 2025 (``NOTICE``).
"""

from __future__ import annotations

import argparse
import dataclasses

from machine import header
from rich.console import Console
from rich.table import Table

from perllm.cluster import scenario
from perllm.sim.runner import run_once, workload_for

POLICIES = "prefix-affinity,least-loaded,cs-ucb,feasible-energy,feasible-latency,greedy-latency"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--scenario", default="mooncake-cloud")
    parser.add_argument("--policies", default=POLICIES, help="comma-separated policy names")
    parser.add_argument("--speeds", default="1,2", help="comma-separated time compressions")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(header()[0])
    base = scenario.load(args.scenario)
    for speed in (float(x) for x in args.speeds.split(",")):
        _speed_table(base, args.policies.split(","), speed, args.seed)


def _speed_table(base: scenario.Cluster, policies: list[str], speed: float, seed: int) -> None:
    rate = None if speed == 1.0 else speed * base.workload.arrivals.rate_rps
    requests = workload_for(base, rate_rps=rate, seed=seed)
    title = f"{base.name} at {speed:g}x the trace's rate: the router's prefix record on and off"
    table = Table(title=title)
    columns = ("policy", "record", "met %", "goodput/s", "J per met", "prefill saved", "goodput")
    for column in columns:
        table.add_column(column, justify="right")
    for policy in (p.strip() for p in policies):
        goodput = {}
        for record in (False, True):
            cluster = dataclasses.replace(base, prefix_record=record)
            result = run_once(cluster, policy, seed=seed, workload=requests, rate_rps=rate)
            summary = result.summary
            goodput[record] = summary.goodput_rps
            cached, prompt = result.recorder.prefill_saved()
            per_met = summary.weighted_energy_j / summary.met if summary.met else float("inf")
            table.add_row(
                policy,
                "on" if record else "off",
                f"{100 * summary.deadline_satisfaction:.1f}",
                f"{summary.goodput_rps:.3f}",
                f"{per_met:.0f}",
                f"{100 * cached / prompt:.1f}%",
                f"{goodput[True] / goodput[False]:.3f}x" if record else "1",
            )
    Console(width=120).print(table)


if __name__ == "__main__":
    main()
