"""A local testbed: one emulated backend per server of a scenario, and the gateway in front.

``perllm testbed --scenario tiny --port 8080`` starts the gateway on ``8080`` and the
scenario's servers as emulators on ``8081, 8082, ...`` (loopback by default), all in one
process, one event loop. Each emulator runs its server's catalog deployment (hardware, model
and the dtype of its server group) with its ``max-batch``, and waits its link's RTT per call
(bandwidth is not emulated). The gateway serves every backend under the public model name
``perllm``; its service classes are the scenario's, each with the middle of its deadline range
as default deadline. ``time-scale`` speeds everything up alike: emulators, RTTs, the gateway's
estimates (its config ``time-scale``) and the class deadlines.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import signal
import socket
from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from perllm.cluster.scenario import Cluster, replica_names
from perllm.errors import InputError
from perllm.gateway.config import GatewayConfig, parse_config

__all__ = ["PUBLIC_MODEL", "EmulatorPlan", "bind", "plan_testbed", "serve_apps"]

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
    """The emulators (on ``port + 1, ...``) and the gateway config for a scenario."""
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


def bind(host: str, port: int, flag: str = "--port") -> socket.socket:
    """A listening socket on ``host:port`` (one-line :class:`InputError` if it cannot be had)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise InputError(f"--host: cannot resolve {host!r}: {err.strerror}") from None
    family = infos[0][0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as err:
        sock.close()
        raise InputError(f"{flag}: cannot listen on {host}:{port}: {err.strerror}") from None
    sock.set_inheritable(True)
    return sock


def _seconds(value: float | None) -> int | None:
    return None if value is None else max(1, math.ceil(value))


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to :func:`serve_apps`."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


async def serve_apps(
    apps: Sequence[tuple[ASGIApp, socket.socket]],
    *,
    log_level: str = "warning",
    graceful_s: float | None = None,
    keep_alive_s: float = 5.0,
    on_stop: Sequence[Callable[[], Awaitable[None]]] = (),
) -> None:
    """Serve several apps in this event loop until one stops.

    The first Ctrl-C (or SIGTERM) shuts every server down gracefully: they stop accepting,
    ``on_stop`` hooks start (a gateway ends its calls in flight within its grace period),
    calls in flight finish (those still open after ``graceful_s`` are cancelled), lifespans
    end. A second one forces them down.
    """
    servers = [
        _Server(
            uvicorn.Config(
                app,
                log_level=log_level,
                timeout_graceful_shutdown=_seconds(graceful_s),
                timeout_keep_alive=max(1, math.ceil(keep_alive_s)),
                access_log=False,
            )
        )
        for app, _ in apps
    ]
    tasks = [
        asyncio.create_task(server.serve(sockets=[sock]))
        for server, (_, sock) in zip(servers, apps, strict=True)
    ]

    hooks: list[asyncio.Task[None]] = []

    def stop() -> None:
        if not hooks:
            hooks.extend(asyncio.ensure_future(hook()) for hook in on_stop)
        for server in servers:
            server.force_exit = server.should_exit
            server.should_exit = True

    loop = asyncio.get_running_loop()
    handled = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop)
            handled.append(sig)
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for server in servers:
            server.should_exit = True
        await asyncio.gather(*tasks, return_exceptions=True)
        for hook in hooks:
            hook.cancel()
        await asyncio.gather(*hooks, return_exceptions=True)
        for sig in handled:
            loop.remove_signal_handler(sig)
