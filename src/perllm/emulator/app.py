"""An OpenAI-compatible emulated LLM server whose timing comes from the perf model.

Built by :func:`create_emulator_app`. The profile is a catalog deployment
``hardware:model:dtype`` (e.g. ``a100-80gb:llama-2-13b:fp16``), or ``instant`` for a server that
answers at once (for measuring overheads). Endpoints: ``POST /v1/chat/completions`` and
``POST /v1/completions`` (streamed or not, with ``usage``; a stream ends with a ``usage`` chunk
when ``stream_options.include_usage`` is set), ``GET /v1/models``, ``GET /health``, and
``GET /metrics`` with vLLM's load gauges (``vllm:num_requests_running``,
``vllm:num_requests_waiting``, ``vllm:kv_cache_usage_perc``) and DCGM's power gauge and energy
counter (``DCGM_FI_DEV_POWER_USAGE``, ``DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION``), all read from
its engine at each scrape: see :mod:`perllm.emulator.metrics`.

A catalog deployment keeps a prefix cache the size of its KV cache: a prompt is hashed in blocks
as the gateway hashes it (:func:`perllm.prefix.body_blocks`), the prefill of its longest cached
prefix is skipped, and ``usage.prompt_tokens_details.cached_tokens`` says how many tokens that
was (see :mod:`perllm.emulator.engine`).

Each answer has ``max_tokens`` tokens (default 64) of deterministic filler words. ``rtt_ms``
emulates a network path: each call waits one RTT (times ``time_scale``) before it is queued;
bandwidth is not emulated. On shutdown, streams still unfinished end with an SSE error event
(non-streamed calls with a ``503``): see :meth:`BatchEngine.drain`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive

from perllm.domain import CHARS_PER_TOKEN
from perllm.emulator.engine import ABORTED, BatchEngine, Stream, filler_token
from perllm.emulator.metrics import (
    CONTENT_TYPE,
    EmulatorCollector,
    exposition,
    metrics_registry,
)
from perllm.errors import InputError
from perllm.perf.model import Deployment, deployment
from perllm.prefix import BLOCK_TOKENS, BlockLRU, body_blocks

__all__ = ["INSTANT", "create_emulator_app", "parse_profile"]

INSTANT = "instant"


def parse_profile(profile: str) -> Deployment | None:
    """``hardware:model:dtype`` -> a catalog deployment; ``instant`` -> ``None``."""
    if profile == INSTANT:
        return None
    parts = profile.split(":")
    if len(parts) != 3:
        raise InputError(f"--profile: expected HARDWARE:MODEL:DTYPE or 'instant', got {profile!r}")
    try:
        return deployment(*parts)
    except KeyError as err:
        raise InputError(f"--profile: {err.args[0]}") from None


_ABORTED = {
    "message": "the server is shutting down",
    "type": "server_error",
    "code": "shutting_down",
}


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _hang_up(stream: Stream) -> None:
    """Cancel a stream whose caller went away, and wake its reader."""
    if not stream.cancelled:
        stream.cancelled = True
        stream.tokens.put_nowait(None)


def _error(status: int, message: str, code: str) -> JSONResponse:
    body = {"error": {"message": message, "type": "invalid_request_error", "code": code}}
    return JSONResponse(body, status_code=status)


def _prompt_chars(kind: str, body: dict[str, Any]) -> int:
    """The prompt's length in characters: the chat messages' contents, or the prompt."""
    if kind == "chat":
        messages = body.get("messages")
        if not isinstance(messages, list):
            return 0
        return sum(len(str(m.get("content", ""))) for m in messages if isinstance(m, dict))
    prompt = body.get("prompt", "")
    return len(prompt) if isinstance(prompt, str) else len(json.dumps(prompt))


def _usage(stream: Stream, cached: bool) -> dict[str, Any]:
    """The OpenAI ``usage`` of a finished stream; with a prefix cache, the prompt tokens found
    in it too (``prompt_tokens_details.cached_tokens``, as vLLM reports them)."""
    usage: dict[str, Any] = {
        "prompt_tokens": stream.prompt_tokens,
        "completion_tokens": stream.max_tokens,
        "total_tokens": stream.prompt_tokens + stream.max_tokens,
    }
    if cached:
        usage["prompt_tokens_details"] = {"cached_tokens": stream.cached}
    return usage


class _Emulator:
    def __init__(self, model: str, engine: BatchEngine, rtt_s: float) -> None:
        self.model = model
        self.engine = engine
        self.rtt_s = rtt_s
        self._ids = itertools.count(1)

    def chunk(self, kind: str, rid: str, text: str, finish: str | None, first: bool) -> bytes:
        if kind == "chat":
            delta: dict[str, Any] = {"content": text}
            if first:
                delta["role"] = "assistant"
            choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish}
            obj = "chat.completion.chunk"
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
            obj = "text_completion"
        event = {
            "id": rid,
            "object": obj,
            "created": int(time.time()),
            "model": self.model,
            "choices": [choice],
        }
        return b"data: " + json.dumps(event).encode() + b"\n\n"

    async def stream(
        self, kind: str, rid: str, stream: Stream, with_usage: bool
    ) -> AsyncIterator[bytes]:
        try:
            first = True
            while (index := await stream.tokens.get()) is not None:
                if index == ABORTED:
                    yield self.aborted()
                    return
                finish = "length" if index + 1 >= stream.max_tokens else None
                yield self.chunk(kind, rid, filler_token(index), finish, first)
                first = False
            if with_usage:
                obj = "chat.completion.chunk" if kind == "chat" else "text_completion"
                event = {
                    "id": rid,
                    "object": obj,
                    "created": int(time.time()),
                    "model": self.model,
                    "choices": [],
                    "usage": _usage(stream, self.engine.cache is not None),
                }
                yield b"data: " + json.dumps(event).encode() + b"\n\n"
            yield b"data: [DONE]\n\n"
        finally:
            stream.cancelled = True

    @staticmethod
    def aborted() -> bytes:
        """The SSE events ending a stream cut short by a shutdown."""
        body = {"error": _ABORTED}
        return b"data: " + json.dumps(body).encode() + b"\n\ndata: [DONE]\n\n"

    async def complete(self, request: Request, kind: str) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _error(400, "request body is not valid JSON", "invalid_json")
        if not isinstance(body, dict):
            return _error(400, "request body must be a JSON object", "invalid_json")
        if body.get("model") != self.model:
            return _error(
                404,
                f"model {body.get('model')!r} not found; serving {self.model!r}",
                "model_not_found",
            )
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens") or 64
        if not isinstance(max_tokens, int) or max_tokens < 1:
            return _error(400, "'max_tokens' must be a positive integer", "bad_max_tokens")
        priority = body.get("priority", 0)
        if not isinstance(priority, int) or isinstance(priority, bool):
            return _error(400, "'priority' must be an integer", "bad_priority")
        prompt_tokens = max(1, math.ceil(_prompt_chars(kind, body) / CHARS_PER_TOKEN))
        blocks = body_blocks(body, kind == "chat") if self.engine.cache is not None else ()
        if self.rtt_s > 0:
            await asyncio.sleep(self.rtt_s * self.engine.time_scale)
        stream = self.engine.submit(prompt_tokens, max_tokens, priority, blocks)
        rid = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-emu-{next(self._ids)}"
        if body.get("stream"):
            options = body.get("stream_options") or {}
            with_usage = isinstance(options, dict) and bool(options.get("include_usage"))
            return StreamingResponse(
                self.stream(kind, rid, stream, with_usage), media_type="text/event-stream"
            )
        words: list[str] = []
        # The caller may hang up while it waits (a gateway cancelling it): the stream is then
        # cancelled at once, as vLLM aborts a request whose client went away.
        gone = asyncio.create_task(_until_disconnect(request.receive))
        gone.add_done_callback(lambda _: _hang_up(stream))
        try:
            while (index := await stream.tokens.get()) is not None:
                if index == ABORTED:
                    return JSONResponse({"error": _ABORTED}, status_code=503)
                words.append(filler_token(index))
        finally:
            gone.cancel()
            stream.cancelled = True
        if gone.done() and not gone.cancelled() and gone.exception() is None:
            return Response(status_code=499)  # nobody is listening
        text = "".join(words)
        if kind == "chat":
            choice: dict[str, Any] = {
                "index": 0,
                "finish_reason": "length",
                "message": {"role": "assistant", "content": text},
            }
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": "length"}
        return JSONResponse(
            {
                "id": rid,
                "object": "chat.completion" if kind == "chat" else "text_completion",
                "created": int(time.time()),
                "model": self.model,
                "choices": [choice],
                "usage": _usage(stream, self.engine.cache is not None),
            }
        )


def create_emulator_app(
    profile: str,
    *,
    model: str | None = None,
    time_scale: float = 1.0,
    max_batch: int = 32,
    rtt_ms: float = 0.0,
) -> Starlette:
    """Build an emulated OpenAI-compatible LLM server.

    Parameters
    ----------
    profile
        ``hardware:model:dtype`` from the perf catalog, or ``instant``.
    model
        The model name it serves (default: the profile's model name, or ``instant``).
    time_scale
        Multiplier of every duration (``0`` answers without waiting).
    max_batch
        Most requests decoded together.
    rtt_ms
        Network round trip added before each call is queued (scaled by ``time_scale``).

    Raises
    ------
    InputError
        If the profile is unknown or a number is out of range.
    """
    dep = parse_profile(profile)
    if time_scale < 0 or not math.isfinite(time_scale):
        raise InputError(f"--time-scale: must be a number >= 0, got {time_scale}")
    if max_batch < 1:
        raise InputError(f"--max-batch: must be >= 1, got {max_batch}")
    if rtt_ms < 0:
        raise InputError(f"--rtt-ms: must be >= 0, got {rtt_ms}")
    name = model or (dep.model.name if dep is not None else INSTANT)
    engine = BatchEngine(
        dep.perf() if dep is not None else None,
        max_batch,
        time_scale,
        power=dep.power() if dep is not None else None,
        cache=BlockLRU(dep.kv_capacity_tokens() // BLOCK_TOKENS) if dep is not None else None,
    )
    emu = _Emulator(name, engine, rtt_ms / 1000.0)
    registry = metrics_registry(
        EmulatorCollector(
            engine,
            name,
            dep.kv_capacity_tokens() if dep is not None else None,
            dep.hardware.name if dep is not None else INSTANT,
        )
    )

    async def chat(request: Request) -> Response:
        return await emu.complete(request, "chat")

    async def completions(request: Request) -> Response:
        return await emu.complete(request, "completions")

    async def models(request: Request) -> Response:
        data = [{"id": name, "object": "model", "created": 0, "owned_by": "perllm-emulator"}]
        return JSONResponse({"object": "list", "data": data})

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "batch": engine.batch})

    async def metrics(request: Request) -> Response:
        return Response(exposition(registry), headers={"content-type": CONTENT_TYPE})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        engine.abort_all()
        await engine.stop()

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/completions", completions, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.engine = engine  # `perllm emulate` drains it on SIGTERM
    return app
