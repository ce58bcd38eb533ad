"""Mixed real/emulated testbed: CS-UCB against round-robin on the same request sequence.

Backends behind one perllm gateway:

- ``edge-0``, ``edge-1``: two real llama.cpp nodes (Gemma 3 270M Q4_K_M, 1 CPU thread each);
- ``cloud``: ``perllm emulate`` of an A100 80 GB serving Llama-2-13B fp16, with a simulated
  WAN round trip (``--rtt-ms``, default 80 ms) on every call.

The same Poisson request sequence (mixed prompt and output lengths, two service classes with
different deadlines) is replayed once per policy, each with a fresh gateway. Printed side by
side: deadline satisfaction (client-measured, arrival to last byte), throughput, the share
sent to the cloud, and the gateway's energy estimate (its power models; the llama.cpp nodes'
CPU energy is RAPL-measured where readable, else marked estimated).

Run: ``.venv/bin/python benchmarks/mixed_testbed.py [--requests 120] [--rate 2.5]``.
Needs ``perllm[llamacpp]`` (``scripts/build_llama_wheel.sh``) and ``perllm emulate``.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from contextlib import ExitStack
from typing import Any

import httpx
import numpy as np
from rich.console import Console
from rich.table import Table

from perllm.node import LlamaCppNode
from perllm.node.gateway import PUBLIC_MODEL, GatewayThread, emulated_backend, llama_backend
from perllm.node.llamacpp import NodeError, free_port
from perllm.perf.energy import RaplMeter
from perllm.profiling.client import make_prompt

CLOUD_PROFILE = "a100-80gb:llama-2-13b:fp16"
CLASSES = {
    "interactive": {"deadline-ms": 4000.0, "output-tokens": 24},
    "standard": {"deadline-ms": 12000.0, "output-tokens": 48},
}
POLICIES = ("cs-ucb", "round-robin")


_EMULATE_SNIPPET = (
    "import sys; from perllm.cli import _Parser; from perllm.gateway.cli import "
    "add_gateway_commands; p = _Parser(); s = p.add_subparsers(dest='c', required=True, "
    "parser_class=_Parser); add_gateway_commands(s); a = p.parse_args(sys.argv[1:]); "
    "sys.exit(a.func(a))"
)


def _perllm_commands() -> set[str]:
    from perllm.cli import build_parser

    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return set(action.choices)
    return set()


class Emulator:
    """``perllm emulate`` as a child process (stopped on exit)."""

    def __init__(self, profile: str, rtt_ms: float) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        flags = ["emulate", "--profile", profile, "--port", str(self.port), "--rtt-ms", str(rtt_ms)]
        command = [sys.executable, "-m", "perllm.cli", *flags]
        if "emulate" not in _perllm_commands():
            # `perllm emulate` not wired into perllm.cli yet: run its subcommand module directly.
            command = [sys.executable, "-c", _EMULATE_SNIPPET, *flags]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 30.0
        with httpx.Client(timeout=1.0) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise NodeError(f"perllm emulate exited with {self.process.returncode}")
                try:
                    if client.get(self.url + "/v1/models").status_code == 200:
                        return
                except httpx.TransportError:
                    time.sleep(0.2)
        self.stop()
        raise NodeError("perllm emulate did not answer within 30 s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10.0)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def workload(n: int, rate: float, seed: int) -> list[tuple[float, str, int, str]]:
    """``(arrival_s, prompt, max_tokens, class)`` calls, the same for every policy."""
    rng = np.random.default_rng(seed)
    arrivals = np.cumsum(rng.exponential(1.0 / rate, size=n))
    calls = []
    for arrival in arrivals:
        name = "interactive" if rng.random() < 0.5 else "standard"
        tokens = int(rng.integers(8, 25) if name == "interactive" else rng.integers(24, 49))
        calls.append((float(arrival), make_prompt(rng, int(rng.integers(8, 300))), tokens, name))
    return calls


async def replay(url: str, calls: list[tuple[float, str, int, str]]) -> list[dict[str, Any]]:
    """Send the calls on schedule through the gateway; time each to its last byte."""
    results: list[dict[str, Any]] = []
    start = time.monotonic() + 0.5
    async with httpx.AsyncClient(timeout=httpx.Timeout(600.0)) as client:

        async def one(arrival_s: float, prompt: str, max_tokens: int, name: str) -> None:
            await asyncio.sleep(max(0.0, start + arrival_s - time.monotonic()))
            body = {"model": PUBLIC_MODEL, "prompt": prompt, "max_tokens": max_tokens}
            response = await client.post(
                f"{url}/v1/completions", json=body, headers={"x-perllm-class": name}
            )
            processing = time.monotonic() - start - arrival_s
            deadline = CLASSES[name]["deadline-ms"] / 1000.0
            results.append({
                "ok": response.status_code == 200, "processing_s": processing,
                "met": response.status_code == 200 and processing <= deadline,
                "backend": response.headers.get("x-perllm-backend", ""),
                "end_s": processing + arrival_s,
            })  # fmt: skip

        await asyncio.gather(*(one(*call) for call in calls))
    return results


def run_policy(policy: str, backends: list[dict[str, Any]], calls: list[Any]) -> dict[str, Any]:
    meter = RaplMeter()
    with GatewayThread(backends, policy=policy, classes=CLASSES) as gateway:
        meter.start()
        results = asyncio.run(replay(gateway.url, calls))
        reading = meter.stop()
        with httpx.Client(timeout=10.0) as client:
            stats = client.get(f"{gateway.url}/stats").json()
    summary = stats["summary"]
    energy = summary.get("energy_j", {})
    span = max(r["end_s"] for r in results) - calls[0][0]
    return {
        "deadline satisfaction": float(np.mean([r["met"] for r in results])),
        "p95 processing (s)": float(np.percentile([r["processing_s"] for r in results], 95)),
        "throughput (req/s)": sum(r["ok"] for r in results) / span,
        "share to cloud": float(np.mean([r["backend"] == "cloud" for r in results])),
        "energy, gateway estimate (J)": float(energy.get("total", float("nan"))),
        "energy per request, estimate (J)": float(summary.get("energy_per_request_j", 0.0)),
        "CPU package energy, RAPL (J)": reading.energy_j,
        "energy figures": reading.source if reading.source != "unavailable" else "estimated",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=120)
    parser.add_argument("--rate", type=float, default=2.5, help="arrivals per second")
    parser.add_argument("--rtt-ms", type=float, default=80.0, help="WAN round trip to the cloud")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    console = Console()
    calls = workload(args.requests, args.rate, args.seed)
    with ExitStack() as stack:
        edges = [stack.enter_context(LlamaCppNode(threads=1)) for _ in range(2)]
        cloud = Emulator(CLOUD_PROFILE, args.rtt_ms)
        stack.callback(cloud.stop)
        backends = [llama_backend(f"edge-{i}", node.url) for i, node in enumerate(edges)]
        backends.append(emulated_backend("cloud", cloud.url, CLOUD_PROFILE, args.rtt_ms))
        rows = {}
        for policy in POLICIES:
            console.print(f"{policy}: replaying {args.requests} requests at {args.rate} req/s ...")
            rows[policy] = run_policy(policy, backends, calls)
    table = Table(
        title=f"mixed testbed: 2 llama.cpp edges + emulated A100 (WAN {args.rtt_ms:g} ms)"
    )
    table.add_column("metric")
    for policy in POLICIES:
        table.add_column(policy, justify="right")
    for key in rows[POLICIES[0]]:
        cells = [rows[p][key] for p in POLICIES]
        table.add_row(key, *(f"{c:.3f}" if isinstance(c, float) else str(c) for c in cells))
    console.print(table)


if __name__ == "__main__":
    main()
