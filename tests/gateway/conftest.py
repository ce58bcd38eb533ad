"""Fixtures for gateway and emulator tests: real uvicorn servers on loopback, in threads.

``serve(app)`` runs an ASGI app on a free loopback port in a background thread
(:class:`perllm.serving.ServerThread`) and stops it at the end of the test;
:func:`gateway_config` builds a gateway config for emulated backends.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.types import ASGIApp

from perllm.emulator.app import create_emulator_app
from perllm.gateway.config import GatewayConfig, parse_config
from perllm.serving import ServerThread

EDGE = "rtx-3090:llama-2-7b:q4"
CLOUD = "a100-80gb:llama-2-13b:fp16"


@pytest.fixture
def serve() -> Iterator[Any]:
    """``serve(app) -> ServerThread``: started now, stopped at the end of the test."""
    started: list[ServerThread] = []

    def start(app: ASGIApp) -> ServerThread:
        server = ServerThread(app).start()
        started.append(server)
        return server

    yield start
    alive = [server for server in reversed(started) if server.thread.is_alive()]
    for server in alive:  # all told first, so that their shutdowns overlap
        server.server.should_exit = True
    for server in alive:
        server.stop()


def emulator(profile: str = EDGE, **kwargs: Any) -> ASGIApp:
    return create_emulator_app(profile, **kwargs)


def backend(name: str, url: str, profile: str = EDGE, **extra: Any) -> dict[str, Any]:
    """A backend entry of a gateway config for an emulator serving ``profile``."""
    hardware, model, dtype = profile.split(":")
    entry = {
        "name": name,
        "url": url,
        "tier": "cloud" if hardware.startswith(("a100", "h100")) else "edge",
        "models": {"m": model},
        "hardware": hardware,
        "model": model,
        "dtype": dtype,
        "max-concurrency": 8,
    }
    entry.update(extra)
    return entry


def gateway_config(backends: list[dict[str, Any]], **extra: Any) -> GatewayConfig:
    data: dict[str, Any] = {
        "backends": backends,
        "policy": {"type": "round-robin"},
        "classes": {"default": {"deadline-ms": 5000}, "tight": {"deadline-ms": 100}},
        "health": {"interval-s": 0.5, "cooldown-s": 30, "failure-threshold": 1},
        "timeouts": {"connect-s": 1, "read-s": 10, "drain-s": 5},
    }
    data.update(extra)
    return parse_config(data, "test")


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio (through anyio's pytest plugin)."""
    return "asyncio"


class Kit:
    """The helpers above, handed to tests as the ``kit`` fixture (tests never import conftest)."""

    EDGE = EDGE
    CLOUD = CLOUD
    ServerThread = ServerThread
    emulator = staticmethod(emulator)
    backend = staticmethod(backend)
    gateway_config = staticmethod(gateway_config)


@pytest.fixture
def kit() -> type[Kit]:
    return Kit
