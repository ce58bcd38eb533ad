"""A chaos run: the gateway and emulated backends as separate processes, backends SIGKILLed and
the gateway stopped with SIGTERM and restarted while clients call, and a tally of how every call
ended.

Used by ``benchmarks/chaos.py`` (1,000+ calls) and by a shorter test. Everything is on loopback.
Faults are triggered by events, not timers:

- after every ``kill_every`` finished calls one backend (in turn) is SIGKILLed, and restarted on
  its port after ``restart_after`` more; the next kill waits until the gateway sees the
  restarted backend healthy again (its circuit closed);
- after every ``gateway_restart_every`` finished calls the gateway gets one SIGTERM while the
  clients go on calling; once it has exited (its exit code is recorded) it is started again on
  the same port with the same config and state file, appending to the same log.

Calls mix streamed and non-streamed answers and ``max_tokens`` sizes (a few over every
backend's cap); some streamed callers hang up after their first token. A call whose connection
the gateway refuses while it restarts (nothing was sent) waits until the restarted gateway
prints its URL line and is sent again (see :mod:`chaos_clients`). Each call
ends, as its client sees it, as one of:

- ``answered``: a complete answer (a JSON body with choices; a stream ending in ``[DONE]``);
- ``clean error``: an OpenAI-style JSON error (such as the ``503 shutting_down`` of a gateway
  that stops), or a stream ended by an SSE error event;
- ``dropped``: the client hung up mid-stream on purpose (the gateway should cancel it);
- ``hung``: no end within ``client_timeout_s``;
- ``lost``: anything else (a transport error once the call was sent, a truncated stream, a
  non-JSON error).

Each call's deadline (``x-perllm-deadline-ms``, and what "deadline met" is measured against,
from the call's last attempt) is ``NEED_SLACK x need + OVERHEAD_SLACK x overhead`` (2 and 4):

- ``need``: the emulated time the call needs alone on the slowest backend (its prefill and
  decode steps in the perf model, :func:`~chaos_clients.need_s`), times
  ``time_scale``; it does not depend on the CPU;
- ``overhead``: this machine's cost of a call, measured in the run before the faults begin: a
  warm-up of calls of every size through the gateway, ``concurrency`` at once, and the median
  time of its one-token calls (:func:`~chaos_clients.measure_overhead_ms`). At
  ``time_scale`` 0.05 this cost, not the emulated time, dominates, and it grows on a slower or
  busier CPU, so the share of deadlines met measures how much the faults delay calls relative
  to the machine's own fault-free pace (not the gateway's raw speed).

The tally is cross-checked against the gateway: its ``perllm_gateway_outcomes_total`` counters
(less the warm-up's calls; they start from zero in each gateway process, so the report sums
each process's counters read just before its SIGTERM and the last one's read at the end: calls
that a stopped gateway ended while draining are missing from that column), the outcome lines of
its log (complete: every process appends to one log, where every request id must appear in
exactly one outcome line), and its in-flight gauge once all is over. At the end the gateway and
the emulators get one SIGTERM each; every gateway process and emulator must exit 0.
"""

from __future__ import annotations

import asyncio
import os
import platform
import re
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import chaos_clients as clients
import httpx
import yaml
from chaos_clients import Call, ChaosReport, ChaosSettings, Restarts
from prometheus_client.parser import text_string_to_metric_families

import perllm
from perllm.serving import restartable_port

__all__ = ["ChaosReport", "ChaosSettings", "machine", "render", "run_chaos"]

EDGE = "rtx-3090:llama-2-7b:q4"
CLOUD = "a100-80gb:llama-2-13b:fp16"
PROFILES = (EDGE, EDGE, CLOUD)
START_S = 60.0  # bound on a process start (it says when it listens)
STOP_S = 60.0  # bound on a process stop after SIGTERM
OUTCOME_LINE = re.compile(r"request (\S+) (answered|error|stream-error|abandoned) \(")


def machine() -> str:
    """The CPU's model name and the number of cores (those this process may use too)."""
    name = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    name = name or platform.processor() or platform.machine() or "unknown CPU"
    cores = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    return f"{name}, {cores} cores" + (f" ({usable} usable)" if usable != cores else "")


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


def _outcomes(text: str) -> tuple[Counter[str], float]:
    outcomes: Counter[str] = Counter()
    in_flight = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "perllm_gateway_outcomes_total":
                outcomes[sample.labels["outcome"]] += int(sample.value)
            elif sample.name == "perllm_gateway_in_flight":
                in_flight += sample.value
    return outcomes, in_flight


