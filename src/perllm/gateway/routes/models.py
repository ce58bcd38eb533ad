"""``GET /v1/models`` (the union of the backends' public model names) and
``GET /v1/models/{id}`` (one of them, or a ``404``)."""

from __future__ import annotations

from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from perllm.gateway.intake import unknown_model
from perllm.gateway.routes.access import gateway_of, guarded


def _card(name: str) -> dict[str, object]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "perllm"}


async def models(request: HttpRequest) -> Response:
    if (denied := guarded(request)) is not None:
        return denied
    data = [_card(m) for m in gateway_of(request).models]
    return JSONResponse({"object": "list", "data": data})


async def model(request: HttpRequest) -> Response:
    if (denied := guarded(request)) is not None:
        return denied
    name = request.path_params["model"]
    known = gateway_of(request).models
    if name not in known:
        return unknown_model(name, known).response()
    return JSONResponse(_card(name))


ROUTES = [
    Route("/v1/models", models, methods=["GET"]),
    Route("/v1/models/{model:path}", model, methods=["GET"]),
]
