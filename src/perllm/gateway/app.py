"""The gateway's ASGI app, built by :func:`create_app` (no module-level app, no singletons).

Endpoints:

- ``POST /v1/chat/completions``, ``POST /v1/completions``: scheduled and forwarded (streamed
  or not); answers carry ``x-perllm-backend``, ``x-perllm-estimate-ms`` and
  ``x-perllm-request-id``;
- ``GET /v1/models``: the union of the backends' public model names;
- ``GET /health``: the gateway's own health (``503`` when no backend is healthy; status
  ``degraded-state-store`` while a configured ``state-store`` cannot be reached);
- ``GET /metrics``: Prometheus exposition (:mod:`perllm.gateway.metrics`);
- ``GET /stats``: per-backend load, health and counts, and the recorder's summary;
- ``GET /admin/state`` (the policy's learned state) and ``POST /admin/state`` (save it now).

When ``api-keys`` are set, ``/v1/*``, ``/stats`` and ``/admin/*`` (and ``/metrics`` with
``metrics-auth``) need ``Authorization: Bearer KEY`` (``401`` otherwise); keys are compared in
constant time. Every error is an OpenAI-style JSON body. Each completion call gets a request id
(its ``x-request-id`` when valid, else a generated one), sent upstream and echoed back in
``x-request-id``, and ends in exactly one outcome, counted and logged
(:mod:`perllm.gateway.outcome`); per-key limits answer ``429`` (:mod:`perllm.gateway.limits`).
On start the policy's state is restored from ``state-file`` and health checks begin; on
shutdown in-flight calls are drained (up to ``timeouts.drain-s``) and the state is saved.
With a ``state-store``, replicas share the policy's statistics and their load through it
(:mod:`perllm.gateway.shared_state`).
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import certifi
import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from perllm.gateway.config import GatewayConfig
from perllm.gateway.dispatch import Dispatcher, RelayResponse
from perllm.gateway.health import CircuitBreaker, HealthChecker
from perllm.gateway.intake import ApiError, Kind, error_response, parse_call, read_body
from perllm.gateway.limits import BodyLimit, KeyLimiter
from perllm.gateway.metrics import CONTENT_TYPE_LATEST, GatewayMetrics
from perllm.gateway.outcome import REQUEST_ID_HEADER, Outcome, Ticket, request_id
from perllm.gateway.shared_state import SharedState
from perllm.gateway.state import json_ready, load_state, save_state
from perllm.gateway.upstream import Upstream, describe
from perllm.gateway.view import LiveView
from perllm.gateway.watch import Abandoned, watched
from perllm.metrics.summary import summarize
from perllm.policies.base import Policy

__all__ = ["STOP_GRACE_S", "Gateway", "create_app", "make_clients"]

# Connections per upstream client: httpcore scans its whole pool on every request, so large
# pools are split into shards of this size (requests are spread over them in turn).
POOL_SHARD_CONNECTIONS = 32

# How long calls ended at shutdown may take to send their last event.
STOP_GRACE_S = 5.0

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


@dataclass(slots=True)
class Gateway:
    """Everything one app owns (reachable as ``app.state.gateway``)."""

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
    shared: SharedState | None = None

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

    async def shutdown(self) -> None:
        """On the first stop signal: let calls in flight finish within ``timeouts.drain-s``,
        then end the rest (streams with an SSE error event, others with a ``503``)."""
        if await self.dispatcher.drain(self.config.timeouts.drain_s):
            return
        log.warning(
            "shutdown: ending %d calls still in flight after %g s",
            self.dispatcher.active,
            self.config.timeouts.drain_s,
        )
        self.dispatcher.stop_all("the gateway is shutting down")
        await self.dispatcher.drain(STOP_GRACE_S)

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
                "bandwidth_mbps": float(self.view.bandwidth[i]),
                "power_w": self.health.power_w[i],
                "answered": self.dispatcher.answered[spec.name],
                "failures": self.dispatcher.failures[spec.name],
            }
        name = str(getattr(self.policy, "name", type(self.policy).__name__))
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


def _build(config: GatewayConfig, policy: Policy, client: httpx.AsyncClient | None) -> Gateway:
    own = client is None
    clients = [client] if client is not None else make_clients(config)
    breakers = [
        CircuitBreaker(config.health.failure_threshold, config.health.cooldown_s)
        for _ in config.backends
    ]
    view = LiveView(config, breakers)
    health = HealthChecker(config.backends, breakers, config.health, clients[0])
    metrics = GatewayMetrics([b.name for b in config.backends])
    upstream = Upstream(list(config.backends), clients)
    dispatcher = Dispatcher(policy, view, upstream, health, metrics, config.limits.max_records)
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
        SharedState(config, policy, view) if config.state_store else None,
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

    def unauthorized() -> ApiError:
        return ApiError(
            401, "invalid or missing API key (Authorization: Bearer KEY)", "invalid_api_key"
        )

    def guarded(request: HttpRequest) -> JSONResponse | None:
        return None if gw.authorized(request) else unauthorized().response()

    async def complete(request: HttpRequest, kind: Kind) -> Response:
        ticket = Ticket(request_id({}), settings.timeouts.request_s)
        ticket.on_end.append(gw.metrics.ended)
        try:
            ticket.request_id = request_id(request.headers)
            caller = gw.caller(request)
            if caller is None:
                raise unauthorized()
            gw.limiter.acquire(caller)
            ticket.on_end.append(lambda _: gw.limiter.release(caller))
            raw = await read_body(request, settings.limits.max_body_bytes)
            call = parse_call(kind, raw, request.headers, settings, gw.models)
            ticket.limit_s = settings.timeouts.limit_s(call.deadline_s)
            response = await watched(
                gw.dispatcher.dispatch(call, ticket),
                request.receive,
                ticket,
                gw.dispatcher.waiting,
            )
        except ApiError as err:
            gw.metrics.answered("none", err.status)
            ticket.end("error", err.status, err.message)
            response = err.response()
        except Abandoned:
            ticket.end("abandoned", "client-gone", "client went away before the answer")
            response = error_response(499, "client closed the request", "client_gone")
        except Exception as err:
            log.exception("request %s: unexpected error", ticket.request_id)
            gw.metrics.answered("none", 500)
            ticket.end("error", 500, describe(err))
            response = error_response(500, "internal gateway error", "internal_error")
        except BaseException:
            ticket.end("abandoned", "cancelled", "the gateway is stopping")
            raise
        else:
            if not isinstance(response, RelayResponse):  # a stream's relay ends its ticket
                backend = response.headers.get("x-perllm-backend", "none")
                outcome: Outcome = "answered" if response.status_code < 400 else "error"
                ticket.end(outcome, response.status_code, f"backend {backend}")
        response.headers[REQUEST_ID_HEADER] = ticket.request_id
        return response

    async def chat(request: HttpRequest) -> Response:
        return await complete(request, "chat")

    async def completions(request: HttpRequest) -> Response:
        return await complete(request, "completions")

    async def models(request: HttpRequest) -> Response:
        if (denied := guarded(request)) is not None:
            return denied
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "perllm"} for m in gw.models]
        return JSONResponse({"object": "list", "data": data})

    async def health(request: HttpRequest) -> Response:
        healthy = int(gw.view.healthy().sum())
        body: dict[str, Any] = {
            "status": "ok" if healthy else "unavailable",
            "healthy_backends": healthy,
        }
        if gw.shared is not None:
            body["state_store"] = gw.shared.status()
            if healthy and gw.shared.connected is False:
                body["status"] = "degraded-state-store"
        return JSONResponse(body, status_code=200 if healthy else 503)

    async def metrics(request: HttpRequest) -> Response:
        if settings.metrics_auth and (denied := guarded(request)) is not None:
            return denied
        gw.metrics.refresh(list(gw.view.in_flight), list(gw.view.healthy()))
        return Response(gw.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    async def stats(request: HttpRequest) -> Response:
        return guarded(request) or JSONResponse(gw.stats())

    async def admin_state(request: HttpRequest) -> Response:
        if (denied := guarded(request)) is not None:
            return denied
        if request.method == "POST":
            if settings.state_file is None:
                return error_response(400, "no state-file is configured", "no_state_file")
            save_state(policy, settings.state_file)
            return JSONResponse({"saved": settings.state_file})
        return JSONResponse(json_ready(policy.state()))

    async def http_error(request: HttpRequest, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        detail = exc.detail if isinstance(exc, HTTPException) else "internal gateway error"
        if status >= 500:
            log.error("unexpected error on %s", request.url.path, exc_info=exc)
        return error_response(
            status,
            f"{request.method} {request.url.path}: {detail}",
            "not_found" if status == 404 else "http_error",
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if restore_state and settings.state_file is not None:
            load_state(policy, settings.state_file)
        if health_checks:
            gw.health.start()
        if gw.shared is not None:
            gw.shared.start()
        try:
            yield
        finally:
            await gw.shutdown()
            if gw.dispatcher.active:
                log.warning("shutdown: %d calls still in flight", gw.dispatcher.active)
            await gw.health.stop()
            if gw.shared is not None:
                await gw.shared.stop()
            if settings.state_file is not None:
                save_state(policy, settings.state_file)
            if gw.own_client:
                for upstream_client in gw.clients:
                    await upstream_client.aclose()

    routes = [
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/stats", stats, methods=["GET"]),
        Route("/admin/state", admin_state, methods=["GET", "POST"]),
    ]

    def refused() -> None:
        gw.metrics.answered("none", 413)
        gw.metrics.ended("error")

    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[
            Middleware(BodyLimit, max_bytes=settings.limits.max_body_bytes, on_refused=refused)
        ],
        exception_handlers={HTTPException: http_error, Exception: http_error},
    )
    app.state.gateway = gw
    return app
