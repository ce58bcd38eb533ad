"""The emulator: continuous batching timed by the perf model, OpenAI-shaped answers."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import httpx
import pytest
from waiting import wait_for

from perllm.emulator.app import create_emulator_app, parse_profile
from perllm.emulator.engine import ABORTED, BatchEngine, filler_token
from perllm.errors import InputError
from perllm.perf.model import deployment
from perllm.physics import CHARS_PER_TOKEN
from perllm.prefix import BLOCK_TOKENS, BlockLRU

pytestmark = pytest.mark.anyio


async def _drain(stream: Any) -> list[int]:
    tokens = []
    while (token := await stream.tokens.get()) is not None:
        tokens.append(token)
    return tokens


async def test_every_stream_gets_its_tokens_within_max_batch() -> None:
    perf = deployment("rtx-3090", "llama-2-7b", "q4").perf()
    engine = BatchEngine(perf, max_batch=3, time_scale=0.0)
    streams = [engine.submit(10, n) for n in (5, 1, 8, 3, 6)]
    seen_batches: list[int] = []

    async def watch() -> None:
        while any(s.generated < s.max_tokens for s in streams):
            seen_batches.append(engine.batch)
            await asyncio.sleep(0)

    results, _ = await asyncio.gather(asyncio.gather(*map(_drain, streams)), watch())
    assert [len(r) for r in results] == [5, 1, 8, 3, 6]
    assert all(r == list(range(len(r))) for r in results)
    assert max(seen_batches) == 3
    await engine.stop()


async def _ran_out(engine: BatchEngine) -> None:
    """Wait until the engine's loop has run out of work (bounded against a hang only)."""
    task = engine._task
    assert task is not None
    await asyncio.wait_for(asyncio.shield(task), 30.0)


async def test_instant_engine_answers_at_once() -> None:
    engine = BatchEngine(None, max_batch=1)
    stream = engine.submit(10, 4)
    assert stream.tokens.qsize() == 5  # 4 tokens and the end marker
    assert await _drain(stream) == [0, 1, 2, 3]


async def test_cancelled_stream_leaves_the_batch() -> None:
    perf = deployment("rtx-3090", "llama-2-7b", "q4").perf()
    engine = BatchEngine(perf, max_batch=2, time_scale=0.0)
    gone = engine.submit(10, 1000)
    kept = engine.submit(10, 3)
    await asyncio.sleep(0)
    gone.cancelled = True
    assert await _drain(kept) == [0, 1, 2]
    await _ran_out(engine)
    assert engine.batch == 0
    await engine.stop()


