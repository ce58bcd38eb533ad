"""Policies on the shipped production traces (a quality benchmark).

Run: ``python benchmarks/real_traces.py [--policies a,b,..] [--seed K]``.

Replays the whole of each trace at its own times on the built-in GPU-edge cluster (2 RTX 4090,
2 RTX 3090 and a Jetson AGX Orin at the edge, an A100 and an H100 in the cloud): the Azure LLM
inference 2023 conversation (19,366 requests) and code (8,819) traces, and Mooncake's
conversation trace (12,031 requests). Deadlines are each trace scenario's SLOs (time to first
token plus time per output token times the output tokens; ``docs/traces.md``). Prints, per
trace and policy, the deadlines met, goodput, weighted energy per met request and the requests
refused (longer than every server's context window or KV cache, counted as missed).

Attribution: Azure LLM inference trace 2023 (CC BY 4.0), Patel et al., "Splitwise", ISCA 2024;
Mooncake trace (Apache 2.0), Qin et al., "Mooncake", USENIX FAST 2025 (``NOTICE``).
"""

from __future__ import annotations

import argparse

from machine import header
from rich.console import Console
from rich.table import Table

from perllm.cluster import scenario
from perllm.sim.runner import run_once

SCENARIOS = ("azure-conv-gpu-edge", "azure-code-gpu-edge", "mooncake-gpu-edge")
POLICIES = "cs-ucb,greedy-latency,feasible-latency,least-loaded,feasible-energy,cloud-only"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--policies", default=POLICIES, help="comma-separated policy names")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(header()[0])
    table = Table(title="whole traces at their own times, GPU-edge cluster")
    for column in ("trace", "policy", "requests", "met %", "goodput/s", "J per met", "refused"):
        table.add_column(column, justify="right")
    for name in SCENARIOS:
        cluster = scenario.load(name)
        for policy in args.policies.split(","):
            result = run_once(cluster, policy.strip(), seed=args.seed)
            summary = result.summary
            per_met = summary.weighted_energy_j / summary.met if summary.met else float("inf")
            table.add_row(
                name,
                policy,
                f"{summary.requests:,}",
                f"{100 * summary.deadline_satisfaction:.1f}",
                f"{summary.goodput_rps:.2f}",
                f"{per_met:.0f}",
                f"{len(result.recorder.reasons):,}",
            )
    Console(width=120).print(table)


if __name__ == "__main__":
    main()
