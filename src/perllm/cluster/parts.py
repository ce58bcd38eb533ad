"""Settings shared by every description of a cluster: a scenario's server groups and links, and
a gateway config's backends.

- :data:`HardwareName`, :data:`ModelName`: names from the perf catalog, checked once, here (an
  unknown name is refused with the list of known ones, naming the field it was written in);
- :data:`Dtype`: the quantisation a deployment runs at;
- :data:`EnergyWeightsConfig`: the weights on the three energy parts, of a scenario or a
  gateway;
- :class:`PowerConfig`: an explicit power profile (watts) that replaces the catalog's or a
  measured profile's idle and full-load power;
- :class:`LinkConfig`: what is known of the network path to a server;
- :class:`LinkSettings`: what the link builder (:func:`perllm.cluster.build.link_spec`) reads
  of any link setting (a :class:`LinkConfig` or a scenario's named link).
"""

from __future__ import annotations

from typing import Annotated, Literal, Protocol

from pydantic import AfterValidator, Field

from perllm.cluster.settings import KebabModel
from perllm.perf.catalog import HARDWARE, MODELS

__all__ = [
    "Dtype",
    "EnergyWeightsConfig",
    "HardwareName",
    "LinkConfig",
    "LinkSettings",
    "ModelName",
    "PowerConfig",
]


def _known_hardware(value: str) -> str:
    if value not in HARDWARE:
        raise ValueError(f"unknown hardware (known: {', '.join(HARDWARE)})")
    return value


def _known_model(value: str) -> str:
    if value not in MODELS:
        raise ValueError(f"unknown model (known: {', '.join(MODELS)})")
    return value


HardwareName = Annotated[str, AfterValidator(_known_hardware)]
"""A hardware name of the perf catalog (:data:`perllm.perf.catalog.HARDWARE`)."""

ModelName = Annotated[str, AfterValidator(_known_model)]
"""A model name of the perf catalog (:data:`perllm.perf.catalog.MODELS`)."""

Dtype = Literal["fp16", "int8", "q4"]
"""The weight format a deployment runs at."""


def _non_negative(weights: dict[str, float]) -> dict[str, float]:
    if any(w < 0 for w in weights.values()):
        raise ValueError("energy weights must be >= 0")
    return weights


EnergyWeightsConfig = Annotated[
    dict[Literal["transmission", "inference", "idle"], float], AfterValidator(_non_negative)
]
"""Weights on the energy parts, each at least 0 (:class:`perllm.domain.EnergyWeights`: a part
left out weighs 1)."""


class PowerConfig(KebabModel):
    """Explicit power profile, overriding the catalog's or a measured profile's (watts)."""

    idle_w: float = Field(ge=0.0)
    max_w: float = Field(gt=0.0)


class LinkConfig(KebabModel):
    """What is known of the network path to a backend (``bandwidth-mbps`` is a start value).

    ``shape-uploads``: the gateway paces the request bodies it sends over this link to
    ``bandwidth-mbps`` in all, split among the uploads in progress by the policy's shares
    (:mod:`perllm.gateway.shaping`); off by default, when the network shares the path.
    """

    bandwidth_mbps: float = Field(default=1000.0, gt=0.0)
    rtt_ms: float = Field(default=0.0, ge=0.0)
    tx_power_w: float = Field(default=0.0, ge=0.0)
    shape_uploads: bool = False


class LinkSettings(Protocol):
    """The nominal figures of a link, whichever settings model holds them."""

    @property
    def bandwidth_mbps(self) -> float: ...

    @property
    def rtt_ms(self) -> float: ...

    @property
    def tx_power_w(self) -> float: ...
