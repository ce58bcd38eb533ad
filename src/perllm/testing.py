"""Helpers for testing and benchmarking policies without a simulator: a view whose load the
caller sets directly, and a cluster of any size built from the ``perllm-paper`` scenario."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import yaml

from perllm.cluster import scenario
from perllm.domain import (
    EnergyWeights,
    LinkSpec,
    LoadArrays,
    RouterRequest,
    ServerLoad,
    ServerSpec,
)


class StaticView:
    """A :class:`~perllm.domain.ClusterView` whose loads are plain arrays the caller sets."""

    def __init__(self, servers: tuple[ServerSpec, ...], links: dict[str, LinkSpec]) -> None:
        self.servers = servers
        self.links = links
        self.weights = EnergyWeights()
        self.admission_control = False
        n = len(servers)
        self.queued = np.zeros(n)
        self.running = np.zeros(n)
        self.tokens = np.zeros(n)
        self.healthy = np.ones(n, dtype=bool)
        self.slowdown = np.ones(n)
        self.bandwidth = np.array([links[s.link].bandwidth_mbps for s in servers])
        self.active_weight = np.zeros(n)
        self.prefix = np.zeros(n)  # prompt tokens the router sent each server before
        self.clock = 0.0

    def now(self) -> float:
        return self.clock

    def load(self, server: int) -> ServerLoad:
        return ServerLoad(
            int(self.queued[server]),
            int(self.running[server]),
            int(self.tokens[server]),
            bool(self.healthy[server]),
        )

    def load_arrays(self) -> LoadArrays:
        return LoadArrays(
            self.queued,
            self.running,
            self.tokens,
            self.bandwidth,
            self.active_weight,
            self.healthy,
            self.slowdown,
        )

    def prefix_tokens(self, request: RouterRequest) -> npt.NDArray[np.float64]:
        return np.minimum(self.prefix, max(request.prompt_tokens - 1, 0))

    def bandwidth_mbps(self, link: str) -> float:
        return self.links[link].bandwidth_mbps

    def link_active_weight(self, link: str) -> float:
        return 0.0


def paper_cluster(servers: int = 6) -> scenario.Cluster:
    """The ``perllm-paper`` cluster with ``servers - 1`` edge servers and one cloud server."""
    base = scenario.load("perllm-paper").config
    edges, *others = base.servers
    groups = [edges.model_copy(update={"count": servers - 1}), *others]
    return scenario.build(base.model_copy(update={"servers": groups}))


def paper_view(servers: int = 6) -> StaticView:
    cluster = paper_cluster(servers)
    return StaticView(cluster.servers, cluster.links)


MINIMAL_SCENARIO: dict[str, Any] = {
    "name": "t",
    "links": [{"name": "wan", "bandwidth-mbps": 100, "tx-power-w": 1.0}],
    "servers": [
        {
            "name": "edge",
            "tier": "edge",
            "hardware": "rtx-3090",
            "model": "llama-2-7b",
            "dtype": "q4",
            "link": "wan",
        }
    ],
    "workload": {"arrivals": {"process": "poisson", "rate-rps": 1.0}, "classes": "personalized"},
}


def scenario_with(**changes: Any) -> dict[str, Any]:
    """:data:`MINIMAL_SCENARIO` (a copy) with top-level keys, or ``links.0.KEY`` /
    ``servers.0.KEY`` values (written ``links__KEY``), changed."""
    data: dict[str, Any] = yaml.safe_load(yaml.safe_dump(MINIMAL_SCENARIO))
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            data[section][0][field.replace("_", "-")] = value
        else:
            data[section] = value
    return data


def write_yaml(directory: Path, data: Any, name: str = "scenario.yaml") -> Path:
    """Write ``data`` (YAML text as is, anything else dumped) to ``directory / name``."""
    path = directory / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path
