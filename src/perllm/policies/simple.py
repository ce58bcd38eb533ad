"""Policies that ignore load: ``random`` and ``round-robin``."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from perllm.domain import ClusterView, Decision, RouterRequest
from perllm.policies.base import PolicyConfig, StatelessPolicy


class RandomConfig(PolicyConfig):
    pass


class RandomPolicy(StatelessPolicy):
    """Send each request to a server drawn uniformly at random."""

    name: ClassVar[str] = "random"
    summary: ClassVar[str] = "uniformly random server"
    config_type: ClassVar[type[PolicyConfig]] = RandomConfig

    def __init__(self, config: RandomConfig, seed: int) -> None:
        super().__init__(config, seed)
        self._rng = np.random.default_rng(seed)

    def decide(self, request: RouterRequest, view: ClusterView) -> Decision:
        return Decision(server=int(self._rng.integers(len(view.servers))))


class RoundRobinConfig(PolicyConfig):
    pass


class RoundRobinPolicy(StatelessPolicy):
    """Send requests to the servers in turn."""

    name: ClassVar[str] = "round-robin"
    summary: ClassVar[str] = "servers in turn"
    config_type: ClassVar[type[PolicyConfig]] = RoundRobinConfig

    def __init__(self, config: RoundRobinConfig, seed: int) -> None:
        super().__init__(config, seed)
        self._next = 0

    def decide(self, request: RouterRequest, view: ClusterView) -> Decision:
        server = self._next % len(view.servers)
        self._next = server + 1
        return Decision(server=server)
