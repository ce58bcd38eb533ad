"""The client side of a chaos run (see :mod:`chaos_harness`): its calls, their
deadlines, and how one call is sent and how it ended.

A call refused while the gateway restarts (``httpx.ConnectError``: nothing was sent) waits for
the restarted gateway and is sent again; any other transport error after a call was sent ends
it as ``lost``.

A call's deadline (:func:`deadline_ms`) is a multiple of the emulated time it needs on the
slowest backend (:func:`need_s`) plus a multiple of this machine's cost of a call, measured in
the run itself (:func:`measure_overhead_ms`).
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx

from perllm.domain import CHARS_PER_TOKEN
from perllm.emulator.app import parse_profile

__all__ = [
    "NEED_SLACK",
    "OVERHEAD_SLACK",
    "Call",
    "ChaosReport",
    "ChaosSettings",
    "Restarts",
    "Result",
    "call",
    "deadline_ms",
    "measure_overhead_ms",
    "need_s",
    "plan",
    "tally",
]

NEED_SLACK = 2.0  # times the emulated time a call needs on the slowest backend
OVERHEAD_SLACK = 4.0  # times the machine's measured cost of a call (under a full load)
WARMUP_ROUNDS = 6  # of concurrency calls each
WARMUP_DEADLINE_MS = 10_000.0  # the warm-up calls' deadline: loose, as they are not judged
TOKENS = (1, 8, 32, 64, 128, 256)  # the max_tokens of the run's ordinary calls
OVER_CAP_TOKENS = 8192  # above the 4096-token context of LLaMA-2: refused with a 400


@dataclass(frozen=True, slots=True)
class ChaosSettings:
    """What a chaos run does (see the module docstring)."""

    requests: int = 1000
    concurrency: int = 32
    kill_every: int = 80
    restart_after: int = 20
    gateway_restart_every: int = 250
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
    gateway: Counter[str] = field(default_factory=Counter)  # /metrics, summed over processes
    gateway_log: Counter[str] = field(default_factory=Counter)  # outcome lines in the log
    kills: int = 0
    restarts: int = 0
    gateway_restarts: int = 0
    refused: int = 0  # calls refused while the gateway restarted, then sent again
    overhead_ms: float = 0.0
    deadlines_met: int = 0
    deadline_checked: int = 0
    logged_once: int = 0
    logged_other: int = 0
    in_flight_after: float = 0.0
    exit_codes: dict[str, int | None] = field(default_factory=dict)
    lost_examples: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    machine: str = ""
    endings: dict[str, str] = field(default_factory=dict)  # request id -> client ending
    seconds: dict[str, float] = field(default_factory=dict)  # request id -> answered in
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


@dataclass(frozen=True, slots=True)
class Call:
    """One planned call; its request id and prompt are made from ``prefix`` and ``index``."""

    index: int
    stream: bool
    drop: bool
    max_tokens: int
    deadline_ms: float
    prefix: str = "chaos"

    @property
    def request_id(self) -> str:
        return f"{self.prefix}-{self.index}"

    @property
    def prompt(self) -> str:
        return f"{self.prefix} call {self.index}"


@dataclass(frozen=True, slots=True)
class Result:
    """How a call ended, as its client saw it (see :mod:`chaos_harness`)."""

    ending: str
    detail: str
    seconds: float  # of the last attempt
    refused: bool = False  # refused while the gateway restarted, then sent again


@dataclass(slots=True)
class Restarts:
    """Whether the gateway is up: ``up`` is set while it listens, cleared from just before its
    SIGTERM until its successor prints its URL line; ``begun`` counts the restarts begun."""

    up: asyncio.Event = field(default_factory=asyncio.Event)
    begun: int = 0


def need_s(profiles: tuple[str, ...], prompt: str, max_tokens: int) -> float:
    """Emulated seconds (before ``time_scale``) that a call needs alone (batch 1) on the
    slowest of ``profiles``: its prefill, then ``max_tokens - 1`` decode steps, each timed with
    the KV cache it has at the end (as :class:`perllm.emulator.engine.BatchEngine` times it)."""
    prompt_tokens = max(1, math.ceil(len(prompt) / CHARS_PER_TOKEN))
    slowest = 0.0
    for profile in profiles:
        dep = parse_profile(profile)
        assert dep is not None
        perf = dep.perf()
        step = perf.step_s(1, prompt_tokens + max_tokens)
        slowest = max(slowest, perf.prefill_s(prompt_tokens) + (max_tokens - 1) * step)
    return slowest


def deadline_ms(need_ms: float, overhead_ms: float) -> float:
    """A call's deadline: :data:`NEED_SLACK` times the emulated time it needs (``need_ms``,
    scaled), plus :data:`OVERHEAD_SLACK` times the machine's cost of one call."""
    return NEED_SLACK * need_ms + OVERHEAD_SLACK * overhead_ms