class _Gateway:
    """The gateway process, stopped with SIGTERM and started again on the same port."""

    def __init__(self, process: _Process, url: str, report: ChaosReport) -> None:
        self.process = process
        self.url = url
        self.report = report
        self.restarts = Restarts()
        self.started = 0

    async def start(self) -> None:
        await self.process.start()
        self.started += 1
        self.restarts.up.set()

    async def read(self) -> tuple[Counter[str], float]:
        """This process's outcome counters and in-flight gauge."""
        async with httpx.AsyncClient(timeout=30) as client:  # its connection closes after
            return _outcomes((await client.get(f"{self.url}/metrics")).text)

    async def metrics(self) -> float:
        """Add this process's outcome counters to the report; its in-flight gauge."""
        outcomes, in_flight = await self.read()
        self.report.gateway.update(outcomes)
        return in_flight

    async def warmed_up(self, calls: int) -> None:
        """Take the warm-up's ``calls`` off the counters, once the gateway has counted them
        all (a stream's outcome is counted just after its last byte is sent)."""
        for _ in range(100):
            outcomes, _ = await self.read()
            if outcomes.total() >= calls:
                break
        self.report.gateway.subtract(outcomes)

    async def stop(self) -> None:
        code = await self.process.stop()
        self.report.exit_codes[f"gateway-{self.started}"] = code

    async def restart(self) -> None:
        """Read the counters, SIGTERM, wait for the exit, start a new process (clients that
        are refused meanwhile wait for :attr:`Restarts.up`)."""
        await self.metrics()
        self.restarts.up.clear()
        self.restarts.begun += 1
        await self.stop()
        await self.start()
        self.report.gateway_restarts += 1


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


