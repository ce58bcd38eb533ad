"""Time per ``select`` + ``observe`` for each policy at 6, 100 and 1,000 servers.

Run: ``python benchmarks/decision_speed.py [--decisions N] [--repeats R]``. Loads are redrawn at
random between decisions (outside the timed region) so that policies see changing state; feedback
for each decision is given right after it, inside the timed region. One decision before the timed
ones loads the compiled kernels (numba compiles them on a machine's first run, then caches them).
The oracle is left out: it needs the simulator's clairvoyant view and its cost is the
simulation of every server forward.

Every run replays the same decisions (same requests, loads and seeds), so the same decision can
be timed ``R`` times. The table gives the percentiles of the first run as measured, and those of
each decision's least time over the ``R`` runs: on a shared machine a slow stretch (another
process on the core) lands on different decisions in each run, so the least of ``R`` is the
decision's own cost, and its p99 the tail that the code itself has.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from rich.console import Console
from rich.table import Table

from perllm.domain import EnergyParts, Feedback, Request
from perllm.policies.registry import ENTRIES, make_policy
from perllm.testing import paper_view


def _requests(n: int, rng: np.random.Generator) -> list[Request]:
    classes = ("realtime-assistant", "chat", "doc-summary", "batch-analytics")
    return [
        Request.of(
            id=i,
            arrival_s=float(i),
            service_class=classes[i % 4],
            prompt_tokens=int(rng.integers(10, 2000)),
            output_tokens=int(rng.integers(5, 500)),
            request_bytes=4000,
            response_bytes=2000,
            deadline_s=float(rng.uniform(3, 300)),
        )
        for i in range(n)
    ]


def measure(policy_name: str, servers: int, decisions: int) -> np.ndarray:
    """Nanoseconds per select + observe, one sample per decision."""
    rng = np.random.default_rng(0)
    view = paper_view(servers)
    policy = make_policy(policy_name, seed=0)
    requests = _requests(decisions, rng)
    policy.select(requests[0].routed, view)  # compiled kernels load (or compile) outside timing
    samples = np.empty(decisions)
    clock = time.perf_counter_ns
    for i, request in enumerate(requests):
        view.running[:] = rng.integers(0, 4, servers)
        view.queued[:] = rng.integers(0, 2, servers)
        view.clock = request.routed.arrival_s  # the router's clock moves with the arrivals
        start = clock()
        decision = policy.select(request.routed, view)
        policy.observe(
            Feedback(
                request=request.routed,
                decision=decision,
                processing_s=5.0,
                transfer_s=0.1,
                queue_s=0.5,
                prefill_s=0.4,
                decode_s=4.0,
                output_tokens=request.output_tokens,
                energy=EnergyParts(0.1, 100.0, 0.0),
                met=bool(i % 3),
            )
        )
        samples[i] = clock() - start
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=8000)
    parser.add_argument("--repeats", type=int, default=5, help="runs of the same decisions")
    parser.add_argument("--policies", nargs="*", help="only these policies (default: all)")
    args = parser.parse_args()
    if args.decisions < 2 or args.repeats < 1:
        parser.error("--decisions must be at least 2 and --repeats at least 1")
    table = Table(
        title=f"select + observe, {args.decisions} decisions each (microseconds); "
        "'steady' = the second half, after exploration; "
        f"'least of {args.repeats}' = each decision's least time over {args.repeats} runs"
    )
    columns = ("policy", "servers", "mean", "p50", "p99", "steady p50", "steady p99")
    for column in (*columns, f"least of {args.repeats}: steady p50", "steady p99"):
        table.add_column(column, justify="right")
    for entry in ENTRIES:
        if entry.clairvoyant or (args.policies and entry.name not in args.policies):
            continue
        for servers in (6, 100, 1000):
            runs = [
                measure(entry.name, servers, args.decisions) / 1000.0 for _ in range(args.repeats)
            ]
            us, least = runs[0], np.min(runs, axis=0)
            half = len(us) // 2
            table.add_row(
                entry.name,
                str(servers),
                f"{us.mean():.1f}",
                *(
                    f"{np.percentile(x, q):.1f}"
                    for x in (us, us[half:], least[half:])
                    for q in (50, 99)
                ),
            )
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
