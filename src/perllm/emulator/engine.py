"""Continuous batching in asyncio, timed by the perf model (or instant).

One engine task loops while streams are active or waiting:

1. admit waiting streams while the batch has room (``max_batch``); each admission runs its
   prefill, ``perf.prefill_s(prompt_tokens)``, which pauses the loop, and yields its first token;
2. run one decode step, ``perf.step_s(batch, kv_tokens)`` with ``kv_tokens`` the prompt and
   generated tokens of every active stream, after which each active stream gets one token;
3. streams that reached their ``max_tokens`` (or whose client went away) leave the batch.

Every duration is multiplied by ``time_scale`` (0 runs without waiting). The engine keeps its
own schedule, so the small overshoots of each sleep do not add up; when it falls more than
:data:`MAX_LAG_S` behind (a starved CPU), it restarts its schedule from the present.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from dataclasses import dataclass, field

from perllm.domain import ServerPerf

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
    """

    def __init__(self, perf: ServerPerf | None, max_batch: int, time_scale: float = 1.0) -> None:
        self.perf = perf
        self.max_batch = max_batch
        self.time_scale = time_scale
        self.waiting: list[tuple[int, int, Stream]] = []
        self._seq = itertools.count()
        self.active: list[Stream] = []
        self._task: asyncio.Task[None] | None = None
        self._clock = 0.0

    @property
    def batch(self) -> int:
        return len(self.active)

    def submit(self, prompt_tokens: int, max_tokens: int, priority: int = 0) -> Stream:
        """Queue a request; its tokens arrive on the returned stream's ``tokens`` queue."""
        stream = Stream(prompt_tokens, max(max_tokens, 1))
        if self.perf is None:
            while not stream.emit():
                pass
            return stream
        heapq.heappush(self.waiting, (priority, next(self._seq), stream))
        if self._task is None or self._task.done():
            self._clock = asyncio.get_running_loop().time()
            self._task = asyncio.create_task(self._run(), name="emulator-engine")
        return stream

    async def _advance(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        target = self._clock + seconds * self.time_scale
        if target < now - MAX_LAG_S:
            target = now
        self._clock = target
        await asyncio.sleep(max(target - now, 0.0))

    async def _run(self) -> None:
        perf = self.perf
        assert perf is not None
        while self.waiting or self.active:
            while self.waiting and len(self.active) < self.max_batch:
                stream = heapq.heappop(self.waiting)[2]
                if stream.cancelled:
                    continue
                await self._advance(perf.prefill_s(stream.prompt_tokens))
                if not stream.emit():
                    self.active.append(stream)
            self.active = [s for s in self.active if not s.cancelled]
            if not self.active:
                continue
            kv_tokens = sum(s.prompt_tokens + s.generated for s in self.active)
            await self._advance(perf.step_s(len(self.active), kv_tokens))
            self.active = [s for s in self.active if not s.cancelled and not s.emit()]

    def abort_all(self) -> None:
        """End every unfinished stream now (each gets :data:`ABORTED`, then the end mark)."""
        streams = [s for _, _, s in self.waiting] + self.active
        self.waiting, self.active = [], []
        for stream in streams:
            if not stream.cancelled and stream.generated < stream.max_tokens:
                stream.tokens.put_nowait(ABORTED)
                stream.tokens.put_nowait(None)
            stream.cancelled = True

    async def drain(self, timeout_s: float) -> None:
        """Let the streams in progress finish for up to ``timeout_s``, then abort the rest."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout_s
        while (self.waiting or self.active) and loop.time() < end:
            await asyncio.sleep(DRAIN_POLL_S)
        self.abort_all()

    async def stop(self) -> None:
        """Cancel the engine task (on shutdown)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
