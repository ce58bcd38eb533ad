"""``POST /v1/chat/completions`` and ``POST /v1/completions``: scheduled and forwarded.

Each call is one :class:`~perllm.gateway.call.CallContext`, opened here, that ends in exactly
one outcome. A backend's answer (plain or streamed) is ended by the dispatcher; every call no
backend answered is ended here: an error (a ``4xx`` from intake or limits, a ``5xx`` when no
backend could answer, a ``500``), or abandoned (the client went away, mid-upload or before its
answer, or the gateway is stopping).
"""

from __future__ import annotations

import logging

from starlette.requests import ClientDisconnect
from starlette.requests import Request as HttpRequest
from starlette.responses import Response
from starlette.routing import Route

from perllm.gateway.intake import ApiError, Kind, error_response, parse_call, read_body
from perllm.gateway.outcome import REQUEST_ID_HEADER, request_id
from perllm.gateway.routes.access import gateway_of, unauthorized
from perllm.gateway.upstream import describe
from perllm.gateway.watch import Abandoned, watched

log = logging.getLogger(__name__)


async def complete(request: HttpRequest, kind: Kind) -> Response:
    gw = gateway_of(request)
    settings = gw.config
    ctx = gw.open_call()
    try:
        ctx.request_id = request_id(request.headers)
        caller = gw.caller(request)
        if caller is None:
            raise unauthorized()
        gw.limiter.acquire(caller)
        ctx.sinks.append(lambda _: gw.limiter.release(caller))
        raw = await read_body(request, settings.limits.max_body_bytes, settings.timeouts.body_s)
        call = ctx.call = parse_call(kind, raw, request.headers, settings, gw.models)
        ctx.limit_s = settings.timeouts.limit_s(call.deadline_s)
        response = await watched(
            gw.dispatcher.dispatch(ctx), request.receive, ctx, gw.dispatcher.waiting
        )
    except ApiError as err:
        ctx.end("error", err.status, err.message)
        response = err.response()
    except (Abandoned, ClientDisconnect):
        detail = "client went away before the answer"
        ctx.end("abandoned", "client-gone", detail, responded=False)
        response = error_response(499, "client closed the request", "client_gone")
    except Exception as err:
        log.exception("request %s: unexpected error", ctx.request_id)
        ctx.end("error", 500, describe(err))
        response = error_response(500, "internal gateway error", "internal_error")
    except BaseException:
        ctx.end("abandoned", "cancelled", "the gateway is stopping", responded=False)
        raise
    response.headers[REQUEST_ID_HEADER] = ctx.request_id
    return response


async def chat(request: HttpRequest) -> Response:
    return await complete(request, "chat")


async def completions(request: HttpRequest) -> Response:
    return await complete(request, "completions")


ROUTES = [
    Route("/v1/chat/completions", chat, methods=["POST"]),
    Route("/v1/completions", completions, methods=["POST"]),
]
