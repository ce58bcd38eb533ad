"""The experiment grid: model deployments x bandwidth conditions x load x policies x seeds.

Each grid point is a :class:`Task` that a worker process runs on its own (it rebuilds its
cluster from names), so the grid runs in parallel and gives the same rows in any order.
"""

from __future__ import annotations

from dataclasses import dataclass

from perllm.cluster import scenario
from perllm.experiments import trace_block
from perllm.experiments.rows import GridRow, RegretCurve
from perllm.metrics.summary import regret_curve
from perllm.policies.registry import ENTRIES
from perllm.sim.runner import run_once

# Built-in scenarios, one per model deployment (5 Xeon edges + 1 A100 cloud in each).
DEPLOYMENTS: dict[str, str] = {
    "6b/6b": "perllm-paper-6b",
    "7b/13b": "perllm-paper",
    "7b/33b": "perllm-paper-33b",
}

# How each bandwidth condition changes the scenario's links.
BANDWIDTHS: dict[str, str] = {
    "nominal": "cloud 300 Mbps, edges 100 Mbps, +-20% redrawn every second",
    "constrained": "the cloud link at a tenth (30 Mbps), +-20% every second",
    "volatile": "every link +-50%, redrawn every 0.2 s",
}

RATE_FACTORS_FULL = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5)
RATE_FACTORS_QUICK = (0.5, 1.0, 1.25)


@dataclass(frozen=True, slots=True)
class GridConfig:
    """The synthetic grid (deployments x bandwidths x rate factors x policies x seeds, each run
    of ``requests`` requests) and the real-trace block (:mod:`perllm.experiments.trace_block`):
    ``traces`` replayed by ``trace_policies``, the first ``trace_requests`` requests of each
    (``None``: the whole trace); no traces, no block."""

    deployments: tuple[str, ...]
    bandwidths: tuple[str, ...]
    rate_factors: tuple[float, ...]
    policies: tuple[str, ...]
    seeds: int
    requests: int
    traces: tuple[str, ...] = ()
    trace_policies: tuple[str, ...] = ()
    trace_requests: int | None = None

    @classmethod
    def preset(cls, quick: bool, seeds: int | None = None, planner: bool = False) -> GridConfig:
        # The clairvoyant planner re-simulates each trace a few times: only when asked for.
        # The grid's synthetic prompts share no prefixes, where prefix-affinity is least-loaded.
        skip = {"prefix-affinity"} | (set() if planner else {"planner"})
        policies = tuple(e.name for e in ENTRIES if e.name not in skip)
        traces = (trace_block.SCENARIOS, trace_block.POLICIES)
        if quick:
            return cls(
                tuple(DEPLOYMENTS),
                ("nominal", "constrained"),
                RATE_FACTORS_QUICK,
                policies,
                seeds or 3,
                2000,
                *traces,
                trace_block.QUICK_REQUESTS,
            )
        return cls(
            tuple(DEPLOYMENTS),
            tuple(BANDWIDTHS),
            RATE_FACTORS_FULL,
            policies,
            seeds or 5,
            3000,
            *traces,
        )

    def trace_tasks(self) -> list[trace_block.TraceTask]:
        """The real-trace block's replays, in a fixed order."""
        return [
            trace_block.TraceTask(name, policy, self.trace_requests)
            for name in self.traces
            for policy in self.trace_policies
        ]


@dataclass(frozen=True, slots=True)
class Task:
    deployment: str
    bandwidth: str
    rate_factor: float
    policy: str
    seed: int
    requests: int

    @property
    def key(self) -> tuple[str, str, float, str, int]:
        return (self.deployment, self.bandwidth, self.rate_factor, self.policy, self.seed)


def tasks(grid: GridConfig) -> list[Task]:
    """Every run of the grid, in a fixed order."""
    return [
        Task(d, b, f, p, seed, grid.requests)
        for d in grid.deployments
        for b in grid.bandwidths
        for f in grid.rate_factors
        for p in grid.policies
        for seed in range(grid.seeds)
    ]


def cluster_for(deployment: str, bandwidth: str) -> scenario.Cluster:
    """The deployment's built-in scenario with the bandwidth condition applied."""
    config = scenario.load(DEPLOYMENTS[deployment]).config
    links = []
    for link in config.links:
        if bandwidth == "constrained" and link.name == "cloud-wan":
            link = link.model_copy(update={"bandwidth_mbps": link.bandwidth_mbps / 10.0})
        elif bandwidth == "volatile":
            dynamics = link.dynamics.model_copy(
                update={"kind": "fluctuate", "amplitude": 0.5, "period_s": 0.2}
            )
            link = link.model_copy(update={"dynamics": dynamics})
        links.append(link)
    name = f"{config.name}/{bandwidth}"
    return scenario.build(config.model_copy(update={"links": links, "name": name}))


def nominal_rate(deployment: str) -> float:
    return scenario.load(DEPLOYMENTS[deployment]).workload.arrivals.rate_rps


ROW_FIELDS: tuple[str, ...] = GridRow.columns()
"""The columns of ``results.csv``: :class:`~perllm.experiments.rows.GridRow`'s fields."""


def run_task(task: Task) -> GridRow:
    """One grid run -> one results row (runs in a worker process)."""
    cluster = cluster_for(task.deployment, task.bandwidth)
    rate = round(nominal_rate(task.deployment) * task.rate_factor, 6)
    result = run_once(cluster, task.policy, requests=task.requests, rate_rps=rate, seed=task.seed)
    return GridRow.of(task.deployment, task.bandwidth, task.rate_factor, result.summary)


def run_regret(deployment: str, policy: str, requests: int, seed: int) -> RegretCurve:
    """Cumulative regret of ``policy`` against the oracle at nominal load and bandwidth."""
    cluster = cluster_for(deployment, "nominal")
    result = run_once(cluster, policy, requests=requests, seed=seed, track_oracle=True)
    times, regret = regret_curve(result.recorder, cluster.weights)
    return RegretCurve(deployment, policy, tuple(times.tolist()), tuple(regret.tolist()))
