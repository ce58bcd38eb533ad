"""Abuse limits: per-key concurrency and request rate, and the request body size of every route.

:class:`KeyLimiter` admits a call for a key (the API key, or the client's address when the
gateway has no keys) while the key has fewer than ``concurrency`` calls in flight and a token
in its bucket (``rate-rps`` tokens a second, at most ``burst`` saved up); otherwise the call is
answered ``429`` with a ``retry-after`` header. :class:`BodyLimit` answers ``413`` to any
request whose declared ``content-length`` exceeds ``max-body-bytes`` (a body sent without one
is counted as it is read, see :func:`perllm.gateway.intake.read_body`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from perllm.gateway.config import KeyLimitsConfig
from perllm.gateway.intake import ApiError, body_too_large

__all__ = ["BodyLimit", "KeyLimiter"]

# Idle keys are forgotten once this many are known (bounded memory under many client addresses).
MAX_KEYS = 10_000


@dataclass(slots=True)
class _KeyState:
    in_flight: int = 0
    tokens: float = 0.0
    updated_s: float = 0.0


class KeyLimiter:
    """Per-key concurrency and token-bucket rate limits (no limit where a setting is unset)."""

    def __init__(
        self, settings: KeyLimitsConfig, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.keys: dict[str, _KeyState] = {}

    @property
    def enabled(self) -> bool:
        return self.settings.concurrency is not None or self.settings.rate_rps is not None

    def acquire(self, key: str) -> None:
        """Admit one call for ``key`` (:class:`ApiError` 429 with ``retry-after`` if not)."""
        if not self.enabled:
            return
        now = self.clock()
        state = self.keys.get(key)
        if state is None:
            if len(self.keys) >= MAX_KEYS:
                self._forget_idle()
            state = self.keys[key] = _KeyState(tokens=float(self.settings.burst), updated_s=now)
        limit = self.settings.concurrency
        if limit is not None and state.in_flight >= limit:
            raise ApiError(
                429,
                f"too many concurrent requests for this key (limits.per-key.concurrency {limit})",
                "rate_limited",
                headers={"retry-after": "1"},
            )
        rate = self.settings.rate_rps
        if rate is not None:
            state.tokens = min(
                float(self.settings.burst), state.tokens + (now - state.updated_s) * rate
            )
            state.updated_s = now
            if state.tokens < 1.0:
                wait_s = math.ceil((1.0 - state.tokens) / rate)
                raise ApiError(
                    429,
                    f"too many requests for this key (limits.per-key.rate-rps {rate:g})",
                    "rate_limited",
                    headers={"retry-after": str(max(wait_s, 1))},
                )
            state.tokens -= 1.0
        state.in_flight += 1

    def release(self, key: str) -> None:
        """One call admitted for ``key`` has ended."""
        state = self.keys.get(key)
        if state is not None and state.in_flight > 0:
            state.in_flight -= 1

    def _forget_idle(self) -> None:
        for key in [k for k, s in self.keys.items() if s.in_flight == 0]:
            del self.keys[key]


class BodyLimit:
    """ASGI middleware: ``413`` for a declared body over ``max_bytes``, on every route.

    ``on_refused(refusal)`` is called with the error of each request it answers itself (the
    gateway ends a call with it).
    """

    def __init__(
        self, app: ASGIApp, max_bytes: int, on_refused: Callable[[ApiError], None] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.on_refused = on_refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            declared = dict(scope["headers"]).get(b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
                refusal = body_too_large(self.max_bytes, int(declared))
                if self.on_refused is not None:
                    self.on_refused(refusal)
                await refusal.response()(scope, receive, send)
                return
        await self.app(scope, receive, send)
