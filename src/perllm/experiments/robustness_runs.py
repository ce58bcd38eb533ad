"""The runs of the robustness benchmark, one function per worker task (picklable arguments).

Clusters travel between processes as their scenario mappings (plain data) and are rebuilt, once
per process, by :func:`cluster_of`: a generated cluster, or its trace cell cluster on a
production trace (:mod:`perllm.experiments.robustness_traces`), the same seed under another key.
A policy is named by a *label*: a registered policy name, or a variant label mapped to
``(policy, params)``. A run gives a :class:`~perllm.experiments.rows.RunRow`, a generated
cluster a :class:`~perllm.experiments.rows.GeneratedCluster`.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import math
import time
from collections.abc import Mapping
from typing import Any

from perllm.cluster import scenario
from perllm.clustergen import generate, settings_from
from perllm.experiments.rows import GeneratedCluster, RunRow
from perllm.sim.runner import run_once, seeds_for
from perllm.workload.generator import generate_requests

__all__ = [
    "BOUND_MODULE",
    "ROW_FIELDS",
    "RunTask",
    "bound_available",
    "bound_task",
    "cluster_of",
    "generate_task",
    "run_task",
]

BOUND_MODULE = "perllm.bound"  # optional: ``compute_bound(cluster, requests, world_seed)``

ROW_FIELDS: tuple[str, ...] = RunRow.columns()
"""The columns of ``robustness.csv``: :class:`~perllm.experiments.rows.RunRow`'s fields."""

_CLUSTERS: dict[tuple[int, str], scenario.Cluster] = {}


@dataclasses.dataclass(frozen=True, slots=True)
class RunTask:
    """One policy on one cell: cluster ``cluster`` (of cluster family ``family``) at
    ``load x capacity``, run seed ``seed``; ``trace`` names the production trace of a trace
    cell (``data`` is then its trace cell cluster), empty for the cluster's own workload."""

    cluster: int
    data: Mapping[str, Any]
    capacity_rps: float
    load: float
    seed: int
    label: str
    policy: str
    params: dict[str, Any]
    family: str = "mixed"
    trace: str = ""


def generate_task(
    seed: int, settings: Mapping[str, object], family: str = "mixed"
) -> GeneratedCluster:
    """Generate cluster ``seed`` from ``settings`` (the family's, with any overrides): its
    scenario mapping and capacity (runs in a worker)."""
    generated = generate(seed, settings_from(dict(settings)))
    return GeneratedCluster(family, seed, generated.data, generated.capacity)


def cluster_of(seed: int, data: Mapping[str, Any], trace: str = "") -> scenario.Cluster:
    """The cluster of a scenario mapping, built once per process and kept by ``(seed, trace)``:
    generated cluster ``seed`` (``trace`` empty) or its trace cell cluster on ``trace``."""
    if (seed, trace) not in _CLUSTERS:
        source = f"generated scenario (seed {seed})" + (f" on trace {trace}" if trace else "")
        _CLUSTERS[seed, trace] = scenario.build(scenario.parse(data, source), source)
    return _CLUSTERS[seed, trace]


def _rate(task: RunTask) -> float:
    return round(task.load * task.capacity_rps, 6)


def run_task(task: RunTask) -> RunRow:
    """Run one policy on one cell and return its row (no bound yet: ``nan``)."""
    cluster = cluster_of(task.cluster, task.data, task.trace)
    started = time.perf_counter()
    result = run_once(
        cluster,
        task.policy,
        requests=cluster.requests,
        rate_rps=_rate(task),
        seed=task.seed,
        policy_params=task.params,
    )
    s = result.summary
    return RunRow(
        family=task.family,
        cluster=task.cluster,
        servers=len(cluster.servers),
        cloud_servers=sum(spec.tier == "cloud" for spec in cluster.servers),
        capacity_rps=task.capacity_rps,
        load=task.load,
        rate_rps=_rate(task),
        seed=task.seed,
        policy=task.label,
        requests=s.requests,
        completed=s.completed,
        rejected=s.rejected,
        met=s.met,
        goodput_rps=s.goodput_rps,
        deadline_satisfaction=s.deadline_satisfaction,
        energy_j=s.energy_j.total,
        weighted_energy_j=s.weighted_energy_j,
        energy_per_met_j=s.weighted_energy_j / s.met if s.met else math.inf,
        bound_goodput_rps=math.nan,
        wall_s=time.perf_counter() - started,
    )


def bound_available() -> bool:
    """Whether the optional bound package is installed."""
    return importlib.util.find_spec(BOUND_MODULE) is not None


def bound_task(task: RunTask) -> tuple[tuple[int, float, int], float]:
    """The goodput upper bound of a cell: ``((cluster, load, seed), bound_rps)``.

    Calls ``perllm.bound.compute_bound(cluster, requests, world_seed)`` on exactly the requests
    and bandwidth draws the cell's runs see, and reads ``goodput_upper_bound_rps``.
    """
    cluster = cluster_of(task.cluster, task.data, task.trace)
    workload_seed, _, world_seed = seeds_for(task.seed)
    requests = generate_requests(cluster.workload, cluster.requests, workload_seed, _rate(task))
    compute_bound = importlib.import_module(BOUND_MODULE).compute_bound
    result = compute_bound(cluster, requests, world_seed)
    return (task.cluster, task.load, task.seed), float(result.goodput_upper_bound_rps)
