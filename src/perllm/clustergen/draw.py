"""Draw a random edge-cloud cluster as a scenario mapping (the YAML a user would write).

One ``numpy.random.default_rng(seed)`` spawns independent streams for the topology, the links,
the model mismatch and the workload, so the same seed gives the same scenario, byte for byte.
Every server is its own group (``count: 1``) so that each can carry its own mismatch.
The arrival rate and the degradation times depend on the cluster's capacity, measured after
the draw: :func:`draw_scenario` leaves them to :func:`finish`.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from perllm.clustergen.hardware import CLOUD, EDGE, KindSpec, candidates
from perllm.clustergen.settings import GeneratorSettings

__all__ = ["TRACE_MIX", "Draft", "draw_scenario", "finish"]

# A class mix shaped like the public traces (PROFILES.md): Azure 2023 conversation and code
# requests, and ShareGPT-sized chat. Deadlines are assumptions in the spirit of the built-in
# classes: code completion is interactive, a conversation answer is read while it streams.
TRACE_MIX: tuple[dict[str, Any], ...] = (
    {
        "name": "conversation",
        "share": 0.5,
        "prompt": {"preset": "azure-conv-prompt", "max-tokens": 4096},
        "output": {"preset": "azure-conv-output", "max-tokens": 1024},
        "deadline": {"low-s": 10.0, "high-s": 30.0, "per-output-token-s": 0.02},
    },
    {
        "name": "code",
        "share": 0.3,
        "prompt": {"preset": "azure-code-prompt", "max-tokens": 8192},
        "output": {"preset": "azure-code-output", "max-tokens": 512},
        "deadline": {"low-s": 4.0, "high-s": 10.0},
    },
    {
        "name": "chat",
        "share": 0.2,
        "prompt": {"preset": "sharegpt-prompt"},
        "output": {"preset": "sharegpt-output", "max-tokens": 1024},
        "deadline": {"low-s": 15.0, "high-s": 40.0},
    },
)

CLASS_MIX_NAMES = ("personalized", "trace-mix")


@dataclass(frozen=True, slots=True)
class Draft:
    """A drawn scenario before its load is set: ``data`` has a placeholder rate and no
    degradations; ``degrade`` maps a server group's index to ``(speed factor, at)`` with ``at``
    a fraction of the run's length at 1x load."""

    data: dict[str, Any]
    degrade: dict[int, tuple[float, float]]


def _r(value: float, digits: int = 3) -> float:
    """Round to ``digits`` significant digits (readable YAML; the YAML is the truth)."""
    if value == 0:
        return 0.0
    return round(value, digits - 1 - math.floor(math.log10(abs(value))))


def _uniform(rng: np.random.Generator, pair: tuple[float, float]) -> float:
    return float(rng.uniform(pair[0], pair[1]))


def _log_uniform(rng: np.random.Generator, pair: tuple[float, float]) -> float:
    return float(math.exp(rng.uniform(math.log(pair[0]), math.log(pair[1]))))


def _int(rng: np.random.Generator, low: int, high: int) -> int:
    return int(rng.integers(low, high + 1))


def _pick(rng: np.random.Generator, weights: dict[str, float]) -> str:
    names = sorted(weights)
    p = np.array([weights[name] for name in names], dtype=float)
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def _deployment(rng: np.random.Generator, kind: KindSpec) -> dict[str, Any]:
    options = candidates(kind)
    hardware, model, dtype = options[int(rng.integers(len(options)))]
    batch = kind.max_batch[int(rng.integers(len(kind.max_batch)))]
    return {"hardware": hardware, "model": model, "dtype": dtype, "max-batch": batch}


def _spread(rng: np.random.Generator, items: int, groups: int) -> list[int]:
    """Assign ``items`` to ``groups`` so that every group gets at least one (sorted)."""
    extra = rng.integers(0, groups, items - groups).tolist() if items > groups else []
    return sorted(list(range(groups)) + extra)


def _link(rng: np.random.Generator, s: GeneratorSettings, name: str, cloud: bool) -> dict[str, Any]:
    bandwidth = s.cloud_bandwidth_mbps if cloud else s.edge_bandwidth_mbps
    rtt = s.cloud_rtt_ms if cloud else s.edge_rtt_ms
    # Transmission power while a transfer is active: assumptions as in the built-in scenarios
    # (WAN share 5-12 W, an access point or NIC 1-3 W).
    tx_power = (5.0, 12.0) if cloud else (1.0, 3.0)
    link: dict[str, Any] = {
        "name": name,
        "per-server": bool(rng.random() >= s.shared_link_probability),
        "bandwidth-mbps": _r(_log_uniform(rng, bandwidth)),
        "rtt-ms": _r(_uniform(rng, rtt)),
        "tx-power-w": _r(_uniform(rng, tx_power)),
    }
    amplitude = _r(_uniform(rng, s.fluctuation), 2)
    period = _r(_uniform(rng, s.fluctuation_period_s), 2)
    if amplitude >= 0.01:
        link["dynamics"] = {"kind": "fluctuate", "amplitude": amplitude, "period-s": period}
    if rng.random() < s.link_mismatch_probability:
        link["true-bandwidth-factor"] = _r(_uniform(rng, s.link_mismatch))
    return link


