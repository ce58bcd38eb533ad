"""Trace replay speed: the whole Azure LLM inference 2023 conversation trace (19,366 requests,
data/traces/) on the paper's testbed (the built-in scenario ``azure-conv-paper``: 5 Xeon CPU
edges and one A100), at the trace's own times. Target: at most 5 s of simulation on one core.

Reading the trace and building the requests is timed apart from the simulation (building the
world and running it). Single process, one core. Each policy is timed ``--repeat`` times; the
best time is printed with the run's outcome (refused = longer than Llama-2's 4,096-token
context window, counted as missed).

Usage::

    python benchmarks/trace_replay.py
    python benchmarks/trace_replay.py --policy cs-ucb --policy least-loaded --repeat 3
"""

from __future__ import annotations

import argparse
import gc
import time

from machine import header

from perllm.cluster import scenario
from perllm.metrics.summary import summarize
from perllm.policies.registry import make_policy
from perllm.sim.runner import seeds_for, workload_for
from perllm.sim.world import World

SCENARIO = "azure-conv-paper"
TARGET_S = 5.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--policy", action="append", help="policy name (repeatable)")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    policies = args.policy or ["cs-ucb", "least-loaded"]
    print(header()[0])
    cluster = scenario.load(SCENARIO)
    start = time.perf_counter()
    requests = workload_for(cluster, seed=args.seed)
    read_s = time.perf_counter() - start
    print(f"{SCENARIO}: {len(requests)} requests read and built in {read_s:.2f} s")
    _, policy_seed, world_seed = seeds_for(args.seed)
    for name in policies:
        best = float("inf")
        for _ in range(args.repeat):
            gc.collect()
            policy = make_policy(name, None, policy_seed)
            start = time.perf_counter()
            world = World(cluster, policy, requests, seed=world_seed)
            recorder = world.run()
            best = min(best, time.perf_counter() - start)
        summary = summarize(recorder, policy=name, scenario=SCENARIO, weights=cluster.weights)
        verdict = "within" if best <= TARGET_S else "OVER"
        print(
            f"{name:>14}: {best:6.2f} s simulation ({verdict} the {TARGET_S:g} s target), "
            f"{len(requests) / best:,.0f} requests/s; met {summary.met}, "
            f"refused {len(recorder.reasons)}, completed {summary.completed}"
        )


if __name__ == "__main__":
    main()
