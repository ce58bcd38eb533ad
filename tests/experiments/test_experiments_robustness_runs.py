"""Robustness runs: a generated cluster, one run per task, and the optional bound hook."""

from __future__ import annotations

import importlib.machinery
import json
import math
import sys
import types
from typing import Any

import pytest

from perllm.experiments import robustness_runs
from perllm.experiments.robustness_runs import (
    ROW_FIELDS,
    RunTask,
    bound_available,
    bound_task,
    generate_task,
    run_task,
)
from perllm.experiments.rows import GeneratedCluster

SETTINGS = {"servers": [2, 3], "capacity-requests": 60, "requests": 80, "steady-multiple": 0}


@pytest.fixture(scope="module")
def generated() -> GeneratedCluster:
    return generate_task(5, SETTINGS)


def _task(generated: GeneratedCluster, policy: str, load: float = 1.0) -> RunTask:
    capacity = generated.capacity.rate_rps
    return RunTask(5, generated.data, capacity, load, 0, policy, policy, {})


def test_a_run_gives_one_complete_row(generated: GeneratedCluster) -> None:
    row = run_task(_task(generated, "least-loaded"))
    assert set(row.to_json()) == set(ROW_FIELDS)
    assert row.requests == 80
    assert 0 <= row.met <= 80
    assert row.rate_rps == pytest.approx(generated.capacity.rate_rps, rel=1e-5)
    assert math.isnan(row.bound_goodput_rps)
    assert run_task(_task(generated, "least-loaded")).met == row.met  # deterministic


def test_a_generated_cluster_round_trips_through_json(generated: GeneratedCluster) -> None:
    text = json.dumps(generated.to_json())
    again = GeneratedCluster.from_json(json.loads(text))
    assert again == generated
    assert json.dumps(again.to_json()) == text
    assert list(generated.to_json()) == ["family", "seed", "data", "capacity"]


def test_variants_pass_their_parameters(generated: GeneratedCluster) -> None:
    base = _task(generated, "cs-ucb")
    params = {"miss-price": 0.0}
    variant = RunTask(5, base.data, base.capacity_rps, 1.0, 0, "ucb-x", "cs-ucb", params)
    assert run_task(variant).policy == "ucb-x"


def test_the_bound_hook_is_skipped_without_the_package_and_called_with_it(
    generated: GeneratedCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[Any, ...]] = []

    def compute_bound(cluster: Any, requests: Any, world_seed: int) -> Any:
        calls.append((cluster, requests, world_seed))
        return types.SimpleNamespace(goodput_upper_bound_rps=12.5)

    fake = types.ModuleType(robustness_runs.BOUND_MODULE)
    fake.__spec__ = importlib.machinery.ModuleSpec(robustness_runs.BOUND_MODULE, None)
    fake.compute_bound = compute_bound  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, robustness_runs.BOUND_MODULE, fake)
    assert bound_available()
    key, value = bound_task(_task(generated, "oracle", load=0.7))
    assert key == (5, 0.7, 0) and value == 12.5
    cluster, requests, _ = calls[0]
    assert len(requests) == cluster.requests == 80
