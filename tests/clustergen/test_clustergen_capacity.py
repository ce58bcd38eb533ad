"""Capacity: the fluid estimate, the truthful cluster, and the measured rate."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from perllm.cluster import scenario
from perllm.cluster.truth import ClusterTruth
from perllm.clustergen.capacity import (
    TARGET,
    fluid_capacity_rps,
    measure_capacity,
    truthful,
)
from perllm.sim.runner import run_once

TWO_GPUS: dict[str, Any] = {
    "name": "two",
    "links": [{"name": "lan", "bandwidth-mbps": 1000, "rtt-ms": 2, "tx-power-w": 1.0}],
    "servers": [
        {
            "name": "gpu",
            "count": 2,
            "tier": "edge",
            "hardware": "rtx-4090",
            "model": "llama-2-7b",
            "dtype": "q4",
            "max-batch": 8,
            "link": "lan",
        }
    ],
    "workload": {"arrivals": {"process": "poisson", "rate-rps": 1.0}, "classes": "personalized"},
}


def _cluster(**group: Any) -> scenario.Cluster:
    data = copy.deepcopy(TWO_GPUS)
    data["servers"][0].update(group)
    return scenario.build(scenario.parse(data, "test"))


def test_fluid_capacity_follows_the_true_speed() -> None:
    exact = fluid_capacity_rps(_cluster())
    assert exact > 0
    assert fluid_capacity_rps(_cluster(**{"true-speed-factor": 0.5})) == pytest.approx(exact / 2)


def test_truthful_cluster_shows_the_truth() -> None:
    slow = _cluster(**{"true-speed-factor": 0.5, "true-power-factor": 2.0})
    true = truthful(slow)
    assert true.truth == ClusterTruth()
    spec, nominal = true.servers[0], slow.servers[0]
    assert spec.perf.step_weights_s == pytest.approx(2 * nominal.perf.step_weights_s)
    assert spec.power.max_w == pytest.approx(2 * nominal.power.max_w)


def test_measured_capacity_separates_light_from_heavy_load() -> None:
    cluster = _cluster()
    capacity = measure_capacity(cluster, requests=300, seed=1)
    assert capacity.idle_satisfaction > 0.9
    assert capacity.satisfaction >= TARGET * capacity.idle_satisfaction
    assert 0.2 * capacity.fluid_rps < capacity.rate_rps < 5 * capacity.fluid_rps
    met = {}
    for factor in (0.5, 3.0):
        rate = factor * capacity.rate_rps
        summary = run_once(cluster, "greedy-latency", requests=600, rate_rps=rate, seed=2).summary
        met[factor] = summary.deadline_satisfaction
    assert met[0.5] > 0.9 > met[3.0]


def test_a_slower_truth_has_a_lower_capacity() -> None:
    fast = measure_capacity(_cluster(), requests=300, seed=1).rate_rps
    slow = measure_capacity(_cluster(**{"true-speed-factor": 0.5}), requests=300, seed=1)
    assert slow.rate_rps < 0.8 * fast
