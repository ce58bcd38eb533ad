"""The scenario YAML a user writes, validated by pydantic (kebab-case keys, unknown keys refused).

A scenario names links, server groups (hardware + model + quantisation from the catalog, with
any number overridable, or a measured profile), energy weights, admission control and a
workload; a server group or link may also say how the truth departs from its spec
(:mod:`perllm.cluster.truth`). :func:`parse` validates a mapping; :mod:`perllm.cluster.scenario`
builds the cluster from it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from perllm.cluster.parts import Dtype, EnergyWeightsConfig, HardwareName, ModelName
from perllm.cluster.settings import KebabModel, validation_message
from perllm.cluster.truth import DegradeConfig
from perllm.domain import Tier
from perllm.errors import InputError
from perllm.workload.config import WorkloadConfig
from perllm.workload.presets import BUILTIN_CLASS_TABLE

__all__ = [
    "CLASS_SETS",
    "DynamicsConfig",
    "HardwareOverrides",
    "ScenarioConfig",
    "ScenarioLinkConfig",
    "ServerGroupConfig",
    "parse",
]


class DynamicsConfig(KebabModel):
    """How a link's bandwidth changes: ``fixed``; ``fluctuate`` (a uniform draw within
    ``±amplitude`` of nominal every ``period_s``); or ``series`` (``(time_s, mbps)`` points,
    inline or from a two-column CSV ``file``, each held until the next)."""

    kind: Literal["fixed", "fluctuate", "series"] = "fixed"
    amplitude: float = Field(0.2, ge=0.0, lt=1.0)
    period_s: float = Field(1.0, gt=0.0)
    points: list[tuple[float, float]] | None = None
    file: str | None = None

    @model_validator(mode="after")
    def _series_has_points(self) -> DynamicsConfig:
        if self.kind == "series" and not self.points and not self.file:
            raise ValueError("kind 'series' needs 'points' or 'file'")
        for time_s, mbps in self.points or ():
            if not mbps > 0:
                raise ValueError(f"points: bandwidth must be > 0, got {mbps:g} at {time_s:g} s")
        return self


class ScenarioLinkConfig(KebabModel):
    """A named link: shared by the servers of the groups that name it, or one per server
    (``per-server``), each ``{link}-{server}``."""

    name: str
    bandwidth_mbps: float = Field(gt=0.0)
    rtt_ms: float = Field(0.0, ge=0.0)
    tx_power_w: float = Field(ge=0.0)
    dynamics: DynamicsConfig = DynamicsConfig()
    per_server: bool = False
    # Model mismatch (see perllm.cluster.truth): the link really carries this times its bandwidth.
    true_bandwidth_factor: float = Field(1.0, gt=0.0, allow_inf_nan=False)


class HardwareOverrides(KebabModel):
    memory_bandwidth_gbps: float | None = Field(None, gt=0.0)
    compute_tflops: float | None = Field(None, gt=0.0)
    memory_gb: float | None = Field(None, gt=0.0)
    idle_w: float | None = Field(None, ge=0.0)
    max_w: float | None = Field(None, gt=0.0)
    batch1_fraction: float | None = Field(None, gt=0.0, le=1.0)
    log2_slope: float | None = Field(None, ge=0.0)
    mem_efficiency: float | None = Field(None, gt=0.0, le=1.0)
    compute_efficiency: float | None = Field(None, gt=0.0, le=1.0)
    step_overhead_s: float | None = Field(None, ge=0.0)


class ServerGroupConfig(KebabModel):
    """``count`` servers alike, named ``{name}`` (one) or ``{name}-{i}``."""

    name: str
    count: int = Field(1, ge=1, le=10_000)
    tier: Tier
    hardware: HardwareName
    model: ModelName
    dtype: Dtype = "fp16"
    max_batch: int = Field(32, ge=1)
    link: str
    hardware_overrides: HardwareOverrides = HardwareOverrides()
    # A profile YAML from `perllm profile` (relative to the scenario file): its fitted perf
    # coefficients, power (if known) and max batch (unless `max-batch` is set) replace the
    # catalog's.
    profile: str | None = None
    # Model mismatch (see perllm.cluster.truth): how the servers really run, apart from the spec
    # that the policies see.
    true_speed_factor: float = Field(1.0, gt=0.0, allow_inf_nan=False)
    true_power_factor: float = Field(1.0, gt=0.0, allow_inf_nan=False)
    degrade: DegradeConfig | None = None


class ScenarioConfig(KebabModel):
    name: str
    description: str = ""
    links: list[ScenarioLinkConfig] = Field(min_length=1)
    servers: list[ServerGroupConfig] = Field(min_length=1)
    energy_weights: EnergyWeightsConfig = {}
    admission_control: bool = False
    # Refuse a request longer (prompt + output) than a server's context window; the KV cache
    # is always a limit.
    enforce_context_window: bool = False
    # The router keeps a record of the prompt blocks it sent to each server, which the policies
    # read as a prefix-cache signal (perllm.prefix). Servers cache prefixes either way.
    prefix_record: bool = True
    workload: WorkloadConfig
    requests: int = Field(2000, ge=1, le=100_000_000)

    @model_validator(mode="after")
    def _links_exist(self) -> ScenarioConfig:
        names = [link.name for link in self.links]
        if len(set(names)) != len(names):
            raise ValueError("link names must be unique")
        for index, group in enumerate(self.servers):
            if group.link not in names:
                raise ValueError(
                    f"field 'servers.{index}.link': unknown link {group.link!r} "
                    f"(known: {', '.join(names)})"
                )
        return self


# Named sets of service classes a scenario may use as ``workload: {classes: NAME}``.
CLASS_SETS = {"personalized": BUILTIN_CLASS_TABLE}


def parse(data: Any, source: str) -> ScenarioConfig:
    """Validate a scenario mapping; errors become one-line :class:`InputError`."""
    if not isinstance(data, dict):
        raise InputError(f"{source}: a scenario must be a YAML mapping")
    workload = data.get("workload")
    if isinstance(workload, dict) and isinstance(workload.get("classes"), str):
        name = workload["classes"]
        if name not in CLASS_SETS:
            raise InputError(
                f"{source}: field 'workload.classes': unknown class set {name!r}; "
                f"known: {', '.join(CLASS_SETS)} (or a list of classes)"
            )
        data = {**data, "workload": {**workload, "classes": list(CLASS_SETS[name])}}
    try:
        return ScenarioConfig.model_validate(data)
    except ValidationError as err:
        raise InputError(validation_message(err, source)) from None
