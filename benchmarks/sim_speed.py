"""Simulator speed: simulated requests per second of wall time on a 100-server cluster.

The cluster is built programmatically: 80 edge servers (RTX 3090, Llama-2-7B q4, batch 16) and
20 cloud servers (A100 80 GB, Llama-2-13B fp16, batch 48) behind 10 shared 1 Gbps links with
+-20% bandwidth fluctuation every second, serving the built-in personalized service classes.
The arrival rate (200 requests/s by default) keeps every server busy but the cluster stable under
round-robin, so the virtual horizon grows linearly with the number of requests.

Only the simulation is timed (building the world and running it); generating the requests is
timed separately. Single process, one core.

Usage::

    python benchmarks/sim_speed.py                  # 10k, 100k and 1M requests
    python benchmarks/sim_speed.py --max 100000     # stop after 100k
    python benchmarks/sim_speed.py --policy round-robin --policy least-loaded
"""

from __future__ import annotations

import argparse
import gc
import time
from dataclasses import dataclass
from typing import Any

from machine import header

from perllm.cluster import scenario
from perllm.cluster.scenario import Cluster
from perllm.policies.registry import make_policy
from perllm.sim.world import World
from perllm.workload.generator import generate_requests

SIZES = (10_000, 100_000, 1_000_000)
TARGET_RPS = 20_000.0


def build_cluster(rate_rps: float) -> Cluster:
    """The 100-server benchmark cluster (80 edge + 20 cloud, 10 shared links)."""
    n_links = 10
    links = [
        {
            "name": f"net-{k}",
            "bandwidth-mbps": 1000.0,
            "rtt-ms": 40.0 if k >= 8 else 4.0,
            "tx-power-w": 8.0 if k >= 8 else 2.0,
            "dynamics": {"kind": "fluctuate", "amplitude": 0.2, "period-s": 1.0},
        }
        for k in range(n_links)
    ]
    servers: list[dict[str, Any]] = [
        {
            "name": f"edge-{k}",
            "count": 10,
            "tier": "edge",
            "hardware": "rtx-3090",
            "model": "llama-2-7b",
            "dtype": "q4",
            "max-batch": 16,
            "link": f"net-{k}",
        }
        for k in range(8)
    ]
    servers += [
        {
            "name": f"cloud-{k}",
            "count": 10,
            "tier": "cloud",
            "hardware": "a100-80gb",
            "model": "llama-2-13b",
            "dtype": "fp16",
            "max-batch": 48,
            "link": f"net-{k}",
        }
        for k in (8, 9)
    ]
    data = {
        "name": "bench-100",
        "links": links,
        "servers": servers,
        "workload": {
            "arrivals": {"process": "poisson", "rate-rps": rate_rps},
            "classes": "personalized",
        },
    }
    cluster = scenario.build(scenario.parse(data, "benchmark"), "benchmark")
    assert len(cluster.servers) == 100
    return cluster


@dataclass(frozen=True)
class Row:
    policy: str
    requests: int
    events: int
    generate_s: float
    wall_s: float
    cpu_s: float
    horizon_s: float
    completed: int
    mean_latency_s: float
    busy_fraction: float

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.wall_s

    @property
    def us_per_request(self) -> float:
        return 1e6 * self.wall_s / self.requests


def run_one(cluster: Cluster, policy: str, n: int, seed: int) -> Row:
    gc.collect()
    start = time.perf_counter()
    requests = generate_requests(cluster.workload, n, seed)
    generate_s = time.perf_counter() - start
    gc.collect()
    start, start_cpu = time.perf_counter(), time.process_time()
    world = World(cluster, make_policy(policy, None, seed), requests, seed=seed)
    recorder = world.run()
    wall_s = time.perf_counter() - start
    cpu_s = time.process_time() - start_cpu
    # Every scheduled event took one number from the loop's counter; those left in the heap
    # when the run stopped (future bandwidth changes) were never handled.
    events = next(world.loop._seq) - len(world.loop)
    processing = [p for p in recorder.columns["processing_s"] if p == p]  # not NaN
    return Row(
        policy=policy,
        requests=n,
        events=events,
        generate_s=generate_s,
        wall_s=wall_s,
        cpu_s=cpu_s,
        horizon_s=recorder.horizon_s,
        completed=len(processing),
        mean_latency_s=sum(processing) / max(len(processing), 1),  # type: ignore[arg-type]
        busy_fraction=sum(e.busy_s for e in world.servers)
        / (len(world.servers) * max(recorder.horizon_s, 1e-9)),
    )


def print_table(rows: list[Row], yardstick_rps: float) -> None:
    header = (
        f"{'policy':<13} {'requests':>9} {'events':>10} {'ev/req':>6} {'gen s':>6} "
        f"{'wall s':>7} {'cpu s':>7} {'req/s':>7} {'req/cpu-s':>9} {'per-yard':>8} {'us/req':>6} "
        f"{'ratio':>5} {'horizon s':>9} {'lat s':>5} {'busy%':>5}"
    )
    print(header)
    print("-" * len(header))
    previous: dict[str, Row] = {}
    for row in rows:
        before = previous.get(row.policy)
        ratio = f"{row.us_per_request / before.us_per_request:5.2f}" if before else f"{'-':>5}"
        print(
            f"{row.policy:<13} {row.requests:>9,} {row.events:>10,} "
            f"{row.events / row.requests:>6.2f} {row.generate_s:>6.2f} {row.wall_s:>7.2f} "
            f"{row.cpu_s:>7.2f} {row.requests_per_s:>7,.0f} {row.requests / row.cpu_s:>9,.0f} "
            f"{row.requests / row.cpu_s / (yardstick_rps / 1e6):>8,.0f} "
            f"{row.us_per_request:>6.1f} {ratio} {row.horizon_s:>9.0f} "
            f"{row.mean_latency_s:>5.2f} {100 * row.busy_fraction:>5.1f}"
        )
        previous[row.policy] = row
    print(
        "\nreq/s: simulated requests per second of wall time (req/cpu-s: per second of process "
        "CPU time, steadier on a busy machine); per-yard: req/cpu-s per million yardstick "
        "events/s (machine.py; comparable across machines); ratio: time per request relative to "
        "the previous size (1.00 = linear growth); lat s: mean processing time; busy%: mean "
        "share of the horizon the servers had a batch. "
        f"Target >= {TARGET_RPS:,.0f} simulated requests/s."
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--max", type=int, default=SIZES[-1], help="largest size to run")
    parser.add_argument("--policy", action="append", help="policy (repeatable)")
    parser.add_argument("--rate", type=float, default=200.0, help="arrival rate, requests/s")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    policies = args.policy or ["round-robin"]
    cluster = build_cluster(args.rate)
    line, speed = header()
    print(line)
    print(
        f"cluster: 80 edge rtx-3090 7B-q4 + 20 cloud a100-80gb 13B-fp16, "
        f"{len(cluster.links)} links; arrivals {args.rate:g} requests/s (poisson)\n"
    )
    rows = []
    for policy in policies:
        for n in SIZES:
            if n > args.max:
                break
            rows.append(run_one(cluster, policy, n, args.seed))
            print(
                f"  {policy} {n:,}: {rows[-1].wall_s:.2f} s "
                f"({rows[-1].requests_per_s:,.0f} requests/s)",
                flush=True,
            )
    print()
    print_table(rows, speed)


if __name__ == "__main__":
    main()
