"""The policy's queue priority travels to the backends, and an emulated backend honours it."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from perllm.emulator.engine import BatchEngine
from perllm.gateway import create_app
from perllm.perf.model import deployment
from perllm.policies.registry import make_policy

ANSWER = {
    "id": "x",
    "object": "chat.completion",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}


def _capturing_backend(seen: list[tuple[dict[str, Any], dict[str, str]]]) -> Starlette:
    """An OpenAI-shaped backend that records each body and its headers."""

    async def chat(request: Request) -> JSONResponse:
        seen.append((json.loads(await request.body()), dict(request.headers)))
        return JSONResponse(ANSWER)

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/health", health),
        ]
    )


@pytest.mark.parametrize("priority_scheduling", [True, False])
def test_cs_ucb_priority_reaches_the_backend(
    serve: Any, kit: Any, priority_scheduling: bool
) -> None:
    seen: list[tuple[dict[str, Any], dict[str, str]]] = []
    backend = serve(_capturing_backend(seen))
    entry = kit.backend("c", backend.url, kit.CLOUD, **{"priority-scheduling": priority_scheduling})
    gateway = serve(create_app(kit.gateway_config([entry]), make_policy("cs-ucb")))
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
    for deadline_ms in (10_000, 60_000):
        answer = httpx.post(
            gateway.url + "/v1/chat/completions",
            json=body,
            headers={"x-perllm-deadline-ms": str(deadline_ms)},
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
    (tight_body, tight_headers), (lenient_body, lenient_headers) = seen
    tight, lenient = (
        int(tight_headers["x-perllm-priority"]),
        int(lenient_headers["x-perllm-priority"]),
    )
    # Earliest deadline first: the tight request's priority value is the smaller.
    assert 0 < tight < lenient
    if priority_scheduling:
        assert (tight_body["priority"], lenient_body["priority"]) == (tight, lenient)
    else:
        assert "priority" not in tight_body and "priority" not in lenient_body


@pytest.mark.anyio
async def test_the_emulator_serves_its_queue_by_priority() -> None:
    perf = deployment("rtx-3090", "llama-2-7b", "q4").perf()
    engine = BatchEngine(perf, max_batch=1, time_scale=0.0)
    order: list[str] = []

    async def drain(name: str, stream: Any) -> None:
        while await stream.tokens.get() is not None:
            pass
        order.append(name)

    running = engine.submit(10, 3, 0)
    first_token = await running.tokens.get()  # it holds the only batch slot from here on
    assert first_token == 0
    late, urgent = engine.submit(10, 3, 9), engine.submit(10, 3, 1)
    await asyncio.gather(drain("running", running), drain("late", late), drain("urgent", urgent))
    assert order == ["running", "urgent", "late"]
