"""A chaos run: the gateway and emulated backends as separate processes, backends SIGKILLed
and restarted while clients call, and a tally of how every call ended.

Used by ``benchmarks/chaos.py`` (1,000+ calls) and by a shorter test. Everything is on loopback.
Kills are triggered by events, not timers: after every ``kill_every`` finished calls one backend
(in turn) is SIGKILLed, and it is restarted on its port after ``restart_after`` more; the
next kill waits until the gateway sees the restarted backend healthy again (its circuit
closed). Calls mix streamed and non-streamed answers and ``max_tokens`` sizes (a few over
every backend's cap); some streamed callers hang up after their first token.

Each call ends, as its client sees it, as one of:

- ``answered``: a complete answer (a JSON body with choices; a stream ending in ``[DONE]``);
- ``clean error``: an OpenAI-style JSON error, or a stream ended by an SSE error event;
- ``dropped``: the client hung up mid-stream on purpose (the gateway should cancel it);
- ``hung``: no end within ``client_timeout_s``;
- ``lost``: anything else (a bare connection error, a truncated stream, a non-JSON error).

The tally is cross-checked against the gateway: its ``perllm_gateway_outcomes_total`` counters,
its in-flight gauge once all is over, and its log, where every request id must appear in exactly
one outcome line. At the end the gateway and the emulators get one SIGTERM each and must exit 0.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import signal
import socket
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

import perllm

__all__ = ["ChaosReport", "ChaosSettings", "render", "run_chaos"]

EDGE = "rtx-3090:llama-2-7b:q4"
CLOUD = "a100-80gb:llama-2-13b:fp16"
PROFILES = (EDGE, EDGE, CLOUD)
OVER_CAP_TOKENS = 8192  # above the 4096-token context of LLaMA-2: refused with a 400
START_S = 60.0  # bound on a process start (it says when it listens)
STOP_S = 60.0  # bound on a process stop after SIGTERM
OUTCOME_LINE = re.compile(r"request (\S+) (answered|error|stream-error|abandoned) \(")


@dataclass(frozen=True, slots=True)
class ChaosSettings:
    """What a chaos run does (see the module docstring)."""

    requests: int = 1000
    concurrency: int = 32
    kill_every: int = 80
    restart_after: int = 20
    stream_fraction: float = 0.5
    drop_fraction: float = 0.1
    over_cap_fraction: float = 0.03
    time_scale: float = 0.05
    client_timeout_s: float = 120.0
    drain_s: float = 5.0
    seed: int = 0


@dataclass(slots=True)
class ChaosReport:
    """How the calls ended, client side and gateway side."""

    settings: ChaosSettings
    client: Counter[str] = field(default_factory=Counter)
    gateway: dict[str, float] = field(default_factory=dict)
    kills: int = 0
    restarts: int = 0
    deadlines_met: int = 0
    deadline_checked: int = 0
    logged_once: int = 0
    logged_other: int = 0
    in_flight_after: float = 0.0
    exit_codes: dict[str, int | None] = field(default_factory=dict)
    lost_examples: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    endings: dict[str, str] = field(default_factory=dict)  # request id -> client ending
    pairs: Counter[tuple[str, str]] = field(default_factory=Counter)  # (client, gateway log)

    @property
    def ok(self) -> bool:
        return (
            self.client["lost"] == 0
            and self.client["hung"] == 0
            and self.logged_other == 0
            and self.in_flight_after == 0
            and all(code == 0 for code in self.exit_codes.values())
        )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Process:
    """A ``perllm`` subcommand in a child process; ready once it prints its URL line."""

    def __init__(self, name: str, args: list[str], log: Path) -> None:
        self.name = name
        self.args = args
        self.log = log
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(Path(perllm.__file__).parent.parent)}
        with self.log.open("ab") as sink:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "perllm.cli",
                *self.args,
                stdout=asyncio.subprocess.PIPE,
                stderr=sink,
                env=env,
            )
        assert self.proc.stdout is not None
        # The URL line is printed once the socket listens (connections queue from then on).
        line = await asyncio.wait_for(self.proc.stdout.readline(), START_S)
        if b"http://" not in line:
            raise RuntimeError(f"{self.name} did not start: see {self.log}")

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        await self.proc.wait()

    async def stop(self) -> int | None:
        """One SIGTERM; the exit code (``None`` if it did not exit within :data:`STOP_S`)."""
        if self.proc is None or self.proc.returncode is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.proc.wait(), STOP_S)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            return None


def _gateway_config(ports: list[int], settings: ChaosSettings, state: Path) -> dict[str, Any]:
    backends = []
    for i, (port, profile) in enumerate(zip(ports, PROFILES, strict=True)):
        hardware, model, dtype = profile.split(":")
        backends.append(
            {
                "name": f"backend-{i}",
                "url": f"http://127.0.0.1:{port}",
                "tier": "cloud" if hardware.startswith("a100") else "edge",
                "models": {"m": model},
                "hardware": hardware,
                "model": model,
                "dtype": dtype,
                "max-concurrency": 32,
            }
        )
    return {
        "backends": backends,
        "policy": {"type": "cs-ucb"},
        "time-scale": settings.time_scale,
        "state-file": str(state),
        "classes": {"default": {"deadline-ms": 30_000 * settings.time_scale}},
        "health": {"interval-s": 0.5, "cooldown-s": 1.0, "failure-threshold": 2},
        "timeouts": {"connect-s": 1, "read-s": 30, "request-s": 60, "drain-s": settings.drain_s},
    }


@dataclass(frozen=True, slots=True)
class _Call:
    index: int
    stream: bool
    drop: bool
    max_tokens: int
    deadline_ms: float

    @property
    def request_id(self) -> str:
        return f"chaos-{self.index}"


def _plan(settings: ChaosSettings) -> list[_Call]:
    rng = random.Random(settings.seed)
    calls = []
    for i in range(settings.requests):
        stream = rng.random() < settings.stream_fraction
        drop = stream and rng.random() < settings.drop_fraction
        if drop:
            tokens = 2048  # long enough to be still running when its client hangs up
        elif rng.random() < settings.over_cap_fraction:
            tokens = OVER_CAP_TOKENS
        else:
            tokens = rng.choice((1, 8, 32, 64, 128, 256))
        # Model time: two seconds plus 60 ms a token, scaled like the emulators.
        deadline_ms = (2000.0 + 60.0 * tokens) * settings.time_scale
        calls.append(_Call(i, stream, drop, tokens, deadline_ms))
    return calls


def _sse_end(events: list[str]) -> str:
    """How a relayed stream ended: ``answered``, ``clean error`` or ``lost`` (truncated)."""
    if not events or events[-1] != "data: [DONE]":
        return "lost"
    for event in events:
        if event.startswith("data: {") and '"error"' in event:
            body = json.loads(event[6:])
            if isinstance(body.get("error"), dict):
                return "clean error"
    return "answered"


def _json_error(response: httpx.Response) -> bool:
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return False
    return isinstance(error, dict) and {"message", "code"} <= set(error)


async def _one(client: httpx.AsyncClient, call: _Call) -> tuple[str, str, float]:
    """(ending, detail, seconds) of one call."""
    body = {
        "model": "m",
        "max_tokens": call.max_tokens,
        "stream": call.stream,
        "messages": [{"role": "user", "content": f"chaos call {call.index}"}],
    }
    headers = {"x-request-id": call.request_id, "x-perllm-deadline-ms": f"{call.deadline_ms:.1f}"}
    start = time.monotonic()
    async with client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as r:
        if r.status_code >= 400:
            await r.aread()
            ending = "clean error" if _json_error(r) else "lost"
            return ending, f"HTTP {r.status_code} {r.text[:120]}", time.monotonic() - start
        if not call.stream:
            await r.aread()
            try:
                complete = bool(r.json()["choices"])
            except (ValueError, KeyError, TypeError):
                complete = False
            ending = "answered" if complete else "lost"
            return ending, r.text[:120], time.monotonic() - start
        text = ""
        async for chunk in r.aiter_text():
            text += chunk
            if call.drop and '"content"' in text:
                return "dropped", "", time.monotonic() - start  # closing `r` hangs up
        events = [e.strip() for e in text.split("\n\n") if e.strip()]
        return _sse_end(events), text[-160:], time.monotonic() - start


async def _call(client: httpx.AsyncClient, call: _Call, timeout_s: float) -> tuple[str, str, float]:
    try:
        return await asyncio.wait_for(_one(client, call), timeout_s)
    except TimeoutError:
        return "hung", f"no end within {timeout_s:g} s", timeout_s
    except httpx.HTTPError as err:
        return "lost", f"{type(err).__name__}: {err}", 0.0


def _outcomes(text: str) -> tuple[dict[str, float], float]:
    outcomes: dict[str, float] = {}
    in_flight = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "perllm_gateway_outcomes_total":
                outcomes[sample.labels["outcome"]] = sample.value
            elif sample.name == "perllm_gateway_in_flight":
                in_flight += sample.value
    return outcomes, in_flight


async def run_chaos(settings: ChaosSettings, workdir: Path) -> ChaosReport:
    """Run the chaos described by ``settings``; logs and state go to ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    report = ChaosReport(settings)
    ports = [_free_port() for _ in PROFILES]
    emulators = [
        _Process(
            f"backend-{i}",
            [
                "emulate",
                "--profile",
                profile,
                "--port",
                str(port),
                "--time-scale",
                str(settings.time_scale),
                "--drain-s",
                "1",
            ],
            workdir / f"backend-{i}.log",
        )
        for i, (port, profile) in enumerate(zip(ports, PROFILES, strict=True))
    ]
    config = workdir / "gateway.yaml"
    config.write_text(yaml.safe_dump(_gateway_config(ports, settings, workdir / "state.json")))
    gateway_port = _free_port()
    gateway_log = workdir / "gateway.log"
    gateway_log.write_bytes(b"")
    gateway = _Process(
        "gateway",
        ["serve", "--config", str(config), "--port", str(gateway_port), "--log-level", "info"],
        gateway_log,
    )
    calls = _plan(settings)
    started = time.monotonic()
    try:
        await asyncio.gather(*(e.start() for e in emulators))
        await gateway.start()
        await _load(settings, calls, gateway_port, emulators, report)
        async with httpx.AsyncClient(timeout=30) as client:
            metrics = (await client.get(f"http://127.0.0.1:{gateway_port}/metrics")).text
        report.gateway, report.in_flight_after = _outcomes(metrics)
    finally:
        report.exit_codes["gateway"] = await gateway.stop()
        for emulator in emulators:
            report.exit_codes[emulator.name] = await emulator.stop()
    report.elapsed_s = time.monotonic() - started
    lines = gateway_log.read_text().splitlines()
    matches = [m for line in lines if (m := OUTCOME_LINE.search(line))]
    logged = Counter(m.group(1) for m in matches)
    outcome = {m.group(1): m.group(2) for m in matches}
    ids = {c.request_id for c in calls}
    report.logged_once = sum(logged[i] == 1 for i in ids)
    report.logged_other = len(ids) - report.logged_once
    report.pairs = Counter(
        (ending, outcome.get(rid, "none")) for rid, ending in report.endings.items()
    )
    return report


