"""What every route needs: its gateway, and the API-key check."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse

from perllm.gateway.intake import ApiError

if TYPE_CHECKING:
    from perllm.gateway.gateway import Gateway


def gateway_of(request: HttpRequest) -> Gateway:
    """The :class:`~perllm.gateway.gateway.Gateway` of the app serving ``request``."""
    return cast("Gateway", request.app.state.gateway)


def unauthorized() -> ApiError:
    return ApiError(
        401, "invalid or missing API key (Authorization: Bearer KEY)", "invalid_api_key"
    )


def guarded(request: HttpRequest) -> JSONResponse | None:
    """``None`` for an authorized caller, else the ``401`` answer."""
    return None if gateway_of(request).authorized(request) else unauthorized().response()
