"""Dependability: a backend killed mid-run; the run goes on, no request is lost."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import openai
import pytest

from perllm.gateway import create_app
from perllm.gateway.upstream import StreamProgress, relay, sse_error
from perllm.policies.registry import make_policy

MESSAGES: Any = [{"role": "user", "content": "hello"}]
VICTIM = """
import uvicorn
from perllm.emulator.app import create_emulator_app
uvicorn.run(create_emulator_app({profile!r}), host="127.0.0.1", port={port}, log_level="error")
"""


@pytest.fixture
def victim(kit: Any) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """An emulator in a subprocess, so that it can really be killed."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = VICTIM.format(profile=kit.EDGE, port=port)
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            if httpx.get(url + "/health", timeout=1).is_success:
                break
        except httpx.HTTPError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("victim emulator did not start") from None
            time.sleep(0.05)
    yield proc, url
    proc.kill()
    proc.wait()


def _ask(c: openai.OpenAI, i: int) -> tuple[str, str]:
    """One request (streamed if ``i`` is odd); ('ok', text or backend) or ('error', message).

    Any other outcome (an exception of another kind, a hang) fails the test.
    """
    try:
        if i % 2:
            stream = c.chat.completions.create(
                model="m", messages=MESSAGES, max_tokens=32, stream=True
            )
            text = "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)
            return ("ok", text) if text else ("error", "empty stream")
        raw = c.chat.completions.with_raw_response.create(
            model="m", messages=MESSAGES, max_tokens=32
        )
        return "ok", raw.headers["x-perllm-backend"]
    except openai.APIError as err:
        return "error", err.message


def test_killed_backend(serve: Any, kit: Any, victim: Any) -> None:
    proc, victim_url = victim
    first = serve(kit.emulator(kit.EDGE))
    second = serve(kit.emulator(kit.EDGE))
    config = kit.gateway_config(
        [
            kit.backend("a", first.url, kit.EDGE),
            kit.backend("v", victim_url, kit.EDGE),
            kit.backend("b", second.url, kit.EDGE),
        ]
    )
    gateway = serve(create_app(config, make_policy("round-robin")))
    with (
        openai.OpenAI(base_url=gateway.url + "/v1", api_key="-", max_retries=0) as c,
        ThreadPoolExecutor(12) as pool,
    ):
        before = [pool.submit(_ask, c, 2 * i + 1) for i in range(12)]  # all streamed
        deadline = time.monotonic() + 10
        # Wait until the victim is streaming tokens back (its streams are past the first byte).
        while httpx.get(gateway.url + "/stats").json()["backends"]["v"]["tokens_in_flight"] < 12:
            assert time.monotonic() < deadline, "no stream reached the victim"
            time.sleep(0.005)
        proc.kill()
        proc.wait()
        outcomes = [f.result(timeout=30) for f in before]
        after = [f.result(timeout=30) for f in [pool.submit(_ask, c, i) for i in range(18)]]
    # Every request before the kill got an answer or a clear error naming the failure.
    assert len(outcomes) == 12
    for status, detail in outcomes:
        assert status == "ok" or "failed mid-stream" in detail, detail
    assert sum(status == "ok" for status, _ in outcomes) >= 8
    assert any(status == "error" for status, _ in outcomes)
    # Every request after the kill was answered by the survivors.
    assert all(status == "ok" for status, _ in after), after
    assert {d for i, (_, d) in enumerate(after) if i % 2 == 0} <= {"a", "b"}
    stats = httpx.get(gateway.url + "/stats").json()
    assert stats["backends"]["v"]["circuit"] == "open"
    assert stats["summary"]["requests"] == 30


class _BreaksAfterOneChunk(httpx.AsyncByteStream):
    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b'data: {"choices": []}\n\n'
        raise httpx.RemoteProtocolError("peer closed connection without sending complete body")


@pytest.mark.anyio
async def test_mid_stream_failure_is_accounted_before_the_client_hears_of_it() -> None:
    response = httpx.Response(200, stream=_BreaksAfterOneChunk())
    received: list[bytes] = []
    accounted: list[tuple[str, int]] = []  # (outcome, chunks the client held at that moment)
    progress = StreamProgress(
        on_chunk=lambda n: None,
        on_done=lambda p: accounted.append((p.outcome, len(received))),
    )
    chunks = response.aiter_raw()
    first = await chunks.__anext__()
    async for chunk in relay(response, chunks, first, progress, "v"):
        received.append(chunk)
    broke = "RemoteProtocolError: peer closed connection without sending complete body"
    assert received == [first, sse_error(f"backend v failed mid-stream: {broke}")]
    assert accounted == [("failed", 1)]  # once, and before the error event reached the client
    assert response.is_closed
