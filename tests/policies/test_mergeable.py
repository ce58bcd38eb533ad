"""Learned statistics as additive totals: a round trip, and merging two routers' by addition."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from perllm.cluster import scenario
from perllm.policies.mergeable import (
    SharedStatistics,
    add_totals,
    arm_bandit_state,
    arm_bandit_totals,
    cs_ucb_state,
    cs_ucb_totals,
    subtract_totals,
)
from perllm.policies.registry import make_policy
from perllm.sim.world import simulate
from perllm.workload.generator import generate_requests

CLUSTER = scenario.load("tiny")


def run(policy: Any, n: int, seed: int) -> None:
    simulate(CLUSTER, policy, generate_requests(CLUSTER.workload, n, seed), seed=seed)


def test_cs_ucb_totals_round_trip_and_add() -> None:
    one, two = make_policy("cs-ucb", seed=1), make_policy("cs-ucb", seed=2)
    run(one, 200, 1)
    run(two, 100, 2)
    assert isinstance(one, SharedStatistics)
    totals_one, totals_two = one.shared_stats(), two.shared_stats()
    n = one.state()["n_servers"]
    assert cs_ucb_totals(cs_ucb_state(totals_one, n, list(one.classes))) == totals_one
    merged = make_policy("cs-ucb", seed=3)  # never decided: it learns the cluster's size here
    merged.adopt_shared_stats(add_totals(totals_one, totals_two), n)
    state = merged.state()
    expected = np.sum(one.state()["times"]["count"]) + np.sum(two.state()["times"]["count"])
    assert np.sum(state["times"]["count"]) == expected
    lengths_one, lengths_two = one.lengths.state()["count"], two.lengths.state()["count"]
    assert state["lengths"]["count"] == {
        k: lengths_one.get(k, 0) + lengths_two.get(k, 0) for k in lengths_one | lengths_two
    }
    run(merged, 20, 4)  # and decides on them
    assert np.sum(merged.state()["times"]["count"]) > expected


@pytest.mark.parametrize("name", ["ucb1", "epsilon-greedy"])
def test_arm_bandit_totals_keep_pending_pulls(name: str) -> None:
    one, two = make_policy(name, seed=1), make_policy(name, seed=2)
    run(one, 200, 1)
    run(two, 100, 2)
    assert isinstance(one, SharedStatistics) and isinstance(two, SharedStatistics)
    arms = one.arms
    assert arms is not None
    totals = one.shared_stats()
    state, reward = arm_bandit_state(totals, arms.n_arms, list(arms.classes))
    assert arm_bandit_totals(state, reward) == totals
    arms.pending[0, 0] += 2.0  # pulls of its own still out
    finished = arms.count.sum()
    one.adopt_shared_stats(add_totals(totals, two.shared_stats()), len(CLUSTER.servers))
    assert arms.pending[0, 0] == 2.0
    assert arms.count.sum() == finished + two.arms.count.sum()  # type: ignore[union-attr]
    assert np.array_equal(arms.tried, arms.count + arms.pending)


def test_subtract_drops_rounding_noise() -> None:
    assert subtract_totals({"a": 0.1 + 0.2, "b": 2.0}, {"a": 0.3, "c": 1.0}) == {
        "b": 2.0,
        "c": -1.0,
    }
