"""The :class:`Gateway`: everything one gateway app owns, shared by its routes as
``app.state.gateway`` (built by :func:`perllm.gateway.app.create_app`); it opens each call's
:class:`~perllm.gateway.call.CallContext` (:meth:`Gateway.open_call`)."""

from __future__ import annotations

import hmac
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.requests import Request as HttpRequest

from perllm.gateway.call import CallContext
from perllm.gateway.config import GatewayConfig
from perllm.gateway.dispatch import Dispatcher
from perllm.gateway.health import HealthChecker
from perllm.gateway.limits import KeyLimiter
from perllm.gateway.metrics import GatewayMetrics
from perllm.gateway.outcome import EndingSink, access_log
from perllm.gateway.scrape import Scraper
from perllm.gateway.shared_state import SharedState
from perllm.gateway.state import json_ready
from perllm.gateway.view import LiveView
from perllm.metrics.summary import summarize
from perllm.policies.base import Policy

__all__ = ["STOP_GRACE_S", "Gateway"]

# How long calls ended at shutdown may take to send their last event.
STOP_GRACE_S = 5.0

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Gateway:
    """Everything one app owns (reachable as ``app.state.gateway``).

    ``endings`` are the sinks of every call's ending, in order: the dispatcher (the recorder,
    the per-backend answer counts), the metrics and the access log unless others are given;
    a sink added to it sees the calls opened from then on.
    """

    config: GatewayConfig
    policy: Policy
    clients: list[httpx.AsyncClient]
    own_client: bool
    view: LiveView
    health: HealthChecker
    metrics: GatewayMetrics
    dispatcher: Dispatcher
    models: tuple[str, ...]
    started_s: float
    limiter: KeyLimiter
    scraper: Scraper
    shared: SharedState | None = None
    endings: list[EndingSink] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.endings:
            self.endings = [self.dispatcher.on_end, self.metrics.on_end, access_log]

    def open_call(self) -> CallContext:
        """A new call's context (a fresh request id, the ``timeouts.request-s`` limit), ending
        into :attr:`endings`."""
        return CallContext(self.config.timeouts.request_s, list(self.endings))

    def caller(self, request: HttpRequest) -> str | None:
        """Who calls: ``key-N`` for the N-th API key, ``None`` when no key matches; without
        ``api-keys``, ``addr-HOST`` (the client's address). Keys are compared in constant
        time, and all of them, whichever matches."""
        keys = self.config.api_keys
        if not keys:
            return f"addr-{request.client.host if request.client else '-'}"
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        given = token.strip().encode()
        matches = [hmac.compare_digest(given, key.encode()) for key in keys]
        if scheme.lower() != "bearer" or not any(matches):
            return None
        return f"key-{matches.index(True)}"

    def authorized(self, request: HttpRequest) -> bool:
        return self.caller(request) is not None

    async def shutdown(self, drain_s: float | None = None) -> None:
        """On stopping: let calls in flight finish within ``drain_s`` (default
        ``timeouts.drain-s``), then end the rest (streams with an SSE error event, others with a
        ``503``)."""
        if drain_s is None:
            drain_s = self.config.timeouts.drain_s
        if await self.dispatcher.drain(drain_s):
            return
        log.warning("shutdown: ending %d calls still in flight", self.dispatcher.active)
        self.dispatcher.stop_all("the gateway is shutting down")
        await self.dispatcher.drain(STOP_GRACE_S)

    def _measured(self, server: int) -> dict[str, float] | None:
        """A backend's measured energy so far: this gateway's calls, others', idle."""
        ledger = self.dispatcher.energy.ledgers[server]
        if ledger is None:
            return None
        return {
            "own": ledger.own_j,
            "others": ledger.others_j,
            "idle": ledger.idle_j,
            "read": ledger.read_j,
        }

    def stats(self) -> dict[str, Any]:
        now = time.monotonic()
        backends = {}
        for i, spec in enumerate(self.view.servers):
            load = self.view.load(i)
            breaker = self.health.breakers[i]
            backends[spec.name] = {
                "url": self.config.backends[i].base_url,
                "tier": spec.tier,
                "healthy": load.healthy,
                "circuit": breaker.state(now),
                "running": load.running,
                "queued": load.queued,
                "tokens_in_flight": load.tokens_in_flight,
                "others_in_flight": float(self.view.others_in_flight[i]),
                "kv_cache_use": self.view.kv_cache_use[i],
                "slowdown": float(self.view.slowdown[i]),
                "bandwidth_mbps": float(self.view.bandwidth[i]),
                "energy_j": self._measured(i),
                "answered": self.dispatcher.answered[spec.name],
                "failures": self.dispatcher.failures[spec.name],
            }
        name = self.policy.name
        summary = summarize(
            self.dispatcher.recorder, policy=name, scenario="gateway", weights=self.view.weights
        ).to_json()
        stats: dict[str, Any] = json_ready(
            {
                "policy": name,
                "uptime_s": now - self.started_s,
                "in_flight": self.dispatcher.active,
                "backends": backends,
                "summary": summary,
            }
            | ({"state_store": self.shared.status()} if self.shared else {})
        )
        return stats
