"""Model mismatch: how a simulated server or link really behaves, apart from its spec.

A router knows only datasheet numbers (the :class:`~perllm.domain.ServerSpec` and
:class:`~perllm.domain.LinkSpec` in the policies' view). Real devices differ from them, so a
scenario may say, per server group and per link, how the truth departs from the spec:

- ``true-speed-factor`` ``f``: the server runs ``f`` times as fast as its spec (every time
  coefficient of its :class:`~perllm.domain.ServerPerf` is divided by ``f``);
- ``true-power-factor`` ``p``: it draws ``p`` times the spec's power (idle and busy);
- ``degrade: {at-s: t, speed-factor: d}``: from time ``t`` on it runs ``d`` times as fast again
  (thermal throttling, a noisy neighbour); the work left in a prefill or decode segment at ``t``
  is re-timed, the power draw is unchanged;
- ``true-bandwidth-factor`` ``k`` on a link: the link carries ``k`` times its nominal bandwidth
  (after the nominal's own fluctuations). The bandwidth estimate in the view follows the
  nominal's fluctuations only, so the factor shows only through observed transfer times.

The default of every field is "no mismatch". This module holds the description (the
``degrade`` setting and the plain :class:`ServerTruth` / :class:`ClusterTruth` a built cluster
carries); the simulator applies it (:mod:`perllm.sim.truth`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from pydantic import Field

from perllm.cluster.settings import KebabModel

__all__ = ["ClusterTruth", "DegradeConfig", "ServerTruth"]


class DegradeConfig(KebabModel):
    """A server's speed changes at ``at-s`` by ``speed-factor`` (``< 1`` is slower)."""

    at_s: float = Field(ge=0.0, allow_inf_nan=False)
    speed_factor: float = Field(gt=0.0, allow_inf_nan=False)


@dataclass(frozen=True, slots=True)
class ServerTruth:
    """How one server departs from its spec (the defaults: not at all)."""

    speed_factor: float = 1.0
    power_factor: float = 1.0
    degrade_at_s: float = math.inf
    degrade_speed_factor: float = 1.0

    @property
    def degrades(self) -> bool:
        return math.isfinite(self.degrade_at_s) and self.degrade_speed_factor != 1.0


@dataclass(frozen=True, slots=True)
class ClusterTruth:
    """Mismatch of a whole cluster: ``servers`` indexed like the cluster's servers (empty when
    no server departs from its spec), ``link_bandwidth_factor`` by link name (missing: 1)."""

    servers: tuple[ServerTruth, ...] = ()
    link_bandwidth_factor: Mapping[str, float] = field(default_factory=dict)

    def server(self, index: int) -> ServerTruth:
        return self.servers[index] if self.servers else _EXACT

    def bandwidth_factor(self, link: str) -> float:
        return self.link_bandwidth_factor.get(link, 1.0)


_EXACT = ServerTruth()