def plan(settings: ChaosSettings, profiles: tuple[str, ...], overhead_ms: float) -> list[Call]:
    """The run's calls, drawn from ``settings.seed``, with their deadlines."""
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
            tokens = rng.choice(TOKENS)
        need_ms = need_s(profiles, Call(i, stream, drop, tokens, 0.0).prompt, tokens)
        need_ms *= settings.time_scale * 1000.0
        calls.append(Call(i, stream, drop, tokens, deadline_ms(need_ms, overhead_ms)))
    return calls


async def measure_overhead_ms(url: str, concurrency: int) -> float:
    """This machine's cost of a call through the gateway at ``url`` under a full load, in ms.

    A warm-up without faults: :data:`WARMUP_ROUNDS` x ``concurrency`` calls (request ids
    ``warm-up-N``), ``concurrency`` at once: every other one asks for one token, the others for
    the run's other sizes in turn, half of each kind streamed. The cost is the median time of
    the one-token calls (they need next to no emulated time: one prefill), leaving out the
    first ``concurrency`` calls (they open the connections)."""
    calls = [
        Call(
            i,
            i // 2 % 2 == 1,
            False,
            1 if i % 2 == 0 else TOKENS[1 + i // 2 % (len(TOKENS) - 1)],
            WARMUP_DEADLINE_MS,
            "warm-up",
        )
        for i in range(WARMUP_ROUNDS * concurrency)
    ]
    pending = iter(calls)
    times: list[float] = []
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:

        async def worker() -> None:
            for one in pending:
                start = time.monotonic()
                ending, detail = await _one(client, one)
                if ending != "answered":
                    raise RuntimeError(f"warm-up call {one.request_id}: {ending}: {detail}")
                if one.max_tokens == 1 and one.index >= concurrency:
                    times.append((time.monotonic() - start) * 1000.0)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return statistics.median(times)


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


async def _one(client: httpx.AsyncClient, call: Call) -> tuple[str, str]:
    """(ending, detail) of one attempt at a call."""
    body = {
        "model": "m",
        "max_tokens": call.max_tokens,
        "stream": call.stream,
        "messages": [{"role": "user", "content": call.prompt}],
    }
    headers = {"x-request-id": call.request_id, "x-perllm-deadline-ms": f"{call.deadline_ms:.1f}"}
    async with client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as r:
        if r.status_code >= 400:
            await r.aread()
            ending = "clean error" if _json_error(r) else "lost"
            return ending, f"HTTP {r.status_code} {r.text[:120]}"
        if not call.stream:
            await r.aread()
            try:
                complete = bool(r.json()["choices"])
            except (ValueError, KeyError, TypeError):
                complete = False
            return ("answered" if complete else "lost"), r.text[:120]
        text = ""
        async for chunk in r.aiter_text():
            text += chunk
            if call.drop and '"content"' in text:
                return "dropped", ""  # closing `r` hangs up
        events = [e.strip() for e in text.split("\n\n") if e.strip()]
        return _sse_end(events), text[-160:]


async def call(
    client: httpx.AsyncClient, one: Call, timeout_s: float, restarts: Restarts
) -> Result:
    """Send one call; if the gateway refuses its connection while it restarts, wait for the
    restarted gateway and send it again. Every wait is bounded by ``timeout_s``."""
    refused = False
    while True:
        up, begun = restarts.up.is_set(), restarts.begun
        start = time.monotonic()
        try:
            ending, detail = await asyncio.wait_for(_one(client, one), timeout_s)
            return Result(ending, detail, time.monotonic() - start, refused)
        except TimeoutError:
            return Result("hung", f"no end within {timeout_s:g} s", timeout_s, refused)
        except httpx.ConnectError as err:
            if up and restarts.begun == begun:  # no restart began since it was sent
                return Result("lost", f"refused with no restart: {err}", 0.0, refused)
        except httpx.HTTPError as err:
            seconds = time.monotonic() - start
            now = time.time()  # as the gateway's log shows it, to find the call's neighbours
            clock = time.strftime("%H:%M:%S", time.localtime(now)) + f",{int(now % 1 * 1000):03d}"
            detail = f"{type(err).__name__}({err}) at {clock}, {seconds:.3f} s after it was sent"
            return Result("lost", detail, seconds, refused)
        refused = True
        try:
            await asyncio.wait_for(restarts.up.wait(), timeout_s)
        except TimeoutError:
            return Result("hung", "the gateway did not come back", timeout_s, refused)


def tally(report: ChaosReport, one: Call, result: Result) -> None:
    """Count how ``one`` ended in ``report``."""
    report.client[result.ending] += 1
    report.refused += result.refused
    report.endings[one.request_id] = result.ending
    if result.ending == "answered":
        report.seconds[one.request_id] = result.seconds
        report.deadline_checked += 1
        report.deadlines_met += result.seconds * 1000.0 <= one.deadline_ms
    if result.ending in ("lost", "hung") and len(report.lost_examples) < 10:
        report.lost_examples.append(f"{one.request_id}: {result.ending}: {result.detail}")