async def run_chaos(settings: ChaosSettings, workdir: Path) -> ChaosReport:
    """Run the chaos described by ``settings``; logs and state go to ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    report = ChaosReport(settings, machine=machine())
    ports = [restartable_port() for _ in PROFILES]
    scale = ["--time-scale", str(settings.time_scale), "--drain-s", "1"]
    emulators = [
        _Process(
            f"backend-{i}",
            ["emulate", "--profile", profile, "--port", str(port), *scale],
            workdir / f"backend-{i}.log",
        )
        for i, (port, profile) in enumerate(zip(ports, PROFILES, strict=True))
    ]
    config = workdir / "gateway.yaml"
    config.write_text(yaml.safe_dump(_gateway_config(ports, settings, workdir / "state.json")))
    gateway_port = restartable_port()
    gateway_log = workdir / "gateway.log"
    gateway_log.write_bytes(b"")
    args = ["serve", "--config", str(config), "--port", str(gateway_port), "--log-level", "info"]
    gateway = _Gateway(
        _Process("gateway", args, gateway_log), f"http://127.0.0.1:{gateway_port}", report
    )
    started = time.monotonic()
    try:
        await asyncio.gather(*(e.start() for e in emulators))
        await gateway.start()
        report.overhead_ms = await clients.measure_overhead_ms(gateway.url, settings.concurrency)
        await gateway.warmed_up(clients.WARMUP_ROUNDS * settings.concurrency)
        calls = clients.plan(settings, PROFILES, report.overhead_ms)
        await _load(settings, calls, gateway, emulators, report)
        report.in_flight_after = await gateway.metrics()
    finally:
        await gateway.stop()
        for emulator in emulators:
            report.exit_codes[emulator.name] = await emulator.stop()
    report.elapsed_s = time.monotonic() - started
    lines = gateway_log.read_text().splitlines()
    matches = [m for line in lines if (m := OUTCOME_LINE.search(line))]
    logged = Counter(m.group(1) for m in matches)
    outcome = {m.group(1): m.group(2) for m in matches}
    ids = {c.request_id for c in calls}
    report.gateway_log = Counter(m.group(2) for m in matches if m.group(1) in ids)
    report.logged_once = sum(logged[i] == 1 for i in ids)
    report.logged_other = len(ids) - report.logged_once
    report.pairs = Counter(
        (ending, outcome.get(rid, "none")) for rid, ending in report.endings.items()
    )
    return report


async def _until_healthy(client: httpx.AsyncClient, backend: str, restarts: Restarts) -> None:
    """Wait until the gateway's circuit for ``backend`` is closed (at most :data:`START_S`),
    across a gateway restart."""
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        try:
            await asyncio.wait_for(restarts.up.wait(), START_S)
            stats = (await client.get("/stats")).json()
            if stats["backends"][backend]["circuit"] == "closed":
                return
        except httpx.TransportError:  # the gateway is restarting
            pass
        await asyncio.sleep(0.05)
    raise RuntimeError(f"the gateway never saw {backend} healthy again")


async def _load(
    settings: ChaosSettings,
    calls: list[Call],
    gateway: _Gateway,
    emulators: list[_Process],
    report: ChaosReport,
) -> None:
    """Send every call (``concurrency`` at once), killing and restarting backends and
    restarting the gateway on events."""
    queue: asyncio.Queue[Call] = asyncio.Queue()
    for one in calls:
        queue.put_nowait(one)
    finished = 0
    ticks = [asyncio.Event(), asyncio.Event()]  # one per fault task

    async def after(count: int, tick: asyncio.Event) -> None:
        while finished < count:
            await tick.wait()
            tick.clear()

    async def kill_backends(control: httpx.AsyncClient) -> None:
        """Kill one backend each ``kill_every`` finished calls; restart it ``restart_after``
        calls later; kill the next only once the gateway sees the last one healthy again (one
        is down at a time)."""
        next_kill = settings.kill_every
        while next_kill < len(calls):
            await after(next_kill, ticks[0])
            victim = emulators[report.kills % len(emulators)]
            await victim.kill()
            report.kills += 1
            await after(min(next_kill + settings.restart_after, len(calls)), ticks[0])
            await victim.start()
            report.restarts += 1
            await _until_healthy(control, victim.name, gateway.restarts)
            next_kill += settings.kill_every

    async def restart_gateway() -> None:
        """SIGTERM the gateway under load each ``gateway_restart_every`` finished calls."""
        next_restart = settings.gateway_restart_every
        while next_restart < len(calls):
            await after(next_restart, ticks[1])
            await gateway.restart()
            next_restart += settings.gateway_restart_every

    limits = httpx.Limits(max_connections=settings.concurrency)
    async with (
        httpx.AsyncClient(
            base_url=gateway.url, limits=limits, timeout=settings.client_timeout_s
        ) as client,
        httpx.AsyncClient(  # no kept-alive connection to hold a stopping gateway's drain
            base_url=gateway.url, timeout=30, limits=httpx.Limits(max_keepalive_connections=0)
        ) as control,
    ):

        async def worker() -> None:
            nonlocal finished
            while not queue.empty():
                one = queue.get_nowait()
                result = await clients.call(
                    client, one, settings.client_timeout_s, gateway.restarts
                )
                clients.tally(report, one, result)
                finished += 1
                for tick in ticks:
                    tick.set()

        faults = [
            asyncio.create_task(kill_backends(control)),
            asyncio.create_task(restart_gateway()),
        ]
        await asyncio.gather(*(worker() for _ in range(settings.concurrency)))
        await asyncio.gather(*faults)  # a last restart is due once every call has finished


def render(report: ChaosReport) -> str:
    """The report as a text table."""
    s = report.settings
    c = report.client
    g = report.gateway
    log = report.gateway_log
    total = sum(c.values())
    met = report.deadlines_met / report.deadline_checked if report.deadline_checked else 0.0
    errors = (g["error"] + g["stream-error"], log["error"] + log["stream-error"])
    rows = [
        ("answered", c["answered"], g["answered"], log["answered"]),
        ("clean errors (JSON / SSE error)", c["clean error"], *errors),
        ("abandoned and cancelled", c["dropped"], g["abandoned"], log["abandoned"]),
        ("hung", c["hung"], "-", "-"),
        ("lost", c["lost"], "-", "-"),
    ]
    processes = report.gateway_restarts + 1
    lines = [
        f"chaos: {total} calls ({s.concurrency} at once, {s.stream_fraction:.0%} streamed, "
        f"{s.drop_fraction:.0%} of streams hung up), {report.kills} backend SIGKILLs and "
        f"{report.restarts} restarts, {report.gateway_restarts} gateway SIGTERMs and restarts "
        f"under load, time-scale {s.time_scale:g}, seed {s.seed}, {report.elapsed_s:.1f} s",
        f"machine: {report.machine}",
        "",
        f"{'ending':<34}{'client':>8}{'gateway /metrics':>18}{'gateway log':>13}",
    ]
    for name, client, gateway, logged in rows:
        lines.append(f"{name:<34}{client:>8}{gateway:>18}{logged:>13}")
    lines += [
        "",
        f"refused while the gateway restarted (sent again): {report.refused}",
        f"gateway /metrics: summed over its {processes} processes, each read just before its "
        "SIGTERM (calls it ended while draining are in the log column only)",
        f"deadline met by answered calls (client-measured): {met:.1%} "
        f"({report.deadlines_met}/{report.deadline_checked}); deadline = "
        f"{clients.NEED_SLACK:g} x emulated need + {clients.OVERHEAD_SLACK:g} x "
        f"{report.overhead_ms:.1f} ms measured cost of a call",
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
