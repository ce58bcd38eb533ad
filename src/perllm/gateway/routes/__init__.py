"""The gateway's HTTP routes, one module per concern; :func:`perllm.gateway.create_app` wires
them. Each handler finds its :class:`~perllm.gateway.gateway.Gateway` as ``app.state.gateway``
(:func:`~perllm.gateway.routes.access.gateway_of`).

- :mod:`~perllm.gateway.routes.completions`: ``POST /v1/chat/completions``, ``/v1/completions``
- :mod:`~perllm.gateway.routes.models`: ``GET /v1/models``
- :mod:`~perllm.gateway.routes.status`: ``GET /health``, ``/metrics``, ``/stats``
- :mod:`~perllm.gateway.routes.admin`: ``GET``/``POST /admin/state``
- :mod:`~perllm.gateway.routes.errors`: HTTP errors as OpenAI-style JSON
"""

from __future__ import annotations

from starlette.routing import Route

from perllm.gateway.routes import admin, completions, models, status
from perllm.gateway.routes.errors import http_error

__all__ = ["ROUTES", "http_error"]

ROUTES: list[Route] = [*completions.ROUTES, *models.ROUTES, *status.ROUTES, *admin.ROUTES]
