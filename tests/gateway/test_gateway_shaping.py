"""Link shares made real in the gateway: uploads paced by weighted fair sharing."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
from collections.abc import Coroutine
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from perllm.gateway import create_app
from perllm.gateway.health import CircuitBreaker
from perllm.gateway.shaping import CHUNK_BYTES, UploadShaper
from perllm.gateway.view import LiveView
from perllm.policies.registry import make_policy

MBPS = 8.0  # 1 MB/s: a 500 kB upload alone takes 0.5 s


class VirtualTime:
    """A clock and a ``sleep`` for the shaper that run on virtual time: once every task is done
    or asleep, the earliest sleeper wakes and the clock jumps to its time (no wall-clock wait)."""

    def __init__(self) -> None:
        self.now = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._changed: asyncio.Condition | None = None

    def clock(self) -> float:
        return self.now

    async def _notify(self) -> None:
        assert self._changed is not None
        async with self._changed:
            self._changed.notify_all()

    async def wait(self, seconds: float) -> None:
        """The shaper's ``sleep``, on the virtual clock: wakes when the clock reaches it."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + seconds, next(self._seq), future))
        await self._notify()
        await future

    async def run(self, *jobs: Coroutine[Any, Any, None]) -> None:
        self._changed = changed = asyncio.Condition()

        async def job_then_notify(job: Coroutine[Any, Any, None]) -> None:
            try:
                await job
            finally:
                await self._notify()

        tasks = [asyncio.ensure_future(job_then_notify(job)) for job in jobs]

        def settled() -> bool:
            return len(self._sleepers) == sum(not task.done() for task in tasks)

        while not all(task.done() for task in tasks):
            async with changed:
                await changed.wait_for(settled)
            if self._sleepers:
                wake_s, _, future = heapq.heappop(self._sleepers)
                self.now = max(self.now, wake_s)
                future.set_result(None)
        for task in tasks:
            task.result()


def _finish_times(shares: dict[str, float], sizes: dict[str, int]) -> dict[str, float]:
    virtual = VirtualTime()
    shaper = UploadShaper(MBPS, clock=virtual.clock, sleep=virtual.wait)
    done: dict[str, float] = {}

    async def upload(name: str) -> None:
        body = bytes(sizes[name])
        sent = b"".join([chunk async for chunk in shaper.paced(body, shares[name])])
        assert sent == body
        done[name] = virtual.now

    asyncio.run(virtual.run(*(upload(name) for name in shares)))
    assert shaper.active_weight == 0.0
    return done


def test_an_upload_alone_takes_its_bytes_at_the_budget() -> None:
    done = _finish_times({"a": 0.3}, {"a": 500_000})
    assert done["a"] == pytest.approx(0.5, abs=1e-9)


def test_uploads_share_the_budget_by_their_shares() -> None:
    sizes = {"urgent": 500_000, "lenient": 500_000}
    chunk_s = CHUNK_BYTES / 1e6
    equal = _finish_times({"urgent": 1.0, "lenient": 1.0}, sizes)
    assert equal["urgent"] == pytest.approx(1.0, abs=chunk_s)
    assert equal["lenient"] == pytest.approx(1.0, abs=chunk_s)
    weighted = _finish_times({"urgent": 4.0, "lenient": 1.0}, sizes)
    # 4:1: the urgent upload gets 0.8 MB/s and ends at 0.625 s; the lenient one, 125 kB sent
    # by then, has the whole link for the rest and ends when the link has moved both (1 s).
    assert weighted["urgent"] == pytest.approx(0.625, abs=chunk_s)
    assert weighted["lenient"] == pytest.approx(1.0, abs=chunk_s)


def test_an_upload_dropped_half_way_leaves_the_link() -> None:
    virtual = VirtualTime()
    shaper = UploadShaper(MBPS, clock=virtual.clock, sleep=virtual.wait)

    async def drop_after_two_chunks() -> None:
        paced = shaper.paced(bytes(500_000), 0.5)
        await paced.__anext__()
        await paced.__anext__()
        assert shaper.active_weight == 0.5
        await paced.aclose()

    asyncio.run(virtual.run(drop_after_two_chunks()))
    assert shaper.active_weight == 0.0


def test_a_reader_slower_than_its_share_is_not_held_back_by_later_uploads() -> None:
    # "slow" starts while another upload is under way, takes one chunk, then its reader stalls
    # until after the link has served its whole share and a later upload has begun: the rest of
    # it then goes at once, not paced against the later upload's accounting.
    virtual = VirtualTime()
    shaper = UploadShaper(MBPS, clock=virtual.clock, sleep=virtual.wait)
    done: dict[str, float] = {}

    async def upload(name: str, start_s: float, size: int) -> None:
        await virtual.wait(start_s)
        _ = [chunk async for chunk in shaper.paced(bytes(size), 1.0)]
        done[name] = virtual.now

    async def slow_reader() -> None:
        await virtual.wait(0.1)
        paced = shaper.paced(bytes(100_000), 1.0)
        await paced.__anext__()
        await virtual.wait(1.05 - virtual.now)
        resumed = virtual.now
        rest = [chunk async for chunk in paced]
        assert sum(map(len, rest)) == 100_000 - CHUNK_BYTES
        done["slow"] = virtual.now - resumed

    asyncio.run(
        virtual.run(upload("first", 0.0, 300_000), slow_reader(), upload("later", 1.0, 2_000_000))
    )
    assert done["slow"] == 0.0
    assert shaper.active_weight == 0.0


