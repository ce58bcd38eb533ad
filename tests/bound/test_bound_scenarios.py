"""On every built-in scenario, no registered policy beats the bound on the same trace."""

from __future__ import annotations

import pytest

from perllm.bound import BoundResult, bound_for_run
from perllm.cluster import scenario
from perllm.policies.registry import REGISTRY
from perllm.sim.runner import run_once

REQUESTS = 250
CELLS = [(name, factor) for name in scenario.builtin_names() for factor in (1.0, 2.5)]
# The scenarios that replay a shipped trace take seconds a cell: `make test` runs them.
TRACED = {name for name in scenario.builtin_names() if scenario.load(name).workload.trace}
PARAMS = [
    pytest.param(cell, marks=pytest.mark.slow, id=f"{cell[0]}-x{cell[1]:g}")
    if cell[0] in TRACED
    else pytest.param(cell, id=f"{cell[0]}-x{cell[1]:g}")
    for cell in CELLS
]


@pytest.fixture(scope="module", params=PARAMS)
def cell(request: pytest.FixtureRequest) -> tuple[scenario.Cluster, float, BoundResult]:
    name, factor = request.param
    cluster = scenario.load(name)
    rate = cluster.workload.arrivals.rate_rps * factor
    return cluster, rate, bound_for_run(cluster, requests=REQUESTS, rate_rps=rate, seed=2)


# The planner plans the whole trace (seconds a cell): it runs with `make test`, not `make check`.
POLICIES = [
    pytest.param(p, marks=pytest.mark.slow) if p == "planner" else p for p in sorted(REGISTRY)
]


@pytest.mark.parametrize("policy", POLICIES)
def test_no_policy_beats_the_bound(
    cell: tuple[scenario.Cluster, float, BoundResult], policy: str
) -> None:
    cluster, rate, bound = cell
    summary = run_once(cluster, policy, requests=REQUESTS, rate_rps=rate, seed=2).summary
    assert summary.met <= bound.met_upper_bound
    assert summary.goodput_rps <= bound.goodput_upper_bound_rps * (1 + 1e-9)
    assert summary.weighted_energy_j >= bound.energy_lower_bound_at(summary.met)
    assert summary.weighted_energy_j >= bound.energy_floor_j


def test_the_bound_binds_below_all_requests_under_overload(
    cell: tuple[scenario.Cluster, float, BoundResult],
) -> None:
    cluster, rate, bound = cell
    assert 0 < bound.met_upper_bound <= REQUESTS
    if rate > 2 * cluster.workload.arrivals.rate_rps and cluster.name != "tiny":
        assert bound.met_upper_bound < bound.model["pairs"]
        assert bound.frontier[-1].energy_lower_bound_j >= bound.energy_floor_j
