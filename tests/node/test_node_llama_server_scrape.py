"""A real llama.cpp server (``llama-server --metrics``, C++) loaded by a client the gateway
does not see: the gateway's scrape counts that load and its choice moves to the other backend;
its decoding counters give the server's slowdown against its datasheet.

``scripts/build_llama_server.sh`` builds the server once into ``~/.cache/perllm/bin`` (``make
test`` runs it); the model is the Gemma 3 270M GGUF of the llama.cpp node. Without them the
test FAILS with the command to run; set ``PERLLM_SKIP_LLAMACPP=1`` to skip it instead.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from perllm.emulator.app import create_emulator_app
from perllm.gateway import create_app, parse_config
from perllm.node import llamacpp
from perllm.node.gateway import PUBLIC_MODEL, emulated_backend, llama_backend
from perllm.node.llamacpp import NodeError
from perllm.policies.registry import make_policy
from perllm.serving import ServerThread

SKIP = os.environ.get("PERLLM_SKIP_LLAMACPP") == "1"
VERSION = "0.3.36"
SERVER = (
    Path(os.environ.get("PERLLM_BIN_CACHE", Path.home() / ".cache" / "perllm" / "bin"))
    / f"llama-server-{VERSION}"
)
START_S = 120.0  # a bound against a hang only
ALIAS = "gemma"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(what: str, condition: Any, timeout_s: float = START_S) -> None:
    """Poll a condition in another process (no event reaches this one), bounded."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def llama_server() -> Iterator[str]:
    if not SERVER.is_file():
        pytest.fail(
            f"{SERVER} not built: run scripts/build_llama_server.sh, or set PERLLM_SKIP_LLAMACPP=1"
        )
    try:
        model = llamacpp.default_model()
    except NodeError as err:
        pytest.fail(f"{err}; run scripts/build_llama_wheel.sh, or set PERLLM_SKIP_LLAMACPP=1")
    port = _free_port()
    command = [str(SERVER), "-m", str(model), "--alias", ALIAS, "--port", str(port)]
    command += ["--metrics", "-np", "3", "-c", "3072", "-t", "1", "--host", "127.0.0.1"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert proc.poll() is None, "llama-server exited"
        try:
            return httpx.get(url + "/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        _wait("llama-server to load its model", ready)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.llamacpp
@pytest.mark.skipif(SKIP, reason="PERLLM_SKIP_LLAMACPP=1: real llama.cpp server test skipped")
def test_the_gateway_counts_a_real_llama_server_s_load_and_moves_away(llama_server: str) -> None:
    profile = "a100-80gb:llama-2-13b:fp16"
    with ServerThread(create_emulator_app(profile, time_scale=0.01)) as emulator:
        llama = {**llama_backend("llama", llama_server, ALIAS), "engine": "llamacpp"}
        llama["max-concurrency"] = 2
        config = parse_config(
            {
                "backends": [llama, emulated_backend("emu", emulator.url, profile, 0.0)],
                "policy": {"type": "least-loaded"},
                "scrape": {"interval-s": 0.05, "stale-s": 2.0},
                "timeouts": {"drain-s": 1},
            },
            "test",
        )
        app = create_app(config, make_policy("least-loaded"), health_checks=False)
        body = {"messages": [{"role": "user", "content": "Tell me a long story."}]}
        with ServerThread(app) as gateway, httpx.Client(timeout=START_S) as direct:

            def stats() -> dict[str, Any]:
                found: dict[str, Any] = httpx.get(gateway.url + "/stats").json()["backends"]
                return found["llama"]

            def others() -> float:
                return float(stats()["others_in_flight"])

            # Idle, the two backends tie and least-loaded takes the first: the llama server.
            idle = httpx.post(
                gateway.url + "/v1/chat/completions",
                json={**body, "model": PUBLIC_MODEL, "max_tokens": 2},
                timeout=START_S,
            )
            assert idle.headers["x-perllm-backend"] == "llama"
            _wait("the idle llama server scraped", lambda: others() == 0.0)
            long = {**body, "model": ALIAS, "max_tokens": 1500, "stream": True, "seed": 1}
            url = llama_server + "/v1/chat/completions"
            streams = [
                direct.send(direct.build_request("POST", url, json=long), stream=True)
                for _ in range(2)
            ]
            try:
                readers = [stream.iter_lines() for stream in streams]  # kept: the streams stay
                for reader in readers:
                    next(line for line in reader if line.startswith("data:"))
                _wait("the direct streams counted as others' load", lambda: others() == 2.0)
                for _ in range(3):
                    answer = httpx.post(
                        gateway.url + "/v1/chat/completions",
                        json={**body, "model": PUBLIC_MODEL, "max_tokens": 4},
                        timeout=START_S,
                    )
                    assert answer.status_code == 200
                    assert answer.headers["x-perllm-backend"] == "emu"
                # A short request on its third slot ends while the streams still run: its
                # decoding counters grow by the tokens it made, read against the batch the
                # scrape shows, its slowdown against its datasheet.
                short = {**body, "model": ALIAS, "max_tokens": 8, "seed": 1}
                assert direct.post(url, json=short).status_code == 200
                _wait("its decode step measured", lambda: stats()["slowdown"] != 1.0)
                assert 0.0 < stats()["slowdown"] < float("inf"), stats()["slowdown"]
            finally:
                for stream in streams:
                    stream.close()
