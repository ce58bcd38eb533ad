"""``GET /v1/models``: the union of the backends' public model names."""

from __future__ import annotations

from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from perllm.gateway.routes.access import gateway_of, guarded


async def models(request: HttpRequest) -> Response:
    if (denied := guarded(request)) is not None:
        return denied
    names = gateway_of(request).models
    data = [{"id": m, "object": "model", "created": 0, "owned_by": "perllm"} for m in names]
    return JSONResponse({"object": "list", "data": data})


ROUTES = [Route("/v1/models", models, methods=["GET"])]