async def _until_healthy(client: httpx.AsyncClient, backend: str) -> None:
    """Wait until the gateway's circuit for ``backend`` is closed (at most :data:`START_S`)."""
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        stats = (await client.get("/stats")).json()
        if stats["backends"][backend]["circuit"] == "closed":
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"the gateway never saw {backend} healthy again")


async def _load(
    settings: ChaosSettings,
    calls: list[_Call],
    port: int,
    emulators: list[_Process],
    report: ChaosReport,
) -> None:
    """Send every call (``concurrency`` at once), killing and restarting backends on events."""
    queue: asyncio.Queue[_Call] = asyncio.Queue()
    for call in calls:
        queue.put_nowait(call)
    finished = 0
    tick = asyncio.Event()

    async def chaos(client: httpx.AsyncClient) -> None:
        """Kill one backend each ``kill_every`` finished calls; restart it ``restart_after``
        calls later; kill the next only once the gateway sees the last one healthy again (one
        is down at a time)."""
        next_kill = settings.kill_every
        while next_kill < len(calls):
            while finished < next_kill:
                await tick.wait()
                tick.clear()
            victim = emulators[report.kills % len(emulators)]
            await victim.kill()
            report.kills += 1
            restart_at = min(next_kill + settings.restart_after, len(calls))
            while finished < restart_at:
                await tick.wait()
                tick.clear()
            await victim.start()
            report.restarts += 1
            await _until_healthy(client, victim.name)
            next_kill += settings.kill_every

    limits = httpx.Limits(max_connections=settings.concurrency)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=settings.client_timeout_s
    ) as client:

        async def worker() -> None:
            nonlocal finished
            while not queue.empty():
                call = queue.get_nowait()
                ending, detail, seconds = await _call(client, call, settings.client_timeout_s)
                report.client[ending] += 1
                report.endings[call.request_id] = ending
                if ending == "answered":
                    report.deadline_checked += 1
                    report.deadlines_met += seconds * 1000.0 <= call.deadline_ms
                if ending in ("lost", "hung") and len(report.lost_examples) < 10:
                    report.lost_examples.append(f"{call.request_id}: {ending}: {detail}")
                finished += 1
                tick.set()

        chaos_task = asyncio.create_task(chaos(client))
        await asyncio.gather(*(worker() for _ in range(settings.concurrency)))
        await chaos_task  # its last restart is due once every call has finished


