"""Latency the gateway adds, and the request rate it sustains, against instant backends.

Run: ``python benchmarks/gateway_overhead.py [--requests N] [--policy NAME]``.

An emulator with the ``instant`` profile (it answers at once: 16 streamed tokens) runs in one
subprocess and the gateway in front of it in another; this process is the client (httpx, one
connection per concurrent stream). For each concurrency level, the same client sends streamed
chat completions in a closed loop, first straight to the emulator, then through the gateway,
in the same run. Latency is the time to the last byte of each answer; *added* latency is the
gateway's percentile minus the direct one. The last table gives each level's throughput through
the gateway and its errors; the highest rate sustained is the best throughput with no error.
All processes share this machine's cores, so the figures include the client's own cost.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import time
from typing import Any

import httpx
import numpy as np
from machine import header
from rich.console import Console
from rich.table import Table

EMULATOR = """
import uvicorn
from perllm.emulator.app import create_emulator_app
uvicorn.run(create_emulator_app("instant", model="m"), host="127.0.0.1", port={port},
            log_level="error", access_log=False, backlog=4096)
"""
GATEWAY = """
import uvicorn
from perllm.gateway import create_app, parse_config
from perllm.policies.registry import make_policy
config = parse_config({{
    "backends": [{{"name": "b", "url": "http://127.0.0.1:{backend}", "tier": "cloud",
                  "models": ["m"], "hardware": "a100-80gb", "model": "llama-2-13b",
                  "max-concurrency": 256}}],
    "policy": {{"type": "{policy}"}},
}}, "benchmark")
app = create_app(config, make_policy("{policy}"))
uvicorn.run(app, host="127.0.0.1", port={port}, log_level="error", access_log=False,
            backlog=4096)
"""
BODY = {
    "model": "m",
    "max_tokens": 16,
    "stream": True,
    "messages": [{"role": "user", "content": "How fast is the gateway?"}],
}
LEVELS = (1, 32, 256)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _start(code: str, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
            return proc
        except httpx.HTTPError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise SystemExit(f"server on port {port} did not start") from None
            time.sleep(0.1)


async def _load(url: str, concurrency: int, requests: int) -> tuple[np.ndarray, int, float]:
    """Closed loop: (latencies in seconds, errors, requests per second).

    Workers share clients of at most 16 connections each (httpcore scans a client's whole
    pool on every request, which would make the client itself the bottleneck).
    """
    per_client = min(concurrency, 16)
    limits = httpx.Limits(max_connections=per_client, max_keepalive_connections=per_client)
    latencies: list[float] = []
    errors = 0
    remaining = requests

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal remaining, errors
        while remaining > 0:
            remaining -= 1
            start = time.perf_counter()
            try:
                async with client.stream("POST", url, json=BODY) as response:
                    async for _ in response.aiter_raw():
                        pass
                    ok = response.status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                latencies.append(time.perf_counter() - start)
            else:
                errors += 1

    clients = [
        httpx.AsyncClient(limits=limits, timeout=60) for _ in range(-(-concurrency // per_client))
    ]
    try:
        await asyncio.gather(*(worker(c) for c in clients))  # warm up
        remaining = requests
        latencies.clear()
        errors = 0
        began = time.perf_counter()
        await asyncio.gather(*(worker(clients[i % len(clients)]) for i in range(concurrency)))
        elapsed = time.perf_counter() - began
    finally:
        for client in clients:
            await client.aclose()
    return np.array(latencies), errors, requests / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=2000, help="requests per level and path")
    parser.add_argument("--policy", default="cs-ucb")
    args = parser.parse_args()
    backend_port, gateway_port = _free_port(), _free_port()
    emulator = _start(EMULATOR.format(port=backend_port), backend_port)
    gateway = _start(
        GATEWAY.format(backend=backend_port, port=gateway_port, policy=args.policy), gateway_port
    )
    rows: list[dict[str, Any]] = []
    try:
        for level in LEVELS:
            n = max(args.requests, level * 4)
            direct = asyncio.run(
                _load(f"http://127.0.0.1:{backend_port}/v1/chat/completions", level, n)
            )
            through = asyncio.run(
                _load(f"http://127.0.0.1:{gateway_port}/v1/chat/completions", level, n)
            )
            rows.append({"level": level, "direct": direct, "gateway": through})
    finally:
        for proc in (gateway, emulator):
            proc.terminate()
            proc.wait()
    _report(rows, args.policy)


def _ms(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q) * 1000.0) if values.size else float("nan")


def _report(rows: list[dict[str, Any]], policy: str) -> None:
    table = Table(title=f"gateway overhead ({policy}, instant backend, 16-token streams)")
    for column in (
        "streams",
        "direct p50 ms",
        "gateway p50 ms",
        "added p50 ms",
        "direct p99 ms",
        "gateway p99 ms",
        "added p99 ms",
        "gateway req/s",
        "vs direct req/s",
        "errors",
    ):
        table.add_column(column, justify="right")
    best = 0.0
    for row in rows:
        d_lat, d_err, d_rate = row["direct"]
        g_lat, g_err, g_rate = row["gateway"]
        d50, g50, d99, g99 = _ms(d_lat, 50), _ms(g_lat, 50), _ms(d_lat, 99), _ms(g_lat, 99)
        if g_err == 0 and d_err == 0:
            best = max(best, g_rate)
        table.add_row(
            str(row["level"]),
            f"{d50:.2f}",
            f"{g50:.2f}",
            f"{g50 - d50:.2f}",
            f"{d99:.2f}",
            f"{g99:.2f}",
            f"{g99 - d99:.2f}",
            f"{g_rate:.0f}",
            f"{g_rate / d_rate:.2f}x",
            str(g_err + d_err),
        )
    console = Console(width=170)
    console.print(header()[0])
    console.print(table)
    console.print(f"highest rate sustained without errors: {best:.0f} requests/s")


if __name__ == "__main__":
    main()
