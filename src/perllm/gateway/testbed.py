"""A local testbed: one emulated backend per server of a scenario, and the gateway in front.

``perllm testbed --scenario tiny --port 8080`` starts the gateway on ``8080`` and the
scenario's servers as emulators on ``8081, 8082, ...`` (loopback by default), all in one
process, one event loop. Each emulator runs its server's catalog deployment (hardware, model
and the dtype of its server group) with its ``max-batch``, and waits its link's RTT per call
(bandwidth is not emulated). The gateway serves every backend under the public model name
``perllm``; its service classes are the scenario's, each with the middle of its deadline range
as default deadline. ``time-scale`` speeds everything up alike: emulators, RTTs, the gateway's
estimates (its config ``time-scale``) and the class deadlines. The servers are started by
:func:`perllm.serving.serve_apps`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from perllm.cli_args import MAX_PORT
from perllm.cluster.scenario import Cluster, replica_names
from perllm.errors import InputError
from perllm.gateway.config import GatewayConfig, parse_config

__all__ = ["PUBLIC_MODEL", "EmulatorPlan", "plan_testbed"]

PUBLIC_MODEL = "perllm"


@dataclass(frozen=True, slots=True)
class EmulatorPlan:
    """One emulated backend of a testbed."""

    name: str
    profile: str
    port: int
    rtt_ms: float
    max_batch: int


def _dtypes(cluster: Cluster) -> dict[str, str]:
    """Server name -> the dtype of its server group."""
    return {name: group.dtype for group in cluster.config.servers for name in replica_names(group)}


def plan_testbed(
    cluster: Cluster,
    *,
    host: str,
    port: int,
    time_scale: float,
    policy: dict[str, Any],
) -> tuple[list[EmulatorPlan], GatewayConfig]:
    """The emulators (on ``port + 1, ...``) and the gateway config for a scenario
    (:class:`~perllm.errors.InputError` naming ``--port`` when those ports pass 65535)."""
    last = port + len(cluster.servers)
    if last > MAX_PORT:
        raise InputError(
            f"--port: {port} leaves no room for the {len(cluster.servers)} emulators on the "
            f"ports after it (the last would be {last}, above {MAX_PORT}); pick a lower port"
        )
    dtypes = _dtypes(cluster)
    plans, backends = [], []
    for i, spec in enumerate(cluster.servers, start=1):
        link = cluster.links[spec.link]
        dtype = dtypes.get(spec.name, "fp16")
        plans.append(
            EmulatorPlan(
                spec.name,
                f"{spec.hardware}:{spec.model}:{dtype}",
                port + i,
                link.rtt_s * 1000.0,
                spec.max_batch,
            )
        )
        backends.append(
            {
                "name": spec.name,
                "url": f"http://{host}:{port + i}",
                "tier": spec.tier,
                "models": {PUBLIC_MODEL: spec.model},
                "hardware": spec.hardware,
                "model": spec.model,
                "dtype": dtype,
                "max-concurrency": spec.max_batch,
                "link": {
                    "bandwidth-mbps": link.bandwidth_mbps,
                    "rtt-ms": link.rtt_s * 1000.0,
                    "tx-power-w": link.tx_power_w,
                },
            }
        )
    classes = {
        c.name: {
            "deadline-ms": (c.deadline.low_s + c.deadline.high_s) / 2 * 1000.0 * time_scale,
            "output-tokens": 128,
        }
        for c in cluster.workload.classes
    }
    data = {
        "backends": backends,
        "policy": policy,
        "classes": classes,
        "default-class": cluster.workload.classes[0].name,
        "time-scale": time_scale,
        "energy-weights": {
            "transmission": cluster.weights.transmission,
            "inference": cluster.weights.inference,
            "idle": cluster.weights.idle,
        },
        "admission-control": cluster.admission_control,
        "health": {"interval-s": 2.0, "cooldown-s": 5.0},
    }
    return plans, parse_config(data, f"testbed {cluster.name}")
