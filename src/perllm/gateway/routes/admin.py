"""``GET /admin/state`` (the policy's learned state) and ``POST /admin/state`` (save it to the
``state-file`` now)."""

from __future__ import annotations

from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from perllm.gateway.intake import error_response
from perllm.gateway.routes.access import gateway_of, guarded
from perllm.gateway.state import json_ready, save_state


async def admin_state(request: HttpRequest) -> Response:
    if (denied := guarded(request)) is not None:
        return denied
    gw = gateway_of(request)
    if request.method == "POST":
        if gw.config.state_file is None:
            return error_response(400, "no state-file is configured", "no_state_file")
        save_state(gw.policy, gw.config.state_file)
        return JSONResponse({"saved": gw.config.state_file})
    return JSONResponse(json_ready(gw.policy.state()))


ROUTES = [Route("/admin/state", admin_state, methods=["GET", "POST"])]