def _servers(rng: np.random.Generator, s: GeneratorSettings) -> tuple[list[dict[str, Any]], int]:
    """Server groups (without links or mismatch) and the number of edge sites."""
    total = _int(rng, max(s.servers[0], s.cloud_servers[0] + 1), s.servers[1])
    clouds = _int(rng, s.cloud_servers[0], min(s.cloud_servers[1], total - 1))
    edges = total - clouds
    types = _int(rng, min(s.edge_hardware_types[0], edges), min(s.edge_hardware_types[1], edges))
    kinds = [_pick(rng, {str(k): w for k, w in s.edge_kinds.items()}) for _ in range(types)]
    deployments = [_deployment(rng, EDGE[kind]) for kind in kinds]
    sites = _int(rng, min(s.edge_sites[0], edges), min(s.edge_sites[1], edges))
    site_of = rng.permutation(_spread(rng, edges, sites)).tolist()
    groups = []
    for i, type_index in enumerate(_spread(rng, edges, types)):
        group = {"name": f"edge-{i:02d}", "tier": "edge", **deployments[type_index]}
        groups.append({**group, "link": f"site-{site_of[i]}"})
    for i in range(clouds):
        groups.append({"name": f"cloud-{i}", "tier": "cloud", **_deployment(rng, CLOUD)})
        groups[-1]["link"] = "cloud-wan"
    return groups, sites


def _mismatch(
    rng: np.random.Generator, s: GeneratorSettings, groups: list[dict[str, Any]]
) -> dict[int, tuple[float, float]]:
    """Add true speed and power factors to each group; return the degradations drawn."""
    degrade = {}
    for index, group in enumerate(groups):
        speed = _r(_uniform(rng, (1 - s.speed_mismatch, 1 + s.speed_mismatch)))
        power = _r(_uniform(rng, (1 - s.power_mismatch, 1 + s.power_mismatch)))
        if speed != 1.0:
            group["true-speed-factor"] = speed
        if power != 1.0:
            group["true-power-factor"] = power
        if rng.random() < s.degrade_probability:
            degrade[index] = (_r(_uniform(rng, s.degrade_speed)), _uniform(rng, s.degrade_at))
    return degrade


def _workload(rng: np.random.Generator, s: GeneratorSettings) -> dict[str, Any]:
    arrivals: dict[str, Any] = {"process": "poisson", "rate-rps": 1.0}
    if rng.random() < s.gamma_probability:
        arrivals = {"process": "gamma", "rate-rps": 1.0, "cv": _r(_uniform(rng, s.gamma_cv))}
    mix = _pick(rng, {str(k): w for k, w in s.class_mixes.items()})
    classes: Any = mix if mix == "personalized" else copy.deepcopy(list(TRACE_MIX))
    return {"arrivals": arrivals, "classes": classes}


def draw_scenario(seed: int, settings: GeneratorSettings) -> Draft:
    """Draw a cluster and its workload from ``seed`` (see the module docstring)."""
    topology, links_rng, mismatch_rng, workload_rng = np.random.default_rng(seed).spawn(4)
    groups, sites = _servers(topology, settings)
    links = [_link(links_rng, settings, f"site-{k}", cloud=False) for k in range(sites)]
    if any(group["tier"] == "cloud" for group in groups):
        links.append(_link(links_rng, settings, "cloud-wan", cloud=True))
    degrade = _mismatch(mismatch_rng, settings, groups)
    edges = sum(group["tier"] == "edge" for group in groups)
    kinds = sorted({str(group["hardware"]) for group in groups})
    data = {
        "name": f"generated-{seed}",
        "description": f"{edges} edge + {len(groups) - edges} cloud ({', '.join(kinds)})",
        "links": links,
        "servers": groups,
        "requests": settings.requests,
        "workload": _workload(workload_rng, settings),
    }
    return Draft(data, degrade)


def finish(
    draft: Draft, capacity_rps: float, slots: int, settings: GeneratorSettings
) -> dict[str, Any]:
    """The final scenario: rate ``load x capacity``; ``max(requests, steady-multiple x slots)``
    requests (at most ``max-requests``); degradations at their fraction of the length of such a
    run at 1x load."""
    data = copy.deepcopy(draft.data)
    data["workload"]["arrivals"]["rate-rps"] = _r(settings.load * capacity_rps, 4)
    steady = math.ceil(settings.steady_multiple * slots)
    requests = min(max(settings.requests, steady), settings.max_requests)
    data["requests"] = requests
    run_s = requests / capacity_rps
    for index, (speed, at) in sorted(draft.degrade.items()):
        data["servers"][index]["degrade"] = {"at-s": _r(at * run_s), "speed-factor": speed}
    return data
