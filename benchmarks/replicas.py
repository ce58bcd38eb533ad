"""Gateway replicas: one gateway, two sharing state through Redis, two that share nothing.

Run: ``python benchmarks/replicas.py [--requests 500] [--rate 20] [--seeds 0 1 2]``.
Needs ``redis-server`` on the PATH (``make redis`` installs it).

The ``tiny`` scenario's servers (two RTX 3090 edges, one A100 cloud) are emulated in one
subprocess (``perllm emulate``'s engine, sped up by ``--time-scale``), each gateway replica is a
``perllm serve`` subprocess with CS-UCB, and this process is the client. The same request
sequence (the scenario's classes, prompt and output lengths and deadlines, Poisson arrivals at
``--rate`` in scenario time) is replayed through every setup, request ``i`` going to replica
``i mod R`` (as a round-robin load balancer would). Printed per setup:

- deadline satisfaction: answered with status 200 within the request's deadline (client clock);
- energy per request: the emulated servers' energy over the replay (the growth of each
  emulator's DCGM counter ``DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION`` at ``/metrics``: its power
  model at its running batch, integrated exactly on its emulated clock, idle included) over the
  requests answered;
- each backend's share of the answers, and the answered requests per second (wall clock);
- what became of every request: answered, failed over (the client's replica refused the
  connection, so it went to the next one, as a load balancer does), errors (a clear HTTP error,
  or the connection cut by a dying replica) and hung (no answer within ``--client-timeout-s``).

Two fault runs use two replicas sharing Redis: one replica is killed (SIGKILL) at 40% of the
replay, and, separately, Redis is killed at 30% and restarted (empty) at 70%.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.table import Table

from perllm.cluster import scenario
from perllm.domain import Request
from perllm.gateway.testbed import plan_testbed
from perllm.profiling.client import make_prompt
from perllm.workload.generator import generate_requests

EMULATORS = """
import asyncio, json, sys
import perllm.emulator.app as ea
from perllm.serving import bind, serve_apps

