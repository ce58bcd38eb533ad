"""On tiny instances the bound is at least the best of every assignment, run in the simulator.

Each instance is a handful of requests arriving together on two or three slow servers (so
they compete), with deadlines from tight to lenient and some document uploads; every
assignment of requests to servers is simulated with a fixed plan.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pytest

from perllm.bound import BoundResult, compute_bound
from perllm.bound.charges import alone_processing_s
from perllm.cluster import scenario
from perllm.domain import Request
from perllm.metrics.summary import summarize
from perllm.policies.planned import PlannedConfig, PlannedPolicy
from perllm.sim.world import World


@dataclass(frozen=True)
class Outcome:
    met: int
    goodput_rps: float
    weighted_j: float


def _cluster(kind: str) -> scenario.Cluster:
    if kind == "xeon-pair":  # two CPU edges of perllm-paper, fluctuating links
        config = scenario.load("perllm-paper").config
        edge = config.servers[0].model_copy(update={"count": 2})
        return scenario.build(config.model_copy(update={"servers": [edge]}))
    # tiny with small batches, so that a few requests fill every server
    config = scenario.load("tiny").config
    groups = [g.model_copy(update={"max_batch": 2}) for g in config.servers]
    if kind == "tiny-2":
        groups = [groups[0].model_copy(update={"count": 1}), groups[1]]
    links = [
        link.model_copy(
            update={
                "bandwidth_mbps": 20.0,
                "dynamics": link.dynamics.model_copy(
                    update={"kind": "fluctuate", "amplitude": 0.3, "period_s": 0.5}
                ),
            }
        )
        for link in config.links
    ]
    return scenario.build(config.model_copy(update={"servers": groups, "links": links}))


def _requests(
    cluster: scenario.Cluster, n: int, seed: int, slack: tuple[float, float] = (0.8, 4.0)
) -> list[Request]:
    rng = np.random.default_rng(seed)
    prompt = rng.integers(10, 300, n).astype(float)
    output = rng.integers(2, 150, n).astype(float)
    fastest = np.min([alone_processing_s(s, prompt, output) for s in cluster.servers], axis=0)
    arrival = np.sort(rng.uniform(0.0, 1.0, n))
    deadline = fastest * rng.uniform(*slack, n) + 0.1
    attachment = np.where(rng.random(n) < 0.3, rng.integers(100_000, 3_000_000, n), 0)
    return [
        Request.of(
            id=i,
            arrival_s=float(arrival[i]),
            service_class="c",
            prompt_tokens=int(prompt[i]),
            output_tokens=int(output[i]),
            request_bytes=int(prompt[i]) * 4 + int(attachment[i]),
            response_bytes=int(output[i]) * 4 + 512,
            deadline_s=float(deadline[i]),
        )
        for i in range(n)
    ]


def _run(cluster: scenario.Cluster, trace: list[Request], plan: tuple[int, ...]) -> Outcome:
    policy = PlannedPolicy(PlannedConfig(), 0)
    policy.load_plan({r.routed.id: s for r, s in zip(trace, plan, strict=True)})
    summary = summarize(
        World(cluster, policy, trace, seed=7).run(),
        policy="fixed",
        scenario=cluster.name,
        weights=cluster.weights,
    )
    return Outcome(summary.met, summary.goodput_rps, summary.weighted_energy_j)


# (cluster, requests, seed, deadline / fastest alone time): mixed, then crowded.
CASES = [
    ("xeon-pair", 8, 1, (0.8, 4.0)),
    ("xeon-pair", 8, 2, (1.0, 1.6)),
    ("tiny-2", 8, 3, (0.8, 4.0)),
    ("tiny-3", 6, 4, (0.8, 4.0)),
    ("tiny-3", 6, 5, (1.0, 1.3)),
]


@pytest.fixture(scope="module", params=CASES, ids=[f"{c[0]}-{c[1]}-{c[2]}" for c in CASES])
def enumerated(request: pytest.FixtureRequest) -> tuple[BoundResult, list[Outcome], int]:
    kind, n, seed, slack = request.param
    cluster = _cluster(kind)
    trace = _requests(cluster, n, seed, slack)
    bound = compute_bound(cluster, trace, 7, frontier=[k / n for k in range(1, n + 1)])
    plans = itertools.product(range(len(cluster.servers)), repeat=n)
    return bound, [_run(cluster, trace, plan) for plan in plans], n


def test_no_assignment_meets_more_than_the_bound(enumerated) -> None:  # type: ignore[no-untyped-def]
    bound, outcomes, n = enumerated
    best = max(o.met for o in outcomes)
    assert best <= bound.met_upper_bound <= n
    assert max(o.goodput_rps for o in outcomes) <= bound.goodput_upper_bound_rps * (1 + 1e-9)


def test_no_assignment_spends_less_than_the_energy_bound(enumerated) -> None:  # type: ignore[no-untyped-def]
    bound, outcomes, _ = enumerated
    for outcome in outcomes:
        assert outcome.weighted_j >= bound.energy_lower_bound_at(outcome.met)
        assert outcome.weighted_j >= bound.energy_floor_j


def test_capacity_binds_on_a_crowded_instance() -> None:
    # Fewer requests can be met together than could each be met alone.
    cluster = _cluster("xeon-pair")
    trace = _requests(cluster, 8, 2, (1.0, 1.6))
    bound = compute_bound(cluster, trace, 7)
    assert bound.met_upper_bound < len(set(bound.pair_request.tolist()))
