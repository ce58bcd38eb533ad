"""Run one simulation from names: scenario, policy, load and seed -> summary and records."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from perllm.cluster.scenario import Cluster
from perllm.domain import Request
from perllm.errors import InputError
from perllm.metrics.recorder import Recorder
from perllm.metrics.summary import Summary, summarize
from perllm.policies.base import Policy
from perllm.policies.planned import PlannedPolicy
from perllm.policies.registry import make_policy
from perllm.sim.world import World
from perllm.workload.generator import generate_requests


@dataclass(frozen=True, slots=True)
class RunResult:
    summary: Summary
    recorder: Recorder


def seeds_for(seed: int) -> tuple[int, int, int]:
    """Independent seeds for the workload, the policy and the world (bandwidth draws)."""
    workload, policy, world = np.random.SeedSequence(seed).generate_state(3)
    return int(workload), int(policy), int(world)


def workload_for(
    cluster: Cluster, *, requests: int | None = None, rate_rps: float | None = None, seed: int = 0
) -> Sequence[Request]:
    """The requests :func:`run_once` simulates for these arguments."""
    n = requests if requests is not None else cluster.requests
    return generate_requests(cluster.workload, n, seeds_for(seed)[0], rate_rps)


def run_once(
    cluster: Cluster,
    policy: str | Policy,
    *,
    requests: int | None = None,
    rate_rps: float | None = None,
    seed: int = 0,
    policy_params: dict[str, Any] | None = None,
    track_oracle: bool = False,
    progress: Callable[[int], None] | None = None,
    workload: Sequence[Request] | None = None,
) -> RunResult:
    """Simulate ``policy`` (a registered name, or a policy object of the caller's own) on
    ``cluster``; the same arguments give the same result, exactly. ``workload`` is the run's
    requests when the caller made them already (:func:`workload_for`, same arguments)."""
    _, policy_seed, world_seed = seeds_for(seed)
    if workload is None:
        reqs = workload_for(cluster, requests=requests, rate_rps=rate_rps, seed=seed)
    else:
        reqs = workload
    if isinstance(policy, str):
        chosen = make_policy(policy, policy_params, policy_seed)
    elif policy_params:
        raise InputError("policy_params: only for a policy given by name")
    else:
        chosen = policy
    if isinstance(chosen, PlannedPolicy):  # clairvoyant: planned from the whole trace first
        from perllm.planner import plan_trace

        rounds = chosen.config.repair_rounds
        plan = plan_trace(cluster, reqs, world_seed, repair_rounds=rounds)
        chosen.load_plan(plan.servers, plan.priorities)
    oracle = make_policy("oracle", None, policy_seed) if track_oracle else None
    world = World(cluster, chosen, reqs, seed=world_seed, oracle=oracle, progress=progress)
    recorder = world.run()
    name = policy if isinstance(policy, str) else chosen.name
    summary = summarize(recorder, policy=name, scenario=cluster.name, weights=cluster.weights)
    rate = rate_rps if rate_rps is not None else cluster.workload.arrivals.rate_rps
    return RunResult(dataclasses.replace(summary, seed=seed, rate_rps=rate), recorder)
