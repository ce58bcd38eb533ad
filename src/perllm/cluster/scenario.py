"""Scenarios: load one (a built-in by name, or a YAML file) and build the :class:`Cluster` that
the simulator runs and the testbed emulates.

The settings are :mod:`perllm.cluster.scenario_config`; each server group becomes
:class:`~perllm.domain.ServerSpec` s through the one builder (:mod:`perllm.cluster.build`), each
link a :class:`~perllm.domain.LinkSpec` plus its bandwidth dynamics, and the groups' and links'
mismatch a :class:`~perllm.cluster.truth.ClusterTruth`. Built-in scenarios ship as YAML files
inside the package (``perllm/scenarios/``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from perllm.cluster.build import (
    ServerDescription,
    fit_problem,
    link_spec,
    resolve_profile,
    server_spec,
)
from perllm.cluster.scenario_config import (
    DynamicsConfig,
    ScenarioConfig,
    ScenarioLinkConfig,
    ServerGroupConfig,
    parse,
)
from perllm.cluster.settings import yaml_message
from perllm.cluster.truth import ClusterTruth, ServerTruth
from perllm.domain import EnergyWeights, LinkSpec, ServerSpec
from perllm.errors import InputError
from perllm.workload.config import WorkloadConfig

__all__ = [
    "Cluster",
    "LinkDynamics",
    "ScenarioConfig",
    "build",
    "builtin_names",
    "describe",
    "load",
    "parse",
    "replica_names",
]


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
    # Requests longer than a server's context window are refused there (the KV cache always is).
    enforce_context_window: bool = False
    # The router records the prompt blocks it sends to each server (perllm.prefix); off, the
    # policies see no prefix signal.
    prefix_record: bool = True


def replica_names(group: ServerGroupConfig) -> Iterator[str]:
    """The names of a group's servers: ``{name}`` for one, else ``{name}-0``, ``{name}-1``, ..."""
    for i in range(group.count):
        yield group.name if group.count == 1 else f"{group.name}-{i}"


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


def _description(group: ServerGroupConfig, source: str) -> ServerDescription:
    profile = None
    if group.profile is not None:
        profile = resolve_profile(group.profile, source, f"servers.{group.name}.profile")
    overrides = {k: v for k, v in group.hardware_overrides.model_dump().items() if v is not None}
    return ServerDescription(
        name=group.name,
        tier=group.tier,
        hardware=group.hardware,
        model=group.model,
        dtype=group.dtype,
        link=group.link,
        max_batch=group.max_batch,
        profile=profile,
        max_batch_from_profile="max_batch" not in group.model_fields_set,
        hardware_overrides=overrides,
    )


def _server_truth(group: ServerGroupConfig) -> ServerTruth:
    degrade = group.degrade
    return ServerTruth(
        speed_factor=group.true_speed_factor,
        power_factor=group.true_power_factor,
        degrade_at_s=math.inf if degrade is None else degrade.at_s,
        degrade_speed_factor=1.0 if degrade is None else degrade.speed_factor,
    )


def build(config: ScenarioConfig, source: str = "scenario") -> Cluster:
    """Expand server groups and per-server links into a :class:`Cluster`.

    ``source`` names the scenario in messages; where it is a file, a relative ``profile`` is
    looked up next to it first (:func:`~perllm.cluster.build.resolve_profile`).
    """
    link_cfg = {link.name: link for link in config.links}
    links: dict[str, LinkSpec] = {}
    dynamics: dict[str, LinkDynamics] = {}
    servers: list[ServerSpec] = []
    truths: list[ServerTruth] = []
    bandwidth_factor: dict[str, float] = {}

    def add_link(cfg: ScenarioLinkConfig, name: str) -> None:
        links[name] = link_spec(name, cfg)
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
        server = _description(group, source)
        problem = fit_problem(server)
        if problem is not None:
            raise InputError(f"{source}: field 'servers.{group.name}': {problem}")
        spec = server_spec(server)
        link = link_cfg[group.link]
        for name in replica_names(group):
            link_name = f"{link.name}-{name}" if link.per_server else link.name
            if link.per_server:
                add_link(link, link_name)
            servers.append(dataclasses.replace(spec, name=name, link=link_name))
            truths.append(_server_truth(group))
    return Cluster(
        name=config.name,
        servers=tuple(servers),
        links=links,
        dynamics=dynamics,
        weights=EnergyWeights(**config.energy_weights),
        admission_control=config.admission_control,
        enforce_context_window=config.enforce_context_window,
        prefix_record=config.prefix_record,
        workload=config.workload,
        requests=config.requests,
        config=config,
        truth=ClusterTruth(
            servers=tuple(truths) if any(t != ServerTruth() for t in truths) else (),
            link_bandwidth_factor=bandwidth_factor,
        ),
    )


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