def test_the_view_reports_the_weight_of_the_uploads_in_progress(kit: Any) -> None:
    config = kit.gateway_config(
        [
            kit.backend("a", "http://127.0.0.1:9", link={"shape-uploads": True}),
            kit.backend("b", "http://127.0.0.1:9"),
        ]
    )
    shaper = UploadShaper(100.0, clock=lambda: 0.0)  # time stands still: nothing finishes
    view = LiveView(config, [CircuitBreaker(3, 10.0)] * 2, [shaper, None])
    assert view.load_arrays().link_active_weight.tolist() == [0.0, 0.0]
    shaper.start(10_000_000, 0.25, object())
    assert view.load_arrays().link_active_weight.tolist() == [0.25, 0.0]
    assert view.link_active_weight(view.servers[0].link) == 0.25


def _capturing_backend(seen: list[tuple[bytes, dict[str, str]]]) -> Starlette:
    async def chat(request: Request) -> JSONResponse:
        seen.append((await request.body(), dict(request.headers)))
        return JSONResponse(
            {
                "id": "x",
                "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
        )

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    routes = [Route("/v1/chat/completions", chat, methods=["POST"]), Route("/health", health)]
    return Starlette(routes=routes)


@pytest.mark.parametrize("shape", [True, False])
def test_a_shaped_link_carries_the_body_whole_with_its_share(
    serve: Any, kit: Any, shape: bool
) -> None:
    seen: list[tuple[bytes, dict[str, str]]] = []
    backend = serve(_capturing_backend(seen))
    link = {"bandwidth-mbps": 200, "shape-uploads": shape}
    # A long-context model: the document is about 75,000 tokens.
    entry = kit.backend("c", backend.url, kit.CLOUD, link=link, **{"context-tokens": 131072})
    config = kit.gateway_config([entry], policy={"type": "cs-ucb"})
    app = create_app(config, make_policy("cs-ucb"))
    gateway = serve(app)
    document = "x" * 300_000  # 19 chunks: paced over about 12 ms
    body = {"model": "m", "messages": [{"role": "user", "content": document}], "max_tokens": 8}
    answer = httpx.post(
        gateway.url + "/v1/chat/completions",
        json=body,
        headers={"x-perllm-deadline-ms": "60000"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    ((received, headers),) = seen
    assert json.loads(received)["messages"][0]["content"] == document
    assert int(headers["content-length"]) == len(received)
    # CS-UCB's share by urgency: a minute to spare is far from urgent.
    assert 0.0 < float(headers["x-perllm-share"]) < 0.01
    (shaper,) = app.state.gateway.dispatcher.upstream.shapers
    if shape:  # the body went through the link's accounting, and has left it
        assert shaper.channel.version > 0 and shaper.active_weight == 0.0
    else:
        assert shaper is None


@pytest.mark.parametrize("share", [0.0, -1.0, float("nan"), float("inf")])
def test_a_share_out_of_range_is_clamped_not_a_crash(share: float) -> None:
    virtual = VirtualTime()
    shaper = UploadShaper(MBPS, clock=virtual.clock, sleep=virtual.wait)
    sent: list[bytes] = []

    async def upload() -> None:
        sent.extend([chunk async for chunk in shaper.paced(bytes(50_000), share)])

    asyncio.run(virtual.run(upload()))
    assert sum(map(len, sent)) == 50_000
    assert virtual.now == pytest.approx(0.05, abs=1e-6)  # alone, any weight gets the whole link
    assert shaper.active_weight == 0.0


@pytest.mark.parametrize("tick", [k * 5e-4 for k in range(1, 16)])
def test_time_passing_between_clock_readings_never_asks_for_a_negative_sleep(tick: float) -> None:
    """The wall clock moves between any two readings. A clock that ticks on every reading
    models that; the sleep refuses a negative wait as ``anyio.sleep`` does (CI once failed
    with ``delay must be a non-negative number`` when the wait was read off the clock twice).
    Ticks of 0.5 to 7.5 ms (two readings per wait, under a chunk's 16 ms) cover the phases."""
    now = [0.0]
    waits: list[float] = []

    def ticking_clock() -> float:
        now[0] += tick
        return now[0]

    async def strict_wait(seconds: float) -> None:
        if seconds < 0:
            raise ValueError("delay must be a non-negative number")
        waits.append(seconds)
        now[0] += seconds

    shaper = UploadShaper(MBPS, clock=ticking_clock, sleep=strict_wait)

    async def upload() -> int:
        return sum([len(chunk) async for chunk in shaper.paced(bytes(1_000_000), 1.0)])

    assert asyncio.run(upload()) == 1_000_000
    assert waits and min(waits) > 0.0  # it did wait, never a negative time
