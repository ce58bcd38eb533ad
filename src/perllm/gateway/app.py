"""The gateway's ASGI app, built by :func:`create_app` (no module-level app, no singletons).

Endpoints:

- ``POST /v1/chat/completions``, ``POST /v1/completions``: scheduled and forwarded (streamed
  or not); answers carry ``x-perllm-backend``, ``x-perllm-estimate-ms`` and
  ``x-perllm-request-id``;
- ``GET /v1/models``: the union of the backends' public model names;
- ``GET /health``: the gateway's own health (``503`` when no backend is healthy; status
  ``degraded-state-store`` while a configured ``state-store`` cannot be reached; each scraped
  backend's last scrape and problem, :mod:`perllm.gateway.scrape`);
- ``GET /metrics``: Prometheus exposition (:mod:`perllm.gateway.metrics`);
- ``GET /stats``: per-backend load, health and counts, and the recorder's summary;
- ``GET /admin/state`` (the policy's learned state) and ``POST /admin/state`` (save it now).

When ``api-keys`` are set, ``/v1/*``, ``/stats`` and ``/admin/*`` (and ``/metrics`` with
``metrics-auth``) need ``Authorization: Bearer KEY`` (``401`` otherwise); keys are compared in
constant time. Every error is an OpenAI-style JSON body. Each completion call gets a request id
(its ``x-request-id`` when valid, else a generated one), sent upstream and echoed back in
``x-request-id``, and ends in exactly one outcome, counted and logged
(:mod:`perllm.gateway.call`, :mod:`perllm.gateway.outcome`); per-key limits answer ``429``
(:mod:`perllm.gateway.limits`).
On start the policy's state is restored from ``state-file`` and health checks begin; on
shutdown in-flight calls are drained (up to ``timeouts.drain-s``) and the state is saved.
With a ``state-store``, replicas share the policy's statistics and their load through it
(:mod:`perllm.gateway.shared_state`).

The handlers live in :mod:`perllm.gateway.routes`, one module per concern; this module builds
the :class:`~perllm.gateway.gateway.Gateway` that they share (``app.state.gateway``) and wires
them.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

import certifi
import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware

from perllm.gateway.config import GatewayConfig
from perllm.gateway.dispatch import Dispatcher
from perllm.gateway.energy import EnergyAccounts
from perllm.gateway.gateway import Gateway
from perllm.gateway.health import CircuitBreaker, HealthChecker
from perllm.gateway.intake import ApiError
from perllm.gateway.limits import BodyLimit, KeyLimiter
from perllm.gateway.metrics import GatewayMetrics
from perllm.gateway.routes import ROUTES, http_error
from perllm.gateway.scrape import Scraper
from perllm.gateway.shaping import UploadShaper
from perllm.gateway.shared_scrape import SharedScrapes
from perllm.gateway.shared_state import SharedState
from perllm.gateway.state import load_state, save_state
from perllm.gateway.upstream import Upstream
from perllm.gateway.view import LiveView
from perllm.policies.base import Policy

__all__ = ["create_app", "make_clients"]

# Connections per upstream client: httpcore scans its whole pool on every request, so large
# pools are split into shards of this size (requests are spread over them in turn).
POOL_SHARD_CONNECTIONS = 32

log = logging.getLogger(__name__)


def make_clients(config: GatewayConfig) -> list[httpx.AsyncClient]:
    """The upstream clients: timeouts and connection limits from the config, in shards."""
    t = config.timeouts
    total = config.limits.max_upstream_connections
    per_shard = min(total, POOL_SHARD_CONNECTIONS)
    tls = ssl.create_default_context(cafile=certifi.where())  # loaded once, shared by shards
    return [
        httpx.AsyncClient(
            verify=tls,
            timeout=httpx.Timeout(
                connect=t.connect_s, read=t.read_s, write=t.read_s, pool=t.read_s
            ),
            limits=httpx.Limits(max_connections=per_shard, max_keepalive_connections=per_shard),
        )
        for _ in range(max(1, -(-total // per_shard)))
    ]


def _build(config: GatewayConfig, policy: Policy, client: httpx.AsyncClient | None) -> Gateway:
    own = client is None
    clients = [client] if client is not None else make_clients(config)
    breakers = [
        CircuitBreaker(config.health.failure_threshold, config.health.cooldown_s, b.name)
        for b in config.backends
    ]
    shapers = [
        UploadShaper(b.link.bandwidth_mbps) if b.link.shape_uploads else None
        for b in config.backends
    ]
    view = LiveView(config, breakers, shapers)
    health = HealthChecker(config.backends, breakers, config.health, clients[0])
    metrics = GatewayMetrics([b.name for b in config.backends])
    upstream = Upstream(list(config.backends), clients, shapers)
    shared = SharedState(config, policy, view) if config.state_store else None
    scrapes = None
    if shared is not None:
        interval, stale = config.scrape.interval_s, config.scrape.stale_s
        scrapes = SharedScrapes(shared.client, shared.prefix, shared.replica, interval, stale)
    energy = EnergyAccounts(
        [b.name for b in config.backends],
        [b.power_source is not None for b in config.backends],
        metrics.spent,
        view.now(),
    )
    dispatcher = Dispatcher(
        policy, view, upstream, health, metrics, energy, config.limits.max_records
    )
    return Gateway(
        config,
        policy,
        clients,
        own,
        view,
        health,
        metrics,
        dispatcher,
        tuple(config.public_models()),
        time.monotonic(),
        KeyLimiter(config.limits.per_key),
        Scraper(config.backends, view, config.scrape, energy, scrapes),
        shared,
    )


def create_app(
    settings: GatewayConfig,
    policy: Policy,
    client: httpx.AsyncClient | None = None,
    *,
    health_checks: bool = True,
    restore_state: bool = True,
) -> Starlette:
    """Build the gateway app for ``settings`` scheduling with ``policy``.

    Parameters
    ----------
    settings
        The validated gateway config.
    policy
        The scheduling policy (see :func:`perllm.policies.registry.make_policy`).
    client
        The upstream HTTP client; by default clients are made from the config (see
        :func:`make_clients`) and closed on shutdown (a client passed in is left open for its
        owner to close).
    health_checks
        Run periodic health checks while the app is up.
    restore_state
        Restore the policy from ``state-file`` on start (``perllm serve`` does it itself
        beforehand, so that a bad file is reported as one line).

    Returns
    -------
    Starlette
        The ASGI app; its :class:`Gateway` is ``app.state.gateway``.
    """
    gw = _build(settings, policy, client)

    def refused(err: ApiError) -> None:
        gw.open_call().end("error", err.status, err.message)

    app = Starlette(
        routes=ROUTES,
        lifespan=_lifespan(gw, health_checks=health_checks, restore_state=restore_state),
        middleware=[
            Middleware(BodyLimit, max_bytes=settings.limits.max_body_bytes, on_refused=refused)
        ],
        exception_handlers={HTTPException: http_error, Exception: http_error},
    )
    app.state.gateway = gw
    return app


def _lifespan(
    gw: Gateway, *, health_checks: bool, restore_state: bool
) -> Callable[[Starlette], AbstractAsyncContextManager[None]]:
    """Start: restore the policy's state, start health checks and state sharing. Stop: drain
    calls in flight, stop the checks and the sharing, save the state, close own clients."""
    settings, policy = gw.config, gw.policy

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if restore_state and settings.state_file is not None:
            load_state(policy, settings.state_file, len(settings.backends))
        if health_checks:
            gw.health.start()
        gw.scraper.start()
        if gw.shared is not None:
            gw.shared.start()
        try:
            yield
        finally:
            await gw.shutdown()
            if gw.dispatcher.active:
                log.warning("shutdown: %d calls still in flight", gw.dispatcher.active)
            await gw.health.stop()
            await gw.scraper.stop()
            if gw.shared is not None:
                await gw.shared.stop()
            if settings.state_file is not None:
                save_state(policy, settings.state_file)
            if gw.own_client:
                for upstream_client in gw.clients:
                    await upstream_client.aclose()

    return lifespan
