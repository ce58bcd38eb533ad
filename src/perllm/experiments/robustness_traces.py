"""Trace cells of the robustness benchmark: generated clusters replaying production traces.

A *trace cell cluster* is a generated cluster's scenario mapping with its ``workload`` replaced
by the workload block of a built-in trace replay (:data:`TRACES`; the same trace, service class
and TTFT + TPOT deadlines: ``docs/traces.md``) and ``enforce-context-window: true``.
:func:`trace_cluster_task` measures its capacity on that workload
(:func:`perllm.clustergen.capacity.measure_capacity`), so a trace cell's load is a multiple of
what that cluster sustains on that trace. Its runs take the trace's first ``N`` requests, arrivals
and lengths as recorded, with the timestamps stretched so that the mean rate is
``load x capacity``; ``N`` follows the generator's rule (``max(requests, steady-multiple x
slots)``, at most ``max-requests``) with the slots of the trace's mean lengths, and the
cluster's degradations keep their place as a fraction of a run at 1x load.

A trace cell cluster is *skipped* (no runs) when more than half of the ``N`` requests fit no
server (:func:`largest_fit`: longer than every server's context window or KV cache, so refused
before any policy sees it, and counted as missed by every policy alike): a generated cluster
whose models all have a 4,096-token context refuses most of Mooncake's prompts.

A trace cell cluster's family label is ``FAMILY/TRACE`` (:func:`trace_label`): its runs'
:class:`~perllm.experiments.rows.RunRow` carry it, so every per-family table, ``scores.csv``
and plot treat the trace cells as groups of their own, apart from the synthetic cells.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml

from perllm.cluster import scenario
from perllm.clustergen import settings_from
from perllm.clustergen.capacity import measure_capacity
from perllm.experiments.rows import GeneratedCluster, Row
from perllm.workload.generator import generate_requests

__all__ = [
    "PREFIX_POLICIES",
    "TRACES",
    "TraceCluster",
    "TraceSpec",
    "largest_fit",
    "trace_cluster_task",
    "trace_data",
    "trace_label",
    "trace_workload",
    "unfit_requests",
]

SKIP_SHARE = 0.5  # skipped: more than this share of the window fits no server
PREFIX_POLICIES = frozenset({"prefix-affinity"})
"""Policies that differ from ``least-loaded`` only where prompts share prefix blocks."""


@dataclass(frozen=True, slots=True)
class TraceSpec:
    """A trace of the trace cells: the built-in scenario whose workload block it takes, and
    whether its prompts share prefix blocks (Mooncake's ``hash_ids``)."""

    scenario: str
    prefixes: bool = False


TRACES: dict[str, TraceSpec] = {
    "azure-conv": TraceSpec("azure-conv-gpu-edge"),
    "azure-code": TraceSpec("azure-code-gpu-edge"),
    "mooncake": TraceSpec("mooncake-gpu-edge", prefixes=True),
}


def trace_label(family: str, trace: str) -> str:
    """The family label of ``family``'s trace cells on ``trace``: ``FAMILY/TRACE``."""
    return f"{family}/{trace}"


@functools.cache
def _scenario_workload(name: str) -> dict[str, Any]:
    text = resources.files("perllm").joinpath(f"scenarios/{name}.yaml").read_text()
    workload: dict[str, Any] = yaml.safe_load(text)["workload"]
    return workload


def trace_workload(trace: str) -> dict[str, Any]:
    """The ``workload`` block of ``trace``'s built-in replay scenario (a fresh copy)."""
    return copy.deepcopy(_scenario_workload(TRACES[trace].scenario))


def trace_data(data: Mapping[str, Any], trace: str) -> dict[str, Any]:
    """A generated scenario mapping with ``trace``'s workload and the context window enforced
    (its request count, rate and degradations as they were)."""
    out = copy.deepcopy(dict(data))
    out["name"] = f"{data['name']}-{trace}"
    out["enforce-context-window"] = True
    out["workload"] = trace_workload(trace)
    return out


def largest_fit(cluster: scenario.Cluster) -> int:
    """The longest request (prompt + output tokens) some server of ``cluster`` holds: its
    context window where the scenario enforces it and it is the smaller, else its KV cache
    (the rule :mod:`perllm.sim.world` refuses requests by, on the nominal specs)."""
    limits = []
    for spec in cluster.servers:
        limit = spec.kv_capacity_tokens
        if cluster.enforce_context_window and spec.context_tokens is not None:
            limit = min(limit, spec.context_tokens)
        limits.append(limit)
    return max(limits)


def unfit_requests(cluster: scenario.Cluster, n: int) -> int:
    """How many of the first ``n`` requests of ``cluster``'s workload fit no server."""
    limit = largest_fit(cluster)
    requests = generate_requests(cluster.workload, n, seed=0)
    return sum(r.routed.prompt_tokens + r.output_tokens > limit for r in requests)


@dataclass(frozen=True, slots=True)
class TraceCluster(Row):
    """The trace cell cluster of generated cluster ``seed`` (of family ``family``) on
    ``trace``: ``unfit`` of its ``window`` requests fit no server; ``cluster`` is its scenario
    and capacity (family label ``FAMILY/TRACE``), ``None`` when it is skipped."""

    family: str
    seed: int
    trace: str
    window: int
    unfit: int
    cluster: GeneratedCluster | None

    @property
    def skipped(self) -> bool:
        return self.cluster is None

    def to_json(self) -> dict[str, object]:
        data = Row.to_json(self)
        data["cluster"] = None if self.cluster is None else self.cluster.to_json()
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TraceCluster:
        fields = {name: data[name] for name in cls.columns()}
        if fields["cluster"] is not None:
            fields["cluster"] = GeneratedCluster.from_json(fields["cluster"])
        return cls(**fields)


def _build(data: Mapping[str, Any], seed: int, trace: str) -> scenario.Cluster:
    source = f"generated scenario (seed {seed}) on trace {trace}"
    return scenario.build(scenario.parse(copy.deepcopy(dict(data)), source), source)


def trace_cluster_task(
    generated: GeneratedCluster, trace: str, settings: Mapping[str, object]
) -> TraceCluster:
    """The trace cell cluster of ``generated`` on ``trace`` (see the module docstring; runs in
    a worker). ``settings`` are the generator settings ``generated`` was drawn with."""
    s = settings_from(dict(settings))
    data = trace_data(generated.data, trace)
    cluster = _build(data, generated.seed, trace)
    capacity = measure_capacity(cluster, s.capacity_requests, generated.seed)
    steady = math.ceil(s.steady_multiple * capacity.slots)
    requests = min(max(s.requests, steady), s.max_requests)
    # A degradation's time as the same fraction of a run at 1x load as on the generated cluster.
    stretch = (requests / capacity.rate_rps) / (
        generated.data["requests"] / generated.capacity.rate_rps
    )
    for group in data["servers"]:
        if "degrade" in group:
            group["degrade"]["at-s"] = round(group["degrade"]["at-s"] * stretch, 3)
    data["requests"] = requests
    data["workload"]["trace"]["rate-rps"] = float(f"{s.load * capacity.rate_rps:.4g}")
    unfit = unfit_requests(cluster, requests)  # lengths from the trace: rate-independent
    label = trace_label(generated.family, trace)
    cell = GeneratedCluster(label, generated.seed, data, capacity)
    skipped = unfit > SKIP_SHARE * requests
    return TraceCluster(
        generated.family, generated.seed, trace, requests, unfit, None if skipped else cell
    )
