"""The perllm gateway in a background thread, in front of local nodes (tests and benchmarks).

:class:`GatewayThread` builds the gateway with :func:`perllm.gateway.create_app` from backend
entries (see :func:`llama_backend` and :func:`emulated_backend`), serves it on a free loopback
port in a daemon thread (:class:`perllm.serving.ServerThread`), and stops it on exit. Every
backend serves the public model name ``perllm``.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from perllm.node.llamacpp import DEFAULT_ALIAS, NodeError
from perllm.serving import ServerThread

PUBLIC_MODEL = "perllm"

__all__ = ["PUBLIC_MODEL", "GatewayThread", "emulated_backend", "llama_backend"]


def llama_backend(name: str, url: str, alias: str = DEFAULT_ALIAS) -> dict[str, Any]:
    """A gateway backend entry for a llama.cpp node.

    The gateway config needs a catalog deployment for its estimates; a CPU Xeon with a 4-bit
    7B model stands in until the gateway accepts a fitted profile.
    """
    return {
        "name": name, "url": url, "tier": "edge", "models": {PUBLIC_MODEL: alias},
        "hardware": "xeon-silver-4214r", "model": "llama-2-7b", "dtype": "q4",
        "max-concurrency": 1, "link": {"bandwidth-mbps": 100, "rtt-ms": 0.0},
    }  # fmt: skip


def emulated_backend(name: str, url: str, profile: str, rtt_ms: float) -> dict[str, Any]:
    """A gateway backend entry for ``perllm emulate --profile HARDWARE:MODEL:DTYPE``."""
    hardware, model, dtype = profile.split(":")
    return {
        "name": name, "url": url, "tier": "cloud", "models": {PUBLIC_MODEL: model},
        "hardware": hardware, "model": model, "dtype": dtype, "max-concurrency": 32,
        "link": {"bandwidth-mbps": 300, "rtt-ms": rtt_ms},
    }  # fmt: skip


class GatewayThread:
    """Context manager: the gateway on ``127.0.0.1`` (a free port) in a daemon thread.

    Parameters
    ----------
    backends
        Backend entries of a gateway config (kebab-case keys).
    policy
        Policy name (see ``perllm policies``).
    params
        Policy parameters.
    classes
        Service classes, ``{name: {"deadline-ms": ..., "output-tokens": ...}}``.
    """

    def __init__(
        self,
        backends: list[dict[str, Any]],
        policy: str = "round-robin",
        params: dict[str, Any] | None = None,
        classes: dict[str, dict[str, float]] | None = None,
    ) -> None:
        from perllm.gateway import create_app, parse_config
        from perllm.policies.registry import make_policy

        data: dict[str, Any] = {
            "backends": backends,
            "policy": {"type": policy, "params": params or {}},
            "health": {"path": "/v1/models", "interval-s": 2.0},
            "timeouts": {"read-s": 600, "drain-s": 5},
        }
        if classes is not None:
            data["classes"] = classes
            data["default-class"] = next(iter(classes))
        self.config = parse_config(data, "gateway")
        self.app = create_app(self.config, make_policy(policy, params, 0), restore_state=False)
        self.model = PUBLIC_MODEL
        self._server = ServerThread(self.app)
        self.url = self._server.url

    def __enter__(self) -> GatewayThread:
        try:
            self._server.start()
        except RuntimeError as err:
            raise NodeError(f"the gateway did not start: {err}") from None
        return self

    def stop(self) -> None:
        """Shut the gateway down (calls in flight finish), wait for its thread."""
        self._server.stop()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
