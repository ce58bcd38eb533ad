"""The gateway's own status: ``GET /health``, ``GET /metrics`` (Prometheus), ``GET /stats``."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from perllm.gateway.metrics import CONTENT_TYPE_LATEST
from perllm.gateway.routes.access import gateway_of, guarded


async def health(request: HttpRequest) -> Response:
    """``503`` when no backend is healthy; ``degraded-state-store`` while a configured
    ``state-store`` cannot be reached."""
    gw = gateway_of(request)
    healthy = int(gw.view.healthy().sum())
    body: dict[str, Any] = {
        "status": "ok" if healthy else "unavailable",
        "healthy_backends": healthy,
    }
    if gw.scraper.targets:
        body["scrape"] = gw.scraper.status()
    if gw.shared is not None:
        body["state_store"] = gw.shared.status()
        if healthy and gw.shared.connected is False:
            body["status"] = "degraded-state-store"
    return JSONResponse(body, status_code=200 if healthy else 503)


async def metrics(request: HttpRequest) -> Response:
    gw = gateway_of(request)
    if gw.config.metrics_auth and (denied := guarded(request)) is not None:
        return denied
    gw.metrics.refresh(list(gw.view.in_flight), list(gw.view.healthy()))
    return Response(gw.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


async def stats(request: HttpRequest) -> Response:
    return guarded(request) or JSONResponse(gateway_of(request).stats())


ROUTES = [
    Route("/health", health, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/stats", stats, methods=["GET"]),
]
