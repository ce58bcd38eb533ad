"""HTTP errors (an unknown path, a wrong method, an unexpected exception) as OpenAI-style JSON."""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request as HttpRequest
from starlette.responses import Response

from perllm.gateway.intake import error_response

log = logging.getLogger(__name__)


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
