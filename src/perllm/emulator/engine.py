"""Continuous batching in asyncio, timed by the perf model (or instant).

One engine task loops while streams are active or waiting:

1. admit waiting streams while the batch has room (``max_batch``); each admission runs its
   prefill, ``perf.prefill_s(prompt_tokens - cached)``, which pauses the loop, and yields its
   first token (the stream in prefill counts as running, as vLLM counts it);
2. run one decode step, ``perf.step_s(batch, kv_tokens)`` with ``kv_tokens`` the prompt and
   generated tokens of every active stream, after which each active stream gets one token;
3. streams that reached their ``max_tokens`` (or whose client went away) leave the batch.

Every duration is multiplied by ``time_scale`` (0 runs without waiting). The engine keeps its
own schedule, so the small overshoots of each sleep do not add up; when it falls more than
:data:`MAX_LAG_S` behind (a starved CPU), it restarts its schedule from the present.

With a prefix cache (:class:`perllm.prefix.BlockLRU`, as the simulator's servers keep one), a
stream whose prompt names its blocks skips the prefill of its longest cached prefix
(:func:`perllm.prefix.cached_tokens`, ``cached``); its blocks enter the cache when its prefill
starts, and it still holds its whole prompt in the KV cache.

The engine also keeps the emulated server's clock, :meth:`BatchEngine.emulated_s`, and its
energy, :meth:`BatchEngine.energy_j`: the power of the running batch
(:func:`perllm.emulator.energy.power_w`) integrated over that clock at each change of batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from perllm.domain import PowerSpec, ServerPerf
from perllm.emulator.energy import EnergyMeter, power_w
from perllm.prefix import BlockLRU, cached_tokens

__all__ = ["ABORTED", "MAX_LAG_S", "BatchEngine", "Stream", "filler_token"]

MAX_LAG_S = 0.01
ABORTED = -1  # put on a stream's queue when the engine stops before the stream is complete
DRAIN_POLL_S = 0.05

_WORDS = (
    "the", "edge", "cloud", "model", "serves", "a", "token", "of", "energy", "and", "time",
    "with", "every", "request", "scheduled", "under", "its", "deadline", "while", "batches",
    "grow", "in", "memory", "bandwidth",
)  # fmt: skip


def filler_token(index: int) -> str:
    """The deterministic text of output token ``index`` (a word with a leading space)."""
    return " " + _WORDS[(index * 7) % len(_WORDS)]


@dataclass(eq=False, slots=True)
class Stream:
    """One request in the engine: tokens arrive on ``tokens`` (``None`` marks the end)."""

    prompt_tokens: int
    max_tokens: int
    blocks: tuple[int, ...] = ()  # the prompt's prefix blocks (perllm.prefix)
    cached: int = 0  # prompt tokens found in the prefix cache at its prefill
    generated: int = 0
    cancelled: bool = False
    tokens: asyncio.Queue[int | None] = field(default_factory=asyncio.Queue)

    def emit(self) -> bool:
        """Produce the next token; returns whether the stream is complete."""
        self.tokens.put_nowait(self.generated)
        self.generated += 1
        if self.generated >= self.max_tokens:
            self.tokens.put_nowait(None)
            return True
        return False


class BatchEngine:
    """A continuous-batching server; ``perf=None`` is an instant server (no waiting at all).

    Parameters
    ----------
    perf
        The deployment's performance coefficients, or ``None`` for an instant server.
    max_batch
        Most streams decoded together; the others wait by priority (lower first, as vLLM's
        ``--scheduling-policy priority``), then in arrival order.
    time_scale
        Multiplier of every duration (``0.1`` runs ten times faster than real time).
    power
        The deployment's power profile, for :meth:`power_w` and :meth:`energy_j` (``None``:
        0 W).
    clock, sleep
        The real clock in seconds that schedules the work, and the sleep that waits on it
        (default ``time.monotonic`` and ``asyncio.sleep``); a test may pass a virtual clock
        whose sleep moves it.
    cache
        The server's prefix cache (``None``: none).
    """

    def __init__(
        self,
        perf: ServerPerf | None,
        max_batch: int,
        time_scale: float = 1.0,
        *,
        power: PowerSpec | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        cache: BlockLRU | None = None,
    ) -> None:
        self.perf = perf
        self.cache = cache
        self.max_batch = max_batch
        self.time_scale = time_scale
        self.power = power
        self.waiting: list[tuple[int, int, Stream]] = []
        self._seq = itertools.count()
        self.active: list[Stream] = []
        self.prefilling: Stream | None = None
        self._task: asyncio.Task[None] | None = None
        self._now = clock
        self._sleep = sleep
        # The schedule: ``_clock`` is the real time at which the work scheduled so far ends and
        # ``_emulated`` the emulated time it ends at; ``_seen`` is the latest emulated time read.
        self._clock = clock()
        self._emulated = 0.0
        self._seen = 0.0
        self.energy = EnergyMeter(power)

    @property
    def batch(self) -> int:
        """Requests running: those decoding and the one in prefill."""
        return len(self.active) + (self.prefilling is not None)

    @property
    def queued(self) -> int:
        """Requests waiting for a place in the batch (cancelled ones excluded)."""
        return sum(not s.cancelled for _, _, s in self.waiting)

    @property
    def kv_tokens(self) -> int:
        """KV-cache tokens the running requests hold: each one's prompt and generated tokens
        (the prompt of the one in prefill included)."""
        held = sum(s.prompt_tokens + s.generated for s in self.active)
        return held + (self.prefilling.prompt_tokens if self.prefilling is not None else 0)

    def emulated_s(self) -> float:
        """The emulated server's clock: its seconds since the engine was built.

        Each prefill and decode step advances it by its perf-model duration, and an idle period
        by its real length divided by ``time_scale`` (a ``0.1`` engine lives ten emulated
        seconds per real second): the engine's schedule maps the real clock to it at
        ``1 / time_scale``. With ``time_scale == 0`` only the work advances it (an idle
        period has no emulated length). When the engine restarts its schedule after falling
        behind, the work it does keeps its model duration, and the clock holds still (it never
        goes back) until it passes what a reading has already seen.
        """
        emulated = self._emulated
        if self.time_scale > 0:
            emulated += (self._now() - self._clock) / self.time_scale
        self._seen = max(self._seen, emulated)
        return self._seen

    def power_w(self) -> float:
        """The power the emulated server draws at its running batch."""
        return power_w(self.power, self.batch)

    def energy_j(self) -> float:
        """Joules the emulated server has drawn since the engine was built: :meth:`power_w`
        integrated over :meth:`emulated_s`."""
        return self.energy.energy_j(self.emulated_s())

    def _changed(self) -> None:
        """Record the batch after a change. The change belongs to the end of the scheduled
        work when the engine is past it (waking from a sleep a little late), else to the present."""
        self.energy.update(self.batch, min(self.emulated_s(), self._emulated))

    def submit(
        self, prompt_tokens: int, max_tokens: int, priority: int = 0, blocks: tuple[int, ...] = ()
    ) -> Stream:
        """Queue a request (``blocks``: its prompt's prefix blocks); its tokens arrive on the
        returned stream's ``tokens`` queue."""
        stream = Stream(prompt_tokens, max(max_tokens, 1), blocks)
        if self.perf is None:
            while not stream.emit():
                pass
            return stream
        heapq.heappush(self.waiting, (priority, next(self._seq), stream))
        if self._task is None or self._task.done():
            self._emulated = self.emulated_s()
            self._clock = self._now()
            self._task = asyncio.create_task(self._run(), name="emulator-engine")
        return stream

    async def _advance(self, seconds: float) -> None:
        now = self._now()
        target = self._clock + seconds * self.time_scale
        if target < now - MAX_LAG_S:
            target = now
        self._clock = target
        self._emulated += seconds
        await self._sleep(max(target - now, 0.0))

    async def _run(self) -> None:
        perf = self.perf
        assert perf is not None
        while self.waiting or self.active:
            while self.waiting and len(self.active) < self.max_batch:
                stream = heapq.heappop(self.waiting)[2]
                if stream.cancelled:
                    continue
                self.prefilling = stream
                self._changed()
                if self.cache is not None and stream.blocks:
                    matched = self.cache.match(stream.blocks)
                    stream.cached = cached_tokens(matched, stream.prompt_tokens)
                    self.cache.insert(stream.blocks)
                await self._advance(perf.prefill_s(stream.prompt_tokens - stream.cached))
                self.prefilling = None
                if not stream.cancelled and not stream.emit():
                    self.active.append(stream)
                self._changed()
            self.active = [s for s in self.active if not s.cancelled]
            self._changed()
            if not self.active:
                continue
            kv_tokens = sum(s.prompt_tokens + s.generated for s in self.active)
            await self._advance(perf.step_s(len(self.active), kv_tokens))
            self.active = [s for s in self.active if not s.cancelled and not s.emit()]
            self._changed()

    def abort_all(self) -> None:
        """End every unfinished stream now (each gets :data:`ABORTED`, then the end mark)."""
        streams = [s for _, _, s in self.waiting] + self.active
        if self.prefilling is not None:
            streams.append(self.prefilling)
        self.waiting, self.active, self.prefilling = [], [], None
        self._changed()
        for stream in streams:
            if not stream.cancelled and stream.generated < stream.max_tokens:
                stream.tokens.put_nowait(ABORTED)
                stream.tokens.put_nowait(None)
            stream.cancelled = True

    async def drain(self, timeout_s: float) -> None:
        """Let the streams in progress finish for up to ``timeout_s``, then abort the rest."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout_s
        while (self.waiting or self.batch) and loop.time() < end:
            await asyncio.sleep(DRAIN_POLL_S)
        self.abort_all()

    async def stop(self) -> None:
        """Cancel the engine task (on shutdown)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