async def test_emulator_http_api() -> None:
    app = create_emulator_app("instant", model="tiny")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://emu") as client:
        body = {
            "model": "tiny",
            "messages": [{"role": "user", "content": "abcdefgh"}],
            "max_tokens": 3,
        }
        answer = (await client.post("/v1/chat/completions", json=body)).json()
        assert answer["choices"][0]["message"]["content"] == "".join(map(filler_token, range(3)))
        assert answer["usage"] == {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}
        stream = await client.post(
            "/v1/completions",
            json={
                "model": "tiny",
                "prompt": "x",
                "max_tokens": 2,
                "stream": True,
                "stream_options": {"include_usage": True},
            },
        )
        events = [line[6:] for line in stream.text.splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        assert json.loads(events[-2])["usage"]["completion_tokens"] == 2
        assert [json.loads(e)["choices"][0]["text"] for e in events[:2]] == [
            filler_token(0),
            filler_token(1),
        ]
        wrong = await client.post("/v1/chat/completions", json={**body, "model": "big"})
        assert wrong.status_code == 404 and "big" in wrong.json()["error"]["message"]
        assert (await client.get("/health")).json()["status"] == "ok"
        assert [m["id"] for m in (await client.get("/v1/models")).json()["data"]] == ["tiny"]
        assert "DCGM_FI_DEV_POWER_USAGE" in (await client.get("/metrics")).text


async def test_a_cached_prefix_skips_its_prefill() -> None:
    perf = deployment("a100-80gb", "llama-3.1-8b", "fp16").perf()
    engine = BatchEngine(perf, max_batch=4, time_scale=0.0, cache=BlockLRU(64))
    blocks = (11, 12, 13)
    prompt = 3 * BLOCK_TOKENS + 100
    spent = []
    for shared in (blocks, (*blocks[:2], 99), (7,)):
        before = engine.emulated_s()
        stream = engine.submit(prompt, 1, blocks=shared)
        await _drain(stream)
        spent.append(engine.emulated_s() - before)
        await _ran_out(engine)
    # The first call fills the cache; the second finds its first two blocks there; the third,
    # another prompt, finds none.
    assert [engine.cache.match(b) for b in (blocks, (7,))] == [3, 1]
    assert spent[1] == pytest.approx(perf.prefill_s(prompt - 2 * BLOCK_TOKENS))
    assert spent[0] == spent[2] == pytest.approx(perf.prefill_s(prompt))
    await engine.stop()


async def test_the_emulator_reports_the_cached_prompt_tokens_of_a_conversation() -> None:
    app = create_emulator_app("a100-80gb:llama-3.1-8b:fp16", time_scale=0.0)
    system = {"role": "system", "content": "s" * int(2 * BLOCK_TOKENS * CHARS_PER_TOKEN)}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://emu") as client:

        async def cached(*turns: str) -> int:
            messages = [system] + [{"role": "user", "content": turn} for turn in turns]
            body = {"model": "llama-3.1-8b", "messages": messages, "max_tokens": 2}
            usage = (await client.post("/v1/chat/completions", json=body)).json()["usage"]
            return int(usage["prompt_tokens_details"]["cached_tokens"])

        assert await cached("hello") == 0
        assert await cached("hello", "and then?") == 2 * BLOCK_TOKENS


@pytest.mark.parametrize(
    ("profile", "message"),
    [
        ("a100", "HARDWARE:MODEL:DTYPE"),
        ("tpu:llama-2-7b:fp16", "unknown hardware 'tpu'"),
        ("a100-80gb:gpt-5:fp16", "unknown model"),
        ("a100-80gb:llama-2-7b:fp4", "unknown dtype"),
    ],
)
def test_bad_profiles(profile: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_profile(profile)


def test_a_caller_hanging_up_cancels_its_call(serve: Any, kit: Any) -> None:
    """A non-streamed call whose caller goes away leaves the batch at once (as vLLM aborts
    it), not after its 4000 tokens (about a minute at this time scale)."""
    app = create_emulator_app(kit.EDGE, time_scale=1.0)
    engine = app.state.engine
    server = serve(app)
    body = json.dumps(
        {"model": "llama-2-7b", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4000}
    ).encode()

    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: e\r\ncontent-type: application/json\r\n"
            + f"content-length: {len(body)}\r\n\r\n".encode()
            + body
        )
        wait_for(lambda: engine.batch == 1, "the call in the batch")
    wait_for(lambda: engine.batch == 0 and not engine.waiting, "the batch to empty")


async def test_a_stream_in_prefill_runs_and_is_aborted_on_shutdown() -> None:
    """The stream in prefill counts as running (as vLLM counts it) and holds its prompt's KV
    cache; a shutdown then ends it with the abort mark, and nothing follows that mark."""
    perf = deployment("rtx-3090", "llama-2-7b", "q4").perf()
    release = asyncio.Event()
    entered = asyncio.Event()

    async def held_sleep(seconds: float) -> None:
        entered.set()
        await release.wait()

    engine = BatchEngine(perf, max_batch=2, time_scale=1.0, sleep=held_sleep)
    stream = engine.submit(12, 5)
    queued = engine.submit(7, 5)
    await entered.wait()  # the first prefill has begun
    assert (engine.batch, engine.queued, engine.kv_tokens) == (1, 1, 12)
    engine.abort_all()
    assert (engine.batch, engine.queued, engine.kv_tokens) == (0, 0, 0)
    release.set()
    await _ran_out(engine)  # the engine ends its prefill and finds nothing left to run
    assert await _drain(stream) == [ABORTED]
    assert await _drain(queued) == [ABORTED]
    assert stream.tokens.empty() and queued.tokens.empty() and engine.batch == 0
    await engine.stop()
