"""``POST /v1/chat/completions`` and ``POST /v1/completions``: scheduled and forwarded.

Each call gets a request id and a :class:`~perllm.gateway.outcome.Ticket` that ends in exactly
one outcome: answered, an error (a ``4xx`` from intake, limits or the backend, or a ``500``),
or abandoned (the client went away, mid-upload or before its answer, or the gateway is
stopping).
"""

from __future__ import annotations

import logging

from starlette.requests import ClientDisconnect
from starlette.requests import Request as HttpRequest
from starlette.responses import Response
from starlette.routing import Route

from perllm.gateway.dispatch import RelayResponse
from perllm.gateway.intake import ApiError, Kind, error_response, parse_call, read_body
from perllm.gateway.outcome import REQUEST_ID_HEADER, Outcome, Ticket, request_id
from perllm.gateway.routes.access import gateway_of, unauthorized
from perllm.gateway.upstream import describe
from perllm.gateway.watch import Abandoned, watched

log = logging.getLogger(__name__)


async def complete(request: HttpRequest, kind: Kind) -> Response:
    gw = gateway_of(request)
    settings = gw.config
    ticket = Ticket(request_id({}), settings.timeouts.request_s)
    ticket.on_end.append(gw.metrics.ended)
    try:
        ticket.request_id = request_id(request.headers)
        caller = gw.caller(request)
        if caller is None:
            raise unauthorized()
        gw.limiter.acquire(caller)
        ticket.on_end.append(lambda _: gw.limiter.release(caller))
        raw = await read_body(request, settings.limits.max_body_bytes, settings.timeouts.body_s)
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
    except (Abandoned, ClientDisconnect):
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


ROUTES = [
    Route("/v1/chat/completions", chat, methods=["POST"]),
    Route("/v1/completions", completions, methods=["POST"]),
]
