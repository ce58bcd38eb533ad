"""Scenarios: the YAML a user writes (validated by pydantic) and the cluster built from it.

A scenario names links, server groups (hardware + model + quantisation from the catalog, with
any number overridable), energy weights, admission control and a workload. Built-in scenarios
ship as YAML files inside the package (``perllm/scenarios/``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from perllm.cluster.settings import KebabModel, validation_message, yaml_message
from perllm.domain import EnergyWeights, LinkSpec, PowerSpec, ServerPerf, ServerSpec, Tier
from perllm.errors import InputError
from perllm.perf.catalog import HARDWARE, MODELS
from perllm.perf.model import Deployment
from perllm.sim.truth import ClusterTruth, DegradeConfig, ServerTruth
from perllm.workload.config import WorkloadConfig
from perllm.workload.presets import BUILTIN_CLASS_TABLE


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


class LinkConfig(KebabModel):
    name: str
    bandwidth_mbps: float = Field(gt=0.0)
    rtt_ms: float = Field(0.0, ge=0.0)
    tx_power_w: float = Field(ge=0.0)
    dynamics: DynamicsConfig = DynamicsConfig()
    per_server: bool = False
    # Model mismatch (see perllm.sim.truth): the link really carries this times its bandwidth.
    true_bandwidth_factor: float = Field(1.0, gt=0.0, allow_inf_nan=False)


class PowerOverride(KebabModel):
    idle_w: float | None = Field(None, ge=0.0)
    max_w: float | None = Field(None, gt=0.0)


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
    name: str
    count: int = Field(1, ge=1, le=10_000)
    tier: Tier
    hardware: str
    model: str
    dtype: Literal["fp16", "int8", "q4"] = "fp16"
    max_batch: int = Field(32, ge=1)
    link: str
    hardware_overrides: HardwareOverrides = HardwareOverrides()
    # A profile YAML from `perllm profile` (relative to the scenario file): its fitted perf
    # coefficients, power (if known) and max batch (unless `max-batch` is set) replace the
    # catalog's.
    profile: str | None = None
    # Model mismatch (see perllm.sim.truth): how the servers really run, apart from the spec
    # that the policies see.
    true_speed_factor: float = Field(1.0, gt=0.0, allow_inf_nan=False)
    true_power_factor: float = Field(1.0, gt=0.0, allow_inf_nan=False)
    degrade: DegradeConfig | None = None

    @field_validator("hardware")
    @classmethod
    def _known_hardware(cls, value: str) -> str:
        if value not in HARDWARE:
            raise ValueError(f"unknown hardware (known: {', '.join(HARDWARE)})")
        return value

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        if value not in MODELS:
            raise ValueError(f"unknown model (known: {', '.join(MODELS)})")
        return value


class ScenarioConfig(KebabModel):
    name: str
    description: str = ""
    links: list[LinkConfig] = Field(min_length=1)
    servers: list[ServerGroupConfig] = Field(min_length=1)
    energy_weights: dict[Literal["transmission", "inference", "idle"], float] = {}
    admission_control: bool = False
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
        if any(w < 0 for w in self.energy_weights.values()):
            raise ValueError("energy weights must be >= 0")
        return self


@dataclass(frozen=True, slots=True)
class LinkDynamics:
    kind: str
    amplitude: float
    period_s: float
    points: tuple[tuple[float, float], ...]


@dataclass(frozen=True, slots=True)
class Cluster:
    """A built scenario: what the simulator runs."""

    name: str
    servers: tuple[ServerSpec, ...]
    links: dict[str, LinkSpec]
    dynamics: dict[str, LinkDynamics]
    weights: EnergyWeights
    admission_control: bool
    workload: WorkloadConfig
    requests: int
    config: ScenarioConfig
    # How the servers and links really behave (default: exactly as specified).
    truth: ClusterTruth = dataclasses.field(default_factory=ClusterTruth)


def _deployment(group: ServerGroupConfig) -> Deployment:
    changes = {k: v for k, v in group.hardware_overrides.model_dump().items() if v is not None}
    hardware = dataclasses.replace(HARDWARE[group.hardware], **changes)
    return Deployment(hardware, MODELS[group.model], group.dtype)


def _series_points(dyn: DynamicsConfig, source: str, field: str) -> tuple[tuple[float, float], ...]:
    """The series' points in time order (a stable sort: of equal times, the last one listed
    wins, since the world takes the last point at or before ``now``)."""
    if dyn.points:
        return tuple(sorted(dyn.points, key=lambda point: point[0]))
    if dyn.file is None:
        return ()
    path = Path(dyn.file)
    if not path.is_file():
        raise InputError(f"{source}: field '{field}': file not found: {dyn.file}")
    points = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            time_s, mbps = (float(x) for x in line.split(","))
        except ValueError:
            raise InputError(
                f"{dyn.file}:{number}: expected 'time_s,mbps' numbers, got {line!r}"
            ) from None
        if mbps <= 0:
            raise InputError(f"{dyn.file}:{number}: bandwidth must be > 0, got {mbps}")
        points.append((time_s, mbps))
    return tuple(sorted(points, key=lambda point: point[0]))


def _profiled(
    group: ServerGroupConfig, dep: Deployment, source: str
) -> tuple[ServerPerf, PowerSpec, int]:
    """Perf, power and max batch of a group: from its ``profile`` if it names one."""
    if group.profile is None:
        return dep.perf(), dep.power(), group.max_batch
    from perllm.cluster.profile import read_profile

    path = Path(group.profile)
    if not path.is_absolute() and not path.is_file() and Path(source).is_file():
        path = Path(source).parent / path
    if not path.is_file():
        raise InputError(f"{source}: field 'servers.{group.name}.profile': file not found: {path}")
    profile = read_profile(path)
    max_batch = group.max_batch if "max_batch" in group.model_fields_set else profile.max_batch
    return profile.server_perf(), profile.power_spec() or dep.power(), max_batch


def _server_truth(group: ServerGroupConfig) -> ServerTruth:
    degrade = group.degrade
    return ServerTruth(
        speed_factor=group.true_speed_factor,
        power_factor=group.true_power_factor,
        degrade_at_s=math.inf if degrade is None else degrade.at_s,
        degrade_speed_factor=1.0 if degrade is None else degrade.speed_factor,
    )


def build(config: ScenarioConfig, source: str = "scenario") -> Cluster:
    """Expand server groups and per-server links into a :class:`Cluster`."""
    link_cfg = {link.name: link for link in config.links}
    links: dict[str, LinkSpec] = {}
    dynamics: dict[str, LinkDynamics] = {}
    servers: list[ServerSpec] = []
    truths: list[ServerTruth] = []
    bandwidth_factor: dict[str, float] = {}

    def add_link(cfg: LinkConfig, name: str) -> None:
        links[name] = LinkSpec(name, cfg.bandwidth_mbps, cfg.rtt_ms / 1000.0, cfg.tx_power_w)
        if cfg.true_bandwidth_factor != 1.0:
            bandwidth_factor[name] = cfg.true_bandwidth_factor
        dyn = cfg.dynamics
        field = f"links.{config.links.index(cfg)}.dynamics.file"
        dynamics[name] = LinkDynamics(
            dyn.kind, dyn.amplitude, dyn.period_s, _series_points(dyn, source, field)
        )

    for cfg in config.links:
        if not cfg.per_server:
            add_link(cfg, cfg.name)
    for group in config.servers:
        dep = _deployment(group)
        perf, power, max_batch = _profiled(group, dep, source)
        if group.profile is None and dep.weight_bytes > dep.hardware.memory_gb * 1e9:
            raise InputError(
                f"{source}: field 'servers.{group.name}': {group.model} {group.dtype} needs "
                f"{dep.weight_bytes / 1e9:.1f} GB, more than {group.hardware}'s "
                f"{dep.hardware.memory_gb:g} GB"
            )
        for i in range(group.count):
            name = group.name if group.count == 1 else f"{group.name}-{i}"
            link = link_cfg[group.link]
            link_name = f"{link.name}-{name}" if link.per_server else link.name
            if link.per_server:
                add_link(link, link_name)
            servers.append(
                ServerSpec(
                    name=name,
                    tier=group.tier,
                    hardware=group.hardware,
                    model=group.model,
                    max_batch=max_batch,
                    kv_capacity_tokens=dep.kv_capacity_tokens(),
                    perf=perf,
                    power=power,
                    link=link_name,
                )
            )
            truths.append(_server_truth(group))
    return Cluster(
        name=config.name,
        servers=tuple(servers),
        links=links,
        dynamics=dynamics,
        weights=EnergyWeights(**config.energy_weights),
        admission_control=config.admission_control,
        workload=config.workload,
        requests=config.requests,
        config=config,
        truth=ClusterTruth(
            servers=tuple(truths) if any(t != ServerTruth() for t in truths) else (),
            link_bandwidth_factor=bandwidth_factor,
        ),
    )


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


def builtin_names() -> list[str]:
    files = resources.files("perllm").joinpath("scenarios")
    return sorted(p.name.removesuffix(".yaml") for p in files.iterdir() if p.name.endswith(".yaml"))


def load(name_or_path: str) -> Cluster:
    """Load a built-in scenario by name, or a YAML file by path."""
    path = Path(name_or_path)
    if name_or_path in builtin_names():
        text = resources.files("perllm").joinpath(f"scenarios/{name_or_path}.yaml").read_text()
        source = f"{name_or_path}.yaml"
    elif path.is_file():
        text, source = path.read_text(), str(path)
    else:
        raise InputError(
            f"--scenario: {name_or_path!r} is neither a built-in scenario "
            f"({', '.join(builtin_names())}) nor a file"
        )
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise InputError(yaml_message(err, source)) from None
    return build(parse(data, source), source)


def describe(cluster: Cluster) -> str:
    tiers: dict[str, int] = {}
    for spec in cluster.servers:
        tiers[spec.tier] = tiers.get(spec.tier, 0) + 1
    parts = ", ".join(f"{n} {tier}" for tier, n in sorted(tiers.items()))
    return f"{parts} servers, {len(cluster.links)} links"


__all__ = ["Cluster", "ScenarioConfig", "build", "builtin_names", "load"]
