"""The clairvoyant planner: its plan reproduces its best round, and it beats online policies."""

from __future__ import annotations

import pytest

from perllm.cluster import scenario
from perllm.domain import Request
from perllm.planner import plan_trace
from perllm.policies.registry import make_policy
from perllm.sim.runner import run_once, seeds_for
from perllm.workload.generator import generate_requests


def test_the_policy_needs_a_plan() -> None:
    policy = make_policy("planner")
    request = Request.of(0, 0.0, "c", 10, 10, 40, 552, 5.0)
    with pytest.raises(TypeError, match="plan"):
        policy.select(request, None)  # type: ignore[arg-type]


@pytest.mark.slow
def test_the_run_is_the_best_planning_round() -> None:
    cluster = scenario.load("perllm-paper")
    workload_seed, _, world_seed = seeds_for(4)
    trace = generate_requests(cluster.workload, 400, workload_seed)
    plan = plan_trace(cluster, trace, world_seed, repair_rounds=2)
    assert set(plan.servers) == {r.routed.id for r in trace}
    best = max(r["goodput_rps"] for r in plan.rounds)
    summary = run_once(cluster, "planner", requests=400, seed=4).summary
    assert summary.goodput_rps == best


@pytest.mark.slow
@pytest.mark.parametrize("name", ["perllm-paper", "perllm-paper-6b", "perllm-paper-33b"])
def test_at_least_as_good_as_the_online_policies_at_nominal_load(name: str) -> None:
    cluster = scenario.load(name)
    planner = run_once(cluster, "planner", requests=600, seed=3).summary
    for online in ("cs-ucb", "least-loaded", "greedy-latency"):
        other = run_once(cluster, online, requests=600, seed=3).summary
        assert planner.met >= other.met, online
        # On goodput (met inside the arrival window) the planner is not always ahead of CS-UCB
        # (perllm-paper-6b at this seed: 10.93 against 10.95 req/s, one request); the README
        # says so.
        tolerance = 0.99 if online == "cs-ucb" else 1.0
        assert planner.goodput_rps >= tolerance * other.goodput_rps, online
