"""Clean shutdown: one SIGTERM ends `perllm serve` and `perllm emulate` with exit code 0.

Real processes: an emulator streaming a very long answer, and the gateway in front. The test
waits for the stream's first chunk (an event), then sends one SIGTERM: the stream still open
after the grace period ends with an SSE error event, the process exits 0 (bounded waits only),
and the gateway saves its policy state.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

import perllm

# Real processes stopped (SIGTERM, SIGSTOP) while they serve.
pytestmark = pytest.mark.chaos

HANG_S = 60.0  # a bound against a hang only
PROFILE = "rtx-3090:llama-2-7b:q4"
LONG = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4000, "stream": True}


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(*args: str) -> subprocess.Popen[str]:
    env_path = str(Path(perllm.__file__).parent.parent)
    proc = subprocess.Popen(
        [sys.executable, "-m", "perllm.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"},
    )
    assert proc.stdout is not None
    assert "http://" in proc.stdout.readline()  # printed once it listens
    return proc


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _config(backend_port: int, concurrency: int = 32, **extra: object) -> dict[str, object]:
    """A gateway config with one emulated edge on ``backend_port`` (round-robin)."""
    backend = {
        "name": "b",
        "url": f"http://127.0.0.1:{backend_port}",
        "tier": "edge",
        "models": {"m": "llama-2-7b"},
        "hardware": "rtx-3090",
        "model": "llama-2-7b",
        "dtype": "q4",
        "max-concurrency": concurrency,
    }
    return {"backends": [backend], "policy": {"type": "round-robin"}, **extra}


class OpenStream:
    """A stream opened and read up to its first event; :meth:`finish` reads the rest."""

    def __init__(self, url: str, body: dict[str, object]) -> None:
        self.client = httpx.Client(timeout=HANG_S)
        self.response = self.client.send(
            self.client.build_request("POST", url, json=body), stream=True
        )
        self.lines = self.response.iter_lines()
        self.events = [next(line for line in self.lines if line.startswith("data:"))]

    def finish(self) -> list[str]:
        self.events.extend(line for line in self.lines if line.startswith("data:"))
        self.response.close()
        self.client.close()
        return self.events


def _ends_with_shutdown_error(events: list[str]) -> None:
    assert events[-1] == "data: [DONE]", events[-3:]
    error = json.loads(events[-2].removeprefix("data: "))["error"]
    assert error["code"] == "shutting_down", error


def test_one_sigterm_drains_then_ends_streams_and_exits_0(
    processes: list[subprocess.Popen[str]], tmp_path: Path
) -> None:
    backend_port, gateway_port = _port(), _port()
    emulator = _start(
        "emulate", "--profile", PROFILE, "--port", str(backend_port), "--drain-s", "0.2"
    )
    processes.append(emulator)
    state = tmp_path / "state.json"
    config = _config(backend_port, timeouts={"drain-s": 0.2}, **{"state-file": str(state)})
    (tmp_path / "gateway.yaml").write_text(yaml.safe_dump(config))
    gateway = _start(
        "serve", "--config", str(tmp_path / "gateway.yaml"), "--port", str(gateway_port)
    )
    processes.append(gateway)

    # Through the gateway: one SIGTERM, the open stream gets an SSE error, exit code 0.
    url = f"http://127.0.0.1:{gateway_port}/v1/chat/completions"
    stream = OpenStream(url, {**LONG, "model": "m"})
    gateway.send_signal(signal.SIGTERM)
    _ends_with_shutdown_error(stream.finish())
    assert gateway.wait(timeout=HANG_S) == 0
    assert json.loads(state.read_text())["policy"] == "round-robin"

    # The emulator itself, likewise.
    url = f"http://127.0.0.1:{backend_port}/v1/chat/completions"
    stream = OpenStream(url, {**LONG, "model": "llama-2-7b"})
    emulator.send_signal(signal.SIGTERM)
    _ends_with_shutdown_error(stream.finish())
    assert emulator.wait(timeout=HANG_S) == 0


@pytest.mark.parametrize("workers", [1, pytest.param(2, marks=pytest.mark.redis)])
def test_sigterm_under_load_answers_every_call_sent_on_a_kept_alive_connection(
    processes: list[subprocess.Popen[str]], tmp_path: Path, workers: int
) -> None:
    """Closed-loop clients keep calling on kept-alive connections while the gateway (one
    process, or two workers sharing its socket and a real Redis) gets its SIGTERM: each call is
    answered (those sent after the signal with ``connection: close``), and the only failure a
    client sees is a refused connection, once the gateway has stopped listening: nothing sent is
    lost."""
    import asyncio

    from redis_server import RedisServer

    backend_port, gateway_port = _port(), _port()
    processes.append(_start("emulate", "--profile", PROFILE, "--port", str(backend_port)))
    config = _config(backend_port, concurrency=64, timeouts={"drain-s": 10})
    store = RedisServer().start() if workers > 1 else None
    if store is not None:
        config["state-store"] = store.url
    (tmp_path / "gateway.yaml").write_text(yaml.safe_dump(config))
    gateway = _start(
        "serve",
        "--config",
        str(tmp_path / "gateway.yaml"),
        "--port",
        str(gateway_port),
        "--workers",
        str(workers),
    )
    processes.append(gateway)
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    endings: list[str] = []
    told_to_close: list[bool] = []
    enough = asyncio.Event()

    async def caller(client: httpx.AsyncClient) -> None:
        while True:
            try:
                answer = await client.post("/v1/chat/completions", json=body)
            except httpx.ConnectError:
                endings.append("refused")  # nothing was sent: the gateway no longer listens
                return
            except httpx.HTTPError as err:
                endings.append(f"lost: {type(err).__name__}")
                return
            endings.append("answered" if answer.status_code == 200 else answer.text)
            told_to_close.append(answer.headers.get("connection") == "close")
            if len(endings) >= 64:
                enough.set()

    async def load() -> None:
        limits = httpx.Limits(max_connections=16, max_keepalive_connections=16)
        base = f"http://127.0.0.1:{gateway_port}"
        async with httpx.AsyncClient(base_url=base, limits=limits, timeout=HANG_S) as client:
            callers = [asyncio.create_task(caller(client)) for _ in range(16)]
            await asyncio.wait_for(enough.wait(), HANG_S)
            gateway.send_signal(signal.SIGTERM)
            await asyncio.wait_for(asyncio.gather(*callers), HANG_S)

    try:
        asyncio.run(load())
        assert gateway.wait(timeout=HANG_S) == 0
    finally:
        if store is not None:
            store.stop()
    failures = [e for e in endings if e not in ("answered", "refused")]
    assert not failures, failures[:5]
    assert endings.count("refused") == 16  # each caller ends on a refused connection
    assert any(told_to_close)


def test_connections_the_kernel_queued_before_the_sigterm_are_answered(
    processes: list[subprocess.Popen[str]], tmp_path: Path
) -> None:
    """The gateway is frozen (SIGSTOP) while clients connect and send their calls: the kernel
    queues the connections. Then it gets its SIGTERM and resumes: it takes those connections
    before it stops listening, and answers every call on them."""
    backend_port, gateway_port = _port(), _port()
    processes.append(_start("emulate", "--profile", PROFILE, "--port", str(backend_port)))
    config = _config(backend_port, timeouts={"drain-s": 10})
    (tmp_path / "gateway.yaml").write_text(yaml.safe_dump(config))
    gateway = _start(
        "serve", "--config", str(tmp_path / "gateway.yaml"), "--port", str(gateway_port)
    )
    processes.append(gateway)
    body = json.dumps(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    ).encode()
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode()
    url = f"http://127.0.0.1:{gateway_port}/v1/chat/completions"
    assert httpx.post(url, content=body, timeout=HANG_S).status_code == 200  # serving now
    gateway.send_signal(signal.SIGSTOP)
    clients = []
    try:
        for _ in range(8):
            client = socket.create_connection(("127.0.0.1", gateway_port), timeout=HANG_S)
            client.sendall(head + body)  # accepted by the kernel, unseen by the frozen gateway
            clients.append(client)
    finally:
        gateway.send_signal(signal.SIGTERM)
        gateway.send_signal(signal.SIGCONT)
    answers = []
    for client in clients:
        with client:
            received = b""
            while chunk := client.recv(65536):  # each answer says connection: close
                received += chunk
            answers.append(received)
    assert gateway.wait(timeout=HANG_S) == 0
    for received in answers:
        assert received.startswith(b"HTTP/1.1 200"), received[:200]
        assert b"connection: close" in received.lower()
