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
    config = {
        "backends": [
            {
                "name": "b",
                "url": f"http://127.0.0.1:{backend_port}",
                "tier": "edge",
                "models": {"m": "llama-2-7b"},
                "hardware": "rtx-3090",
                "model": "llama-2-7b",
                "dtype": "q4",
            }
        ],
        "policy": {"type": "round-robin"},
        "state-file": str(state),
        "timeouts": {"drain-s": 0.2},
    }
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
