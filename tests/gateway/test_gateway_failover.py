"""Dependability: a backend killed mid-run; the run goes on, no request is lost.

Deterministic by construction, whatever the machine's load: nothing here waits on the clock for
something an event can signal. The victim is an emulator in a subprocess that sends the first
chunk of each stream and then holds the stream open until it is killed; it says on its stdout
when it is ready and each time it holds one more stream, and the test blocks on those lines.
"""

from __future__ import annotations

import queue
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import openai
import pytest

from perllm.gateway import create_app
from perllm.gateway.upstream import StreamProgress, relay, sse_error
from perllm.policies.registry import make_policy

MESSAGES: Any = [{"role": "user", "content": "hello"}]
HELD = 4  # round-robin over three backends sends the victim 4 of the 12 streams
# Only a bound against a hang (the test fails if it is reached); nothing waits for it to pass.
HANG_S = 120.0

VICTIM = """
import asyncio
import socket
import sys

import uvicorn
from perllm.emulator.app import create_emulator_app

app = create_emulator_app({profile!r})
held = 0


def say(line):
    sys.stdout.write(line + "\\n")
    sys.stdout.flush()


async def victim(scope, receive, send):
    if scope["type"] == "lifespan":
        async def send_lifespan(message):
            await send(message)
            if message["type"] == "lifespan.startup.complete":
                say("ready")

        await app(scope, receive, send_lifespan)
        return

    async def send_and_hold(message):
        global held
        await send(message)
        if message["type"] == "http.response.body" and message.get("more_body"):
            held += 1
            say(f"holding {{held}}")
            await asyncio.Event().wait()  # never set: the stream stays open until killed

    await app(scope, receive, send_and_hold)


sock = socket.socket(fileno={fd})
uvicorn.Server(uvicorn.Config(victim, log_level="error", lifespan="on")).run(sockets=[sock])
"""


class Victim:
    """The victim emulator's process, its URL, and the lines it says on its stdout."""

    def __init__(self, proc: subprocess.Popen[str], url: str) -> None:
        self.proc = proc
        self.url = url
        self.lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.strip())
        self.lines.put(None)

    def expect(self, wanted: str) -> None:
        """Block until the victim says ``wanted`` (fails if it exits, or after :data:`HANG_S`)."""
        while True:
            try:
                line = self.lines.get(timeout=HANG_S)
            except queue.Empty:
                raise AssertionError(f"the victim never said {wanted!r}") from None
            if line is None:
                raise AssertionError(f"the victim exited before saying {wanted!r}")
            if line == wanted:
                return

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self._reader.join()  # it ends at the end of the victim's stdout, now closed
        assert self.proc.stdout is not None
        self.proc.stdout.close()


@pytest.fixture
def victim(kit: Any) -> Iterator[Victim]:
    """An emulator in a subprocess, so that it can really be killed.

    Its listening socket is made here and handed over (no free-port race), and it is ready once
    it says so (no polling).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    port = sock.getsockname()[1]
    code = VICTIM.format(profile=kit.EDGE, fd=sock.fileno())
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", code],
            stdout=subprocess.PIPE,
            text=True,
            pass_fds=[sock.fileno()],
        )
    finally:
        sock.close()  # the victim holds the only copy: once it is killed, connections are refused
    victim = Victim(proc, f"http://127.0.0.1:{port}")
    try:
        victim.expect("ready")
        yield victim
    finally:
        victim.kill()


def _ask(
    c: openai.OpenAI, i: int, on_first: Callable[[str], None] | None = None
) -> tuple[str, str]:
    """One request (streamed if ``i`` is odd); ('ok', backend) or ('error', message).

    ``on_first(backend)`` is called once a stream's first chunk has arrived. Any other outcome
    (an exception of another kind, a hang) fails the test.
    """
    try:
        if i % 2:
            stream = c.chat.completions.create(
                model="m", messages=MESSAGES, max_tokens=32, stream=True
            )
            backend = stream.response.headers["x-perllm-backend"]
            text = ""
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    if not text and on_first is not None:
                        on_first(backend)
                    text += chunk.choices[0].delta.content
            return ("ok", backend) if text else ("error", "empty stream")
        raw = c.chat.completions.with_raw_response.create(
            model="m", messages=MESSAGES, max_tokens=32
        )
        return "ok", raw.headers["x-perllm-backend"]
    except openai.APIError as err:
        return "error", err.message


def test_killed_backend(serve: Any, kit: Any, victim: Victim) -> None:
    first = serve(kit.emulator(kit.EDGE))
    second = serve(kit.emulator(kit.EDGE))
    config = kit.gateway_config(
        [
            kit.backend("a", first.url, kit.EDGE),
            kit.backend("v", victim.url, kit.EDGE),
            kit.backend("b", second.url, kit.EDGE),
        ]
    )
    # No periodic health checks: their timeouts would let the machine's load decide where the
    # requests go. The circuit is opened by the request path alone (the streams that break).
    app = create_app(config, make_policy("round-robin"), health_checks=False)
    gateway = serve(app)
    started: queue.Queue[str] = queue.Queue()
    with (
        openai.OpenAI(base_url=gateway.url + "/v1", api_key="-", max_retries=0) as c,
        ThreadPoolExecutor(12) as pool,
    ):
        before = [pool.submit(_ask, c, 2 * i + 1, started.put) for i in range(12)]  # all streamed
        # The victim holds its streams past their first chunk, and their clients have that chunk.
        victim.expect(f"holding {HELD}")
        assert sum(started.get(timeout=HANG_S) == "v" for _ in range(12)) == HELD
        victim.kill()
        outcomes = [f.result(timeout=HANG_S) for f in before]
        # Each failure was accounted for before its client heard of it: the circuit is open now.
        stats = httpx.get(gateway.url + "/stats").json()
        assert stats["backends"]["v"]["circuit"] == "open"
        after = [f.result(timeout=HANG_S) for f in [pool.submit(_ask, c, i) for i in range(18)]]
    # A graceful stop waits for every stream to end: the counts below are final.
    gateway.stop()
    assert not gateway.thread.is_alive()
    # Every request before the kill got an answer, or (those on the victim) a clear error.
    assert len(outcomes) == 12
    for status, detail in outcomes:
        assert status == "ok" or "backend v failed mid-stream" in detail, detail
    assert sorted(d for status, d in outcomes if status == "ok") == ["a"] * 4 + ["b"] * 4
    assert sum(status == "error" for status, _ in outcomes) == HELD
    # Every request after the kill was answered by the survivors.
    assert all(status == "ok" for status, _ in after), after
    assert {d for _, d in after} <= {"a", "b"}
    stats = app.state.gateway.stats()
    assert stats["backends"]["v"]["circuit"] == "open"
    assert stats["backends"]["v"]["failures"] == HELD
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
