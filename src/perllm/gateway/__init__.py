"""The live gateway: an OpenAI-compatible front that schedules calls across real backends.

Build an app with :func:`create_app` from a :class:`GatewayConfig` (see
:func:`load_config`) and a policy from :func:`perllm.policies.registry.make_policy`, and run it
with any ASGI server (``perllm serve`` uses uvicorn).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from perllm.lazy import lazy_exports

if TYPE_CHECKING:
    from perllm.gateway.app import create_app, make_clients
    from perllm.gateway.config import GatewayConfig, load_config, parse_config
    from perllm.gateway.gateway import Gateway

_EXPORTS: dict[str, tuple[str, str]] = {
    "Gateway": ("perllm.gateway.gateway", "Gateway"),
    "create_app": ("perllm.gateway.app", "create_app"),
    "make_clients": ("perllm.gateway.app", "make_clients"),
    "GatewayConfig": ("perllm.gateway.config", "GatewayConfig"),
    "load_config": ("perllm.gateway.config", "load_config"),
    "parse_config": ("perllm.gateway.config", "parse_config"),
}

__all__ = [
    "Gateway",
    "GatewayConfig",
    "create_app",
    "load_config",
    "make_clients",
    "parse_config",
]

__getattr__ = lazy_exports(__name__, _EXPORTS)