plans, scale = json.loads(sys.argv[1]), float(sys.argv[2])
apps = [
    (ea.create_emulator_app(p["profile"], time_scale=scale, max_batch=p["max_batch"],
                            rtt_ms=p["rtt_ms"]), bind("127.0.0.1", p["port"]))
    for p in plans
]
asyncio.run(serve_apps(apps, log_level="error"))
"""
ENERGY_METRIC = "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_http(url: str, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 60.0
    while True:
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.HTTPError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{what} did not start") from None
            time.sleep(0.1)


def energy_j(urls: list[str]) -> list[float]:
    """Each emulated server's energy so far (J): its DCGM energy counter (mJ) at ``/metrics``."""
    found = []
    for url in urls:
        text = httpx.get(url + "/metrics", timeout=10.0).text
        found.append(
            sum(
                sample.value / 1000.0
                for family in text_string_to_metric_families(text)
                if family.name == ENERGY_METRIC
                for sample in family.samples
            )
        )
    return found


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Redis:
    """A ``redis-server`` subprocess without persistence on a fixed loopback port."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server not found: `make redis` installs it")
        self.binary, self.port = binary, free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        flags = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
        self.proc = subprocess.Popen([self.binary, *flags, "no"], stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10.0
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("redis-server did not start") from None
                time.sleep(0.05)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@dataclass
class Outcome:
    met: list[bool] = field(default_factory=list)
    backends: Counter[str] = field(default_factory=Counter)
    fates: Counter[str] = field(default_factory=Counter)
    first_s: float = float("inf")
    last_s: float = 0.0


@dataclass(frozen=True)
class Setup:
    name: str
    replicas: int
    shared: bool
    fault: str = ""  # "", "replica" or "redis"


SETUPS = (
    Setup("1 replica", 1, False),
    Setup("2 replicas, shared", 2, True),
    Setup("2 replicas, unshared", 2, False),
    Setup("2 shared, one killed", 2, True, "replica"),
    Setup("2 shared, Redis killed", 2, True, "redis"),
)


async def replay(
    urls: list[str],
    requests: list[Request],
    prompts: list[str],
    scale: float,
    timeout_s: float,
    faults: list[tuple[float, Any]],
) -> Outcome:
    out = Outcome()
    start = time.monotonic() + 0.5
    limits = httpx.Limits(max_connections=4096, max_keepalive_connections=512)
    async with httpx.AsyncClient(timeout=httpx.Timeout(timeout_s), limits=limits) as client:

        async def one(i: int, request: Request) -> None:
            routed = request.routed
            await asyncio.sleep(max(0.0, start + routed.arrival_s * scale - time.monotonic()))
            sent = time.monotonic()
            out.first_s = min(out.first_s, sent)
            deadline_s = routed.deadline_s * scale
            headers = {
                "x-perllm-class": routed.service_class,
                "x-perllm-deadline-ms": f"{deadline_s * 1000.0:.3f}",
            }
            body = {"model": "perllm", "prompt": prompts[i], "max_tokens": request.output_tokens}
            for hop in range(len(urls)):
                url = urls[(i + hop) % len(urls)]
                try:
                    response = await client.post(
                        url + "/v1/completions", json=body, headers=headers
                    )
                except httpx.ConnectError:
                    out.fates["failed over"] += hop == 0
                    continue
                except httpx.TimeoutException:
                    out.fates["hung"] += 1
                    out.met.append(False)
                    return
                except httpx.TransportError:
                    out.fates["error: connection cut"] += 1
                    out.met.append(False)
                    return
                done = time.monotonic()
                if response.status_code != 200:
                    code = response.json().get("error", {}).get("code", "?")
                    out.fates[f"error: {response.status_code} {code}"] += 1
                    out.met.append(False)
                    return
                out.fates["answered"] += 1
                out.backends[response.headers.get("x-perllm-backend", "?")] += 1
                out.met.append(done - sent <= deadline_s)
                out.last_s = max(out.last_s, done)
                return
            out.fates["error: no replica reachable"] += 1
            out.met.append(False)

        async def fault(at_s: float, action: Any) -> None:
            await asyncio.sleep(max(0.0, start + at_s - time.monotonic()))
            await asyncio.to_thread(action)

        await asyncio.gather(
            *(one(i, r) for i, r in enumerate(requests)), *(fault(t, a) for t, a in faults)
        )
    return out


def run_setup(
    setup: Setup,
    base_config: dict[str, Any],
    redis: Redis | None,
    db: int,
    backend_urls: list[str],
    requests: list[Request],
    prompts: list[str],
    args: argparse.Namespace,
    workdir: Path,
) -> dict[str, Any]:
    """Replay ``requests`` through ``setup``'s gateways (``perllm serve`` subprocesses with
    ``base_config``, Redis database ``db`` when shared) in front of the emulators at
    ``backend_urls``; what became of them, and the emulators' energy over the replay."""
    config = dict(base_config)
    if setup.shared or setup.fault == "redis":
        assert redis is not None, "a shared setup needs Redis"
    if setup.shared and redis is not None:
        config["state-store"] = redis.url(db)
    path = workdir / f"gateway-{db}.yaml"
    path.write_text(yaml.safe_dump(config))
    ports = [free_port() for _ in range(setup.replicas)]
    procs = []
    for port in ports:
        command = [sys.executable, "-m", "perllm.cli", "serve", "--config", str(path)]
        procs.append(subprocess.Popen([*command, "--port", str(port)], stdout=subprocess.DEVNULL))
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    health: list[str] = []
    try:
        for url, proc in zip(urls, procs, strict=True):
            wait_http(url + "/health", proc, "gateway")
        span = requests[-1].routed.arrival_s * args.time_scale
        faults: list[tuple[float, Any]] = []
        if setup.fault == "replica":
            faults.append((0.4 * span, procs[-1].kill))
        elif setup.fault == "redis" and redis is not None:

            def peek() -> None:
                health.append(httpx.get(urls[0] + "/health", timeout=5.0).json()["status"])

            faults += [(0.3 * span, redis.kill), (0.5 * span, peek), (0.7 * span, redis.start)]
            faults.append((0.9 * span, peek))
        before = energy_j(backend_urls)
        outcome = asyncio.run(
            replay(urls, requests, prompts, args.time_scale, args.client_timeout_s, faults)
        )
        after = energy_j(backend_urls)
    finally:
        for proc in procs:
            stop(proc)
    answered = outcome.fates["answered"]
    lost = len(requests) - sum(outcome.fates.values()) + outcome.fates["failed over"]
    shares = {name: count / max(answered, 1) for name, count in outcome.backends.items()}
    joules = sum(after) - sum(before)
    return {
        "deadline satisfaction": float(np.mean(outcome.met)),
        "met": int(sum(outcome.met)),
        "energy (J)": joules,
        "energy per request (J)": joules / max(answered, 1),
        "share": shares,
        "req/s": answered / max(outcome.last_s - outcome.first_s, 1e-9),
        "fates": dict(outcome.fates),
        "lost": lost,
        "health": " then ".join(health),
    }


