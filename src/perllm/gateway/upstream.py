"""Talking to the backends: open an upstream call, and relay a stream chunk by chunk (as a
:class:`RelayResponse`).

An attempt *fails before the first byte* (and may be retried on another backend) when the
connection cannot be made, a timeout expires, or the backend answers 5xx or closes before any
body byte. Once a streamed body has begun, a failure ends the stream with an SSE error event,
``data: {"error": {...}}`` then ``data: [DONE]``, since the client already holds part of an
answer that a retry elsewhere would not continue; so does the call's time limit passing. The
failure is accounted for (the stream's ``on_done``: circuit breaker, metrics, recorder) before
that event is sent, so a client that hears of it and calls again is scheduled knowing of the
failure. Whatever ends a relay (the client gone, an unexpected error), its upstream response is
closed and ``on_done`` runs exactly once.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import math
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import anyio
import httpx
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from perllm.domain import Decision
from perllm.gateway.config import BackendConfig
from perllm.gateway.feedback import count_events
from perllm.gateway.intake import Call
from perllm.gateway.shaping import UploadShaper

__all__ = [
    "UPSTREAM_ERRORS",
    "AttemptFailed",
    "RelayResponse",
    "StreamProgress",
    "Upstream",
    "close_quietly",
    "relay",
    "sse_error",
]

log = logging.getLogger(__name__)

PATHS = {"chat": "/v1/chat/completions", "completions": "/v1/completions"}
TAIL_BYTES = 4096
# What a broken upstream can raise while it is read: httpx's errors, a stream closed under the
# reader, and socket errors that escape httpx's mapping.
UPSTREAM_ERRORS = (httpx.HTTPError, httpx.StreamError, OSError)


class AttemptFailed(Exception):
    """An upstream attempt failed before its first byte (retryable elsewhere)."""


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

    def __init__(
        self,
        backends: list[BackendConfig],
        clients: Sequence[httpx.AsyncClient],
        shapers: Sequence[UploadShaper | None] = (),
    ) -> None:
        self.backends = backends
        self.clients = clients
        self.shapers = list(shapers) or [None] * len(backends)
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

    async def open(
        self, call: Call, server: int, decision: Decision, request_id: str = ""
    ) -> httpx.Response:
        """Send the call as ``decision`` says (the backend's queue ``priority``; its link
        ``share``, which paces the upload where the link is shaped) and return the response once
        its headers arrived (body unread).

        Raises
        ------
        AttemptFailed
            On a connection error, a timeout, or a 5xx status.
        """
        backend = self.backends[server]
        client = self.clients[next(self._turn) % len(self.clients)]
        body = self.body_for(call, server, decision.priority)
        shaper = self.shapers[server]
        paced = shaper.paced(body, decision.share) if shaper is not None else None
        request = client.build_request(
            "POST",
            backend.base_url + PATHS[call.kind],
            content=body if paced is None else paced,
            headers={
                **self.headers[server],
                "content-length": str(len(body)),
                "x-perllm-priority": str(decision.priority),
                "x-perllm-share": f"{decision.share:.6g}",
                **({"x-request-id": request_id} if request_id else {}),
            },
        )
        try:
            response = await client.send(request, stream=True)
        except UPSTREAM_ERRORS as err:
            raise AttemptFailed(f"backend {backend.name}: {describe(err)}") from None
        finally:
            if paced is not None:
                await paced.aclose()  # the link is free of an upload that did not finish
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
        except UPSTREAM_ERRORS as err:
            await close_quietly(response)
            raise AttemptFailed(f"backend {name}: {describe(err)}") from None
        await response.aclose()
        raise AttemptFailed(f"backend {name}: closed the stream before the first byte")

    async def read_all(self, response: httpx.Response, server: int) -> bytes:
        """The whole body (:class:`AttemptFailed` if it breaks)."""
        try:
            return await response.aread()
        except UPSTREAM_ERRORS as err:
            raise AttemptFailed(f"backend {self.backends[server].name}: {describe(err)}") from None
        finally:
            await close_quietly(response)


@dataclass(eq=False, slots=True)
class StreamProgress:
    """What a relay saw: bytes, events and the stream's tail (for ``usage``), and its outcome.

    ``outcome`` is ``ok``, ``failed`` (the backend broke mid-stream), ``timeout`` (the call's
    time limit passed) or ``client-gone`` (also when the relay never started).
    """

    on_chunk: Callable[[int], None]
    on_done: Callable[[StreamProgress], None]
    rewrite: Callable[[bytes], bytes] | None = None  # what the client gets of each chunk
    size_bytes: int = 0
    events: int = 0
    tail: bytes = b""
    outcome: str = "client-gone"
    error: str = ""
    stopping: str = ""  # why the stream is being ended early (time limit, shutdown)
    stop_code: str = ""
    _reader: asyncio.Task[object] | None = field(default=None, repr=False)
    _interrupted: bool = field(default=False, repr=False)
    _finished: bool = field(default=False, repr=False)

    def stop(self, reason: str, code: str = "shutting_down") -> None:
        """End the stream now with an SSE error saying ``reason`` (a shutdown, the time limit):
        a relay waiting for a chunk is interrupted, one sending a chunk stops after it."""
        if self.stopping:
            return
        self.stopping, self.stop_code = reason, code
        if self._reader is not None:
            self._interrupted = True
            self._reader.cancel()

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


async def close_quietly(response: httpx.Response) -> None:
    """Close an upstream response, even in a task being cancelled, ignoring a broken one."""
    with anyio.CancelScope(shield=True):
        try:
            await response.aclose()
        except UPSTREAM_ERRORS as err:
            log.debug("closing an upstream response: %s", describe(err))


async def relay(
    response: httpx.Response,
    chunks: AsyncIterator[bytes],
    first: bytes,
    progress: StreamProgress,
    backend: str,
    remaining_s: float = float("inf"),
) -> AsyncGenerator[bytes, None]:
    """Pass a streamed body through as it arrives; end it with an SSE error if it breaks or
    outlasts ``remaining_s`` (the rest of the call's time limit)."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    limit = f"the call's time limit of {remaining_s:.3f} s passed"
    # One timer for the whole stream (not one per chunk): it interrupts the wait for a chunk.
    timer = (
        None
        if math.isinf(remaining_s)
        else loop.call_later(remaining_s, progress.stop, limit, "timeout")
    )
    try:
        progress.add(first)
        yield progress.rewrite(first) if progress.rewrite else first
        while not progress.stopping:
            progress._reader = task
            try:
                chunk = await anext(chunks)
            except StopAsyncIteration:
                break
            except asyncio.CancelledError:
                if not progress._interrupted or task is None or task.uncancel() > 0:
                    raise  # cancelled from outside (the client went away)
                break
            finally:
                progress._reader = None
            progress.add(chunk)
            yield progress.rewrite(chunk) if progress.rewrite else chunk
        if progress.stopping:
            raise TimeoutError
        progress.outcome = "ok"
    except TimeoutError:
        progress.outcome = "timeout"
        progress.error = progress.stopping
        await close_quietly(response)
        progress.finish()
        yield sse_error(f"backend {backend}: {progress.error}", progress.stop_code)
    except Exception as err:  # after the headers went out, any failure ends the stream cleanly
        progress.outcome = "failed"
        progress.error = describe(err)
        level = logging.WARNING if isinstance(err, UPSTREAM_ERRORS) else logging.ERROR
        log.log(level, "stream from backend %s broke: %s", backend, progress.error)
        await close_quietly(response)
        progress.finish()  # before the client hears of the failure (and perhaps calls again)
        yield sse_error(f"backend {backend} failed mid-stream: {progress.error}")
    finally:
        if timer is not None:
            timer.cancel()
        progress.finish()
        await close_quietly(response)


class RelayResponse(StreamingResponse):
    """A streaming response that always ends its relay (closes the upstream response and
    accounts for the stream) when it is done, even if the client went away or the response
    was never sent: call :meth:`close` for one that will not be sent."""

    def __init__(
        self,
        content: AsyncGenerator[bytes, None],
        cleanup: Callable[[], Awaitable[None]],
        headers: dict[str, str],
    ) -> None:
        super().__init__(content, headers=headers, media_type="text/event-stream")
        self._relay = content
        self._cleanup = cleanup

    async def close(self) -> None:
        try:
            await self._relay.aclose()
        finally:
            await self._cleanup()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.close()
