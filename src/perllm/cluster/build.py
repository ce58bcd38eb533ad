"""The one builder: a server description becomes a :class:`~perllm.domain.ServerSpec`, a link
setting a :class:`~perllm.domain.LinkSpec`.

A scenario's server group (:mod:`perllm.cluster.scenario`) and a gateway's backend
(:mod:`perllm.gateway.view`) both describe a server as a :class:`ServerDescription`, and
:func:`server_spec` turns it into the spec the policies see:

1. the deployment: the catalog's hardware (with any ``hardware_overrides``), model and dtype;
2. perf and power: the deployment's, or those of a measured ``profile`` (its power only if it
   has one), then an explicit ``power`` override (idle and full-load watts);
3. every perf time multiplied by ``time_scale`` (emulated backends running faster than real
   time; ``1`` leaves the times as they are);
4. the max batch: ``max_batch``, or the profile's when ``max_batch_from_profile``;
5. the KV cache capacity: the deployment's.

A relative ``profile:`` path is resolved once, by :func:`resolve_profile`, against the file
it is written in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perllm.cluster.parts import LinkSettings, PowerConfig
from perllm.cluster.profile import read_profile
from perllm.domain import LinkSpec, ServerPerf, ServerSpec, Tier
from perllm.errors import InputError
from perllm.perf.catalog import HARDWARE, MODELS
from perllm.perf.model import Deployment

__all__ = [
    "ServerDescription",
    "deployment_of",
    "fit_problem",
    "link_spec",
    "resolve_profile",
    "server_spec",
]


@dataclass(frozen=True, slots=True)
class ServerDescription:
    """A server as a settings file describes it (validated; names are the catalog's).

    Attributes
    ----------
    name, tier, link
        The spec's name, tier and the name of its link.
    hardware, model, dtype
        The catalog deployment that predicts its speed, power and KV cache.
    max_batch
        The most requests it runs at once.
    profile
        A measured profile (already resolved, see :func:`resolve_profile`): its perf
        coefficients, and its power if known, replace the deployment's.
    max_batch_from_profile
        Take the profile's max batch instead of ``max_batch`` (a scenario whose server group
        does not set ``max-batch``).
    hardware_overrides
        :class:`~perllm.perf.catalog.HardwareProfile` fields that replace the catalog's.
    power
        Idle and full-load power that replace the deployment's or the profile's.
    time_scale
        Every perf time is multiplied by it.
    """

    name: str
    tier: Tier
    hardware: str
    model: str
    dtype: str
    link: str
    max_batch: int
    profile: Path | None = None
    max_batch_from_profile: bool = False
    hardware_overrides: Mapping[str, float] = field(default_factory=dict)
    power: PowerConfig | None = None
    time_scale: float = 1.0


def deployment_of(server: ServerDescription) -> Deployment:
    """The catalog deployment of ``server``, with its hardware overrides."""
    changes: dict[str, Any] = dict(server.hardware_overrides)
    hardware = dataclasses.replace(HARDWARE[server.hardware], **changes)
    return Deployment(hardware, MODELS[server.model], server.dtype)


def fit_problem(server: ServerDescription) -> str | None:
    """Why the model's weights do not fit the hardware's memory, or ``None``.

    A server with a measured profile runs, so it fits whatever the catalog says (``None``).
    """
    dep = deployment_of(server)
    if server.profile is not None or dep.weight_bytes <= dep.hardware.memory_gb * 1e9:
        return None
    return (
        f"{server.model} {server.dtype} needs {dep.weight_bytes / 1e9:.1f} GB, more than "
        f"{server.hardware}'s {dep.hardware.memory_gb:g} GB"
    )


def _scaled(perf: ServerPerf, scale: float) -> ServerPerf:
    changes = {f.name: getattr(perf, f.name) * scale for f in dataclasses.fields(perf)}
    return ServerPerf(**changes)


def server_spec(server: ServerDescription) -> ServerSpec:
    """The spec of ``server`` (see the module docstring for the steps).

    Raises
    ------
    InputError
        The profile cannot be read or is not a valid profile (one line naming the file).
    """
    dep = deployment_of(server)
    perf, power, max_batch = dep.perf(), dep.power(), server.max_batch
    if server.profile is not None:
        profile = read_profile(server.profile)
        perf, power = profile.server_perf(), profile.power_spec() or power
        if server.max_batch_from_profile:
            max_batch = profile.max_batch
    if server.power is not None:
        power = dataclasses.replace(power, idle_w=server.power.idle_w, max_w=server.power.max_w)
    if server.time_scale != 1.0:
        perf = _scaled(perf, server.time_scale)
    return ServerSpec(
        name=server.name,
        tier=server.tier,
        hardware=server.hardware,
        model=server.model,
        max_batch=max_batch,
        kv_capacity_tokens=dep.kv_capacity_tokens(),
        perf=perf,
        power=power,
        link=server.link,
        context_tokens=dep.model.context_tokens,
    )


def link_spec(name: str, link: LinkSettings, time_scale: float = 1.0) -> LinkSpec:
    """The spec of a link named ``name``; its RTT is multiplied by ``time_scale``."""
    return LinkSpec(name, link.bandwidth_mbps, link.rtt_ms / 1000.0 * time_scale, link.tx_power_w)


def resolve_profile(profile: str, source: str, field: str) -> Path:
    """The file that a ``profile:`` setting names.

    A relative path is looked up in the directory of the file ``source`` it is written in
    (wherever perllm is started), then in the working directory (also where ``source`` is no
    file: a scenario built in memory, a built-in).

    Parameters
    ----------
    profile
        The path as written.
    source
        The settings file (or a description of where the settings came from).
    field
        The setting's field path, for the message.

    Raises
    ------
    InputError
        ``source: field 'FIELD': file not found: PATH`` (the first place looked).
    """
    path = Path(profile)
    candidates = [path]
    if not path.is_absolute() and Path(source).is_file():
        candidates.insert(0, Path(source).parent / path)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise InputError(f"{source}: field '{field}': file not found: {candidates[0]}")