def render(report: ChaosReport) -> str:
    """The report as a text table."""
    s = report.settings
    c = report.client
    g = report.gateway
    total = sum(c.values())
    met = report.deadlines_met / report.deadline_checked if report.deadline_checked else 0.0
    errors = g.get("error", 0.0) + g.get("stream-error", 0.0)
    rows = [
        ("answered", c["answered"], g.get("answered", 0.0)),
        ("clean errors (JSON / SSE error)", c["clean error"], errors),
        ("abandoned and cancelled", c["dropped"], g.get("abandoned", 0.0)),
        ("hung", c["hung"], "-"),
        ("lost", c["lost"], "-"),
    ]
    lines = [
        f"chaos: {total} calls ({s.concurrency} at once, {s.stream_fraction:.0%} streamed, "
        f"{s.drop_fraction:.0%} of streams hung up), {report.kills} backend SIGKILLs, "
        f"{report.restarts} restarts, time-scale {s.time_scale:g}, {report.elapsed_s:.1f} s",
        "",
        f"{'ending':<34}{'client':>8}{'gateway /metrics':>18}",
    ]
    for name, client, gateway in rows:
        shown = f"{gateway:.0f}" if isinstance(gateway, float | int) else gateway
        lines.append(f"{name:<34}{client:>8}{shown:>18}")
    lines += [
        "",
        f"deadline met by answered calls (client-measured): {met:.1%} "
        f"({report.deadlines_met}/{report.deadline_checked})",
        f"request ids logged in exactly one outcome line: {report.logged_once}/{total}",
        f"gateway in flight afterwards: {report.in_flight_after:.0f}",
        "exit codes after one SIGTERM: "
        + ", ".join(f"{k} {v}" for k, v in report.exit_codes.items()),
    ]
    expected = {
        ("answered", "answered"),
        ("clean error", "error"),
        ("clean error", "stream-error"),
        ("dropped", "abandoned"),
    }
    others = {pair: n for pair, n in report.pairs.items() if pair not in expected}
    if not report.pairs:
        others = {("?", "?"): total}
    lines.append(
        "client ending vs the gateway's logged outcome, per request id: "
        + (
            ", ".join(f"{n} {c} -> {g}" for (c, g), n in sorted(others.items()))
            + " (the rest agree)"
            if others
            else "all agree"
        )
    )
    if report.lost_examples:
        lines += ["", "lost or hung:", *(f"  {e}" for e in report.lost_examples)]
    lines.append(f"\nverdict: {'PASS' if report.ok else 'FAIL'} (lost = 0, hung = 0)")
    return "\n".join(lines)
