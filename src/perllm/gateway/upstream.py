"""Talking to the backends: open an upstream call, and relay a stream chunk by chunk.

An attempt *fails before the first byte* (and may be retried on another backend) when the
connection cannot be made, a timeout expires, or the backend answers 5xx or closes before any
body byte. Once a streamed body has begun, a failure ends the stream with an SSE error event,
``data: {"error": {...}}`` then ``data: [DONE]``, since the client already holds part of an
answer that a retry elsewhere would not continue. The failure is accounted for (the stream's
``on_done``: circuit breaker, metrics, recorder) before that event is sent, so a client that
hears of it and calls again is scheduled knowing of the failure.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

import httpx

from perllm.domain import Feedback
from perllm.gateway.config import BackendConfig
from perllm.gateway.feedback import count_events
from perllm.gateway.intake import Call

__all__ = ["AttemptFailed", "StreamProgress", "Upstream", "relay", "sse_error"]

log = logging.getLogger(__name__)

PATHS = {"chat": "/v1/chat/completions", "completions": "/v1/completions"}
TAIL_BYTES = 4096


class AttemptFailed(Exception):
    """An upstream attempt failed before its first byte (retryable elsewhere).

    ``feedback`` is filled in by the dispatcher once the attempt has been accounted for.
    """

    feedback: Feedback | None = None


def describe(err: BaseException) -> str:
    """A short human-readable name of an upstream error."""
    text = str(err).strip()
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def sse_error(message: str, code: str = "upstream_error") -> bytes:
    """The SSE events that end a broken stream."""
    body = {"error": {"message": message, "type": "server_error", "code": code}}
    return b"data: " + json.dumps(body).encode() + b"\n\ndata: [DONE]\n\n"


class Upstream:
    """Builds upstream calls for each backend (model name mapping, URLs, credentials)."""

    def __init__(self, backends: list[BackendConfig], clients: Sequence[httpx.AsyncClient]) -> None:
        self.backends = backends
        self.clients = clients
        self._turn = itertools.count()
        self.model_maps = [b.model_map for b in backends]
        self.headers = []
        for backend in backends:
            headers = {"content-type": "application/json", "accept-encoding": "identity"}
            if backend.api_key:
                headers["authorization"] = f"Bearer {backend.api_key}"
            self.headers.append(headers)

    def body_for(self, call: Call, server: int, priority: int = 0) -> bytes:
        """The call's body for ``server``: unchanged unless the model name is mapped or the
        backend takes the policy's queue ``priority`` (``priority-scheduling``)."""
        name = self.model_maps[server][call.model]
        with_priority = self.backends[server].priority_scheduling
        if name == call.model and not with_priority:
            return call.raw
        body = {**call.body, "model": name}
        if with_priority:
            body["priority"] = priority
        return json.dumps(body).encode()

    async def open(self, call: Call, server: int, priority: int = 0) -> httpx.Response:
        """Send the call and return the response once its headers arrived (body unread).

        Raises
        ------
        AttemptFailed
            On a connection error, a timeout, or a 5xx status.
        """
        backend = self.backends[server]
        client = self.clients[next(self._turn) % len(self.clients)]
        request = client.build_request(
            "POST",
            backend.base_url + PATHS[call.kind],
            content=self.body_for(call, server, priority),
            headers={**self.headers[server], "x-perllm-priority": str(priority)},
        )
        try:
            response = await client.send(request, stream=True)
        except httpx.HTTPError as err:
            raise AttemptFailed(f"backend {backend.name}: {describe(err)}") from None
        if response.status_code >= 500:
            await response.aclose()
            raise AttemptFailed(f"backend {backend.name}: HTTP {response.status_code}")
        return response

    async def first_chunk(
        self, response: httpx.Response, server: int
    ) -> tuple[AsyncIterator[bytes], bytes]:
        """The body's iterator and its first non-empty chunk (:class:`AttemptFailed` if none)."""
        chunks = response.aiter_raw()
        name = self.backends[server].name
        try:
            async for chunk in chunks:
                if chunk:
                    return chunks, chunk
        except httpx.HTTPError as err:
            await response.aclose()
            raise AttemptFailed(f"backend {name}: {describe(err)}") from None
        await response.aclose()
        raise AttemptFailed(f"backend {name}: closed the stream before the first byte")

    async def read_all(self, response: httpx.Response, server: int) -> bytes:
        """The whole body (:class:`AttemptFailed` if it breaks)."""
        try:
            return await response.aread()
        except httpx.HTTPError as err:
            raise AttemptFailed(f"backend {self.backends[server].name}: {describe(err)}") from None
        finally:
            await response.aclose()


@dataclass(slots=True)
class StreamProgress:
    """What a relay saw: bytes, events and the stream's tail (for ``usage``), and its outcome.

    ``outcome`` is ``ok``, ``failed`` (the backend broke mid-stream) or ``client-gone``.
    """

    on_chunk: Callable[[int], None]
    on_done: Callable[[StreamProgress], None]
    size_bytes: int = 0
    events: int = 0
    tail: bytes = b""
    outcome: str = "client-gone"
    error: str = ""
    _finished: bool = field(default=False, repr=False)

    def add(self, chunk: bytes) -> None:
        self.size_bytes += len(chunk)
        events = count_events(chunk)
        self.events += events
        self.tail = (self.tail + chunk)[-TAIL_BYTES:]
        if events:
            self.on_chunk(events)

    def finish(self) -> None:
        if not self._finished:
            self._finished = True
            self.on_done(self)


async def relay(
    response: httpx.Response,
    chunks: AsyncIterator[bytes],
    first: bytes,
    progress: StreamProgress,
    backend: str,
) -> AsyncIterator[bytes]:
    """Pass a streamed body through as it arrives; end it with an SSE error if it breaks."""
    try:
        progress.add(first)
        yield first
        async for chunk in chunks:
            progress.add(chunk)
            yield chunk
        progress.outcome = "ok"
    except httpx.HTTPError as err:
        progress.outcome = "failed"
        progress.error = describe(err)
        log.warning("stream from backend %s broke: %s", backend, progress.error)
        await response.aclose()
        progress.finish()  # before the client hears of the failure (and perhaps calls again)
        yield sse_error(f"backend {backend} failed mid-stream: {progress.error}")
    finally:
        await response.aclose()
        progress.finish()
