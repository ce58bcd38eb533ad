"""The cluster generator's ranges: a validated settings model, every field overridable.

Ranges are ``[low, high]`` pairs. Bandwidths are drawn log-uniformly, everything else
uniformly. Each field's comment says what it draws; the defaults are the generator's
"realistic" envelope (sources and assumptions in :mod:`perllm.clustergen.hardware`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator

from perllm.cluster.settings import KebabModel, validation_message
from perllm.errors import InputError

__all__ = ["EDGE_KINDS", "GeneratorSettings", "settings_from"]

EdgeKind = Literal["cpu", "jetson", "consumer-gpu", "datacenter-gpu"]
EDGE_KINDS: tuple[EdgeKind, ...] = ("cpu", "jetson", "consumer-gpu", "datacenter-gpu")
ClassMix = Literal["personalized", "trace-mix"]

Range = tuple[float, float]
IntRange = tuple[int, int]


# The widest values each range field accepts (beyond them a draw is no longer meaningful).
_BOUNDS: dict[str, tuple[float, float]] = {
    "servers": (1, 10_000),
    "cloud_servers": (0, 10_000),
    "edge_hardware_types": (1, 100),
    "edge_sites": (1, 10_000),
    "edge_bandwidth_mbps": (1e-3, 1e6),
    "cloud_bandwidth_mbps": (1e-3, 1e6),
    "edge_rtt_ms": (0, 10_000),
    "cloud_rtt_ms": (0, 10_000),
    "fluctuation": (0, 0.95),
    "fluctuation_period_s": (1e-3, 1e6),
    "degrade_speed": (1e-3, 100),
    "degrade_at": (0, 100),
    "link_mismatch": (1e-3, 100),
    "gamma_cv": (1e-3, 100),
}


def _default_edge_kinds() -> dict[EdgeKind, float]:
    return {"cpu": 1.0, "jetson": 1.0, "consumer-gpu": 1.0, "datacenter-gpu": 0.5}


def _default_class_mixes() -> dict[ClassMix, float]:
    return {"personalized": 1.0, "trace-mix": 1.0}


class GeneratorSettings(KebabModel):
    """What the cluster generator may draw (see the module docstring)."""

    servers: IntRange = (2, 40)  # all servers, cloud included
    cloud_servers: IntRange = (0, 3)  # 0: an edge-only cluster
    # Relative weight of each kind of edge hardware.
    edge_kinds: dict[EdgeKind, float] = Field(default_factory=_default_edge_kinds)
    edge_hardware_types: IntRange = (1, 4)  # distinct (hardware, model) deployments at the edge
    edge_sites: IntRange = (1, 3)  # edge servers are spread over this many sites (links)
    shared_link_probability: float = Field(0.5, ge=0, le=1)  # a site shares one link
    edge_bandwidth_mbps: Range = (50.0, 1000.0)
    cloud_bandwidth_mbps: Range = (50.0, 1000.0)
    edge_rtt_ms: Range = (2.0, 20.0)
    cloud_rtt_ms: Range = (20.0, 120.0)
    fluctuation: Range = (0.0, 0.4)  # +-x of nominal, redrawn every period; 0: fixed
    fluctuation_period_s: Range = (0.5, 5.0)
    speed_mismatch: float = Field(0.4, ge=0, lt=1)  # true speed factor in [1-x, 1+x]
    power_mismatch: float = Field(0.4, ge=0, lt=1)  # true power factor in [1-x, 1+x]
    degrade_probability: float = Field(0.2, ge=0, le=1)  # a server slows down mid-run
    degrade_speed: Range = (0.3, 0.8)  # its speed factor from then on
    degrade_at: Range = (0.1, 0.6)  # when, as a fraction of the run's length at 1x load
    link_mismatch_probability: float = Field(0.3, ge=0, le=1)
    link_mismatch: Range = (0.5, 1.1)  # true bandwidth factor of a mismatched link
    gamma_probability: float = Field(0.5, ge=0, le=1)  # else Poisson arrivals
    gamma_cv: Range = (1.0, 4.0)
    class_mixes: dict[ClassMix, float] = Field(default_factory=_default_class_mixes)
    load: float = Field(1.0, gt=0, le=100)  # arrival rate as a multiple of the capacity
    # The scenario's run length: at least `requests`, and at least `steady-multiple` times the
    # number of mean-sized requests the servers hold at once (so that a run reaches steady state
    # instead of measuring how large a burst the cluster absorbs), but at most `max-requests`.
    requests: int = Field(2000, ge=10, le=10_000_000)
    steady_multiple: float = Field(4.0, ge=0, le=1000)
    max_requests: int = Field(100_000, ge=10, le=10_000_000)
    capacity_requests: int = Field(400, ge=50, le=100_000)  # per capacity simulation

    @field_validator(*_BOUNDS, mode="after")
    @classmethod
    def _range(cls, pair: tuple[float, float], info: ValidationInfo) -> tuple[float, float]:
        low, high = _BOUNDS[str(info.field_name)]
        if pair[0] > pair[1]:
            raise ValueError(f"low {pair[0]:g} > high {pair[1]:g}")
        if pair[0] < low or pair[1] > high:
            raise ValueError(f"must lie within [{low:g}, {high:g}], got [{pair[0]:g}, {pair[1]:g}]")
        return pair

    @field_validator("edge_kinds", "class_mixes", mode="after")
    @classmethod
    def _weights(cls, weights: dict[str, float]) -> dict[str, float]:
        if any(w < 0 for w in weights.values()) or not any(w > 0 for w in weights.values()):
            raise ValueError("weights must be >= 0 with at least one > 0")
        return weights


def settings_from(data: dict[str, Any], source: str = "generator") -> GeneratorSettings:
    """Validate generator settings; errors become one line naming the field.

    Parameters
    ----------
    data
        Kebab-case keys (any subset of :class:`GeneratorSettings`' fields).
    source
        Where they came from, for the message.

    Returns
    -------
    GeneratorSettings

    Raises
    ------
    InputError
        E.g. ``generator: field 'servers': low 50 > high 40, got (50, 40)``.
    """
    try:
        settings = GeneratorSettings.model_validate(data)
    except ValidationError as err:
        raise InputError(validation_message(err, source)) from None
    if settings.max_requests < settings.requests:
        raise InputError(
            f"{source}: field 'max-requests': {settings.max_requests} is less than requests "
            f"({settings.requests})"
        )
    if settings.cloud_servers[0] >= settings.servers[1]:
        raise InputError(
            f"{source}: field 'cloud-servers': at least {settings.cloud_servers[0]} cloud "
            f"servers leave no room for an edge server in at most {settings.servers[1]} servers"
        )
    return settings