def table(rows: dict[str, list[dict[str, Any]]], title: str) -> Table:
    """One row per setup: means over the seeds (each seed's deadline satisfaction listed)."""
    out = Table(title=title)
    out.add_column("setup")
    columns = ("deadline met: mean (per seed)", "J/request", "shares", "answered/s", "requests")
    for column in (*columns, "lost"):
        out.add_column(column, justify="right")
    for name, runs in rows.items():
        met = [run["deadline satisfaction"] for run in runs]
        per_seed = f" ({' '.join(f'{m:.3f}' for m in met)})" if len(met) > 1 else ""
        shares: Counter[str] = Counter()
        fates: Counter[str] = Counter()
        for run in runs:
            shares.update({k: v / len(runs) for k, v in run["share"].items()})
            fates.update(run["fates"])
        text = ", ".join(f"{k} {v}" for k, v in sorted(fates.items()) if v)
        health = "; ".join(run["health"] for run in runs if run["health"])
        out.add_row(
            name,
            f"{np.mean(met):.3f}{per_seed}",
            f"{np.mean([run['energy per request (J)'] for run in runs]):.1f}",
            " ".join(f"{k} {v:.0%}" for k, v in sorted(shares.items())),
            f"{np.mean([run['req/s'] for run in runs]):.1f}",
            text + (f"; /health {health}" if health else ""),
            str(sum(run["lost"] for run in runs)),
        )
    return out


def start_emulators(
    cluster: scenario.Cluster, args: argparse.Namespace
) -> tuple[subprocess.Popen[bytes], dict[str, Any], list[str]]:
    """The scenario's servers emulated in one subprocess (``args.time_scale``), each on a free
    loopback port, once they answer; the gateway config for them (CS-UCB, the gateway's
    read timeout 30 s, so that it answers a clear error before the client gives up at
    ``args.client_timeout_s``) and their URLs."""
    plans, config = plan_testbed(
        cluster,
        host="127.0.0.1",
        port=free_port(),
        time_scale=args.time_scale,
        policy={"type": "cs-ucb"},
    )
    # The planned ports may be taken: give every emulator a free one.
    port_of = {plan.name: free_port() for plan in plans}
    base = config.model_dump(mode="json", by_alias=True, exclude_none=True)
    for backend in base["backends"]:
        backend["url"] = f"http://127.0.0.1:{port_of[backend['name']]}"
    base["timeouts"] = {**base.get("timeouts", {}), "read-s": 30.0}
    emulated = [
        {
            "profile": p.profile,
            "port": port_of[p.name],
            "rtt_ms": p.rtt_ms,
            "max_batch": p.max_batch,
        }
        for p in plans
    ]
    command = [sys.executable, "-c", EMULATORS, json.dumps(emulated), str(args.time_scale)]
    emulator = subprocess.Popen(command)
    urls = [backend["url"] for backend in base["backends"]]
    try:
        for url in urls:
            wait_http(url + "/health", emulator, "emulators")
    except BaseException:
        stop(emulator)
        raise
    return emulator, base, urls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="tiny")
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--rate", type=float, default=20.0, help="arrivals/s, scenario time")
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument("--client-timeout-s", type=float, default=60.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="request sequences")
    parser.add_argument("--sync-interval-s", type=float, default=0.5, help="statistics sync")
    parser.add_argument("--load-interval-s", type=float, default=0.1, help="load sync")
    parser.add_argument("--only", nargs="*", help="setup names to run (default: all)")
    args = parser.parse_args()
    console = Console(width=160)
    cluster = scenario.load(args.scenario)
    emulator, base, backend_urls = start_emulators(cluster, args)
    base["state-sync"] = {
        "interval-s": args.sync_interval_s,
        "load-interval-s": args.load_interval_s,
        "lease-s": 5.0,
    }
    redis = Redis()
    redis.start()
    setups = [s for s in SETUPS if not args.only or s.name in args.only]
    rows: dict[str, list[dict[str, Any]]] = {s.name: [] for s in setups}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for seed in args.seeds:
                requests = generate_requests(cluster.workload, args.requests, seed, args.rate)
                rng = np.random.default_rng(seed)
                prompts = [make_prompt(rng, r.routed.prompt_tokens) for r in requests]
                for db, setup in enumerate(setups):
                    console.print(f"seed {seed}, {setup.name}: {args.requests} requests ...")
                    if redis.proc is None or redis.proc.poll() is not None:
                        redis.start()
                    rows[setup.name].append(
                        run_setup(
                            setup, base, redis, db, backend_urls, requests, prompts, args, Path(tmp)
                        )
                    )
                    redis.kill()  # a clean store for the next run
                    redis.start()
    finally:
        redis.kill()
        stop(emulator)
    title = (
        f"{args.scenario}: {args.requests} requests at {args.rate:g}/s (scenario time), CS-UCB, "
        f"time scale {args.time_scale:g}, seeds {' '.join(map(str, args.seeds))}, "
        f"sync every {args.sync_interval_s:g} s (load {args.load_interval_s:g} s)"
    )
    console.print(table(rows, title))
    if os.environ.get("PERLLM_BENCH_JSON"):
        Path(os.environ["PERLLM_BENCH_JSON"]).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
