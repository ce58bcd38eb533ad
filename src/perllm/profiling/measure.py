"""The measurement sweep of ``perllm profile``.

Two phases against a live server, after one warm-up call:

1. *prefill*: for each prompt length, ``repeats`` single streams with a few output tokens; each
   gives a time to first token (prefill) and a decode point at batch 1 whose KV cache holds
   ``prompt + tokens / 2`` tokens on average;
2. *decode*: for each concurrency ``c``, ``c`` streams sent at once; each stream's time per
   output token is a decode point. Its batch is ``1 +`` the share of its decode window during
   which each other stream was decoding too, so a server that serialises requests (llama.cpp's
   Python server) shows batch 1 at any concurrency, and a batching server shows batch ``c``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import httpx
import numpy as np

from perllm.profiling.client import (
    StreamTiming,
    count_tokens,
    make_prompt,
    stream_completion,
)

# Tokens of the prompt that are not the random words (number, newline, instruction), roughly.
_PROMPT_OVERHEAD_TOKENS = 24

__all__ = ["DecodePoint", "Measurements", "PrefillPoint", "SweepPlan", "measure"]


@dataclass(frozen=True, slots=True)
class SweepPlan:
    """What to measure (lengths in tokens)."""

    prompt_lengths: tuple[int, ...] = (32, 128, 256, 512)
    concurrency: tuple[int, ...] = (1, 2, 4)
    repeats: int = 3
    prefill_output_tokens: int = 16
    decode_output_tokens: int = 64
    decode_prompt_tokens: int = 64
    seed: int = 0

    def calls(self) -> int:
        """Number of completions the sweep sends (warm-up included)."""
        return 1 + len(self.prompt_lengths) * self.repeats + sum(self.concurrency)


@dataclass(frozen=True, slots=True)
class PrefillPoint:
    prompt_tokens: int
    ttft_s: float


@dataclass(frozen=True, slots=True)
class DecodePoint:
    concurrency: int
    batch: float
    kv_tokens: float
    tpot_s: float
    tokens: int


@dataclass(frozen=True, slots=True)
class Measurements:
    """Measured points plus the busy intervals ``(concurrency, seconds)`` and total seconds."""

    prefill: tuple[PrefillPoint, ...]
    decode: tuple[DecodePoint, ...]
    busy: tuple[tuple[int, float], ...]
    seconds: float


def effective_batches(streams: Sequence[StreamTiming]) -> list[float]:
    """For each stream, 1 + the overlap of the other streams' decode windows with its own."""
    windows = [(s.chunk_s[0], s.chunk_s[-1]) for s in streams]
    batches = []
    for i, (a0, a1) in enumerate(windows):
        length = a1 - a0
        overlap = sum(
            max(0.0, min(a1, b1) - max(a0, b0)) for j, (b0, b1) in enumerate(windows) if j != i
        )
        batches.append(1.0 + (overlap / length if length > 0 else 0.0))
    return batches


def _decode_point(stream: StreamTiming, concurrency: int, batch: float) -> DecodePoint | None:
    if stream.tokens < 3:
        return None
    kv = batch * (stream.prompt_tokens + stream.tokens / 2.0)
    return DecodePoint(concurrency, batch, kv, stream.tpot_s, stream.tokens)


async def _sweep(
    endpoint: str, model: str, plan: SweepPlan, advance: Callable[[int], None]
) -> Measurements:
    rng = np.random.default_rng(plan.seed)
    prefill: list[PrefillPoint] = []
    decode: list[DecodePoint] = []
    busy: list[tuple[int, float]] = []
    start = time.monotonic()
    with httpx.Client(timeout=30.0) as sync_client:

        def prompt_for(tokens: int) -> tuple[str, int]:
            text = make_prompt(rng, tokens - _PROMPT_OVERHEAD_TOKENS)
            counted = count_tokens(sync_client, endpoint, model, text)
            return text, counted if counted is not None else tokens

        timeout = httpx.Timeout(600.0, connect=10.0)
        async with httpx.AsyncClient(timeout=timeout) as client:
            text, n = prompt_for(plan.decode_prompt_tokens)
            await stream_completion(client, endpoint, model, text, n, 4)  # warm-up
            advance(1)
            for length in plan.prompt_lengths:
                for _ in range(plan.repeats):
                    text, n = prompt_for(length)
                    s = await stream_completion(
                        client, endpoint, model, text, n, plan.prefill_output_tokens
                    )
                    busy.append((1, s.chunk_s[-1] - s.sent_s if s.chunk_s else 0.0))
                    if s.chunk_s:
                        prefill.append(PrefillPoint(n, s.ttft_s))
                    point = _decode_point(s, 1, 1.0)
                    if point is not None:
                        decode.append(point)
                    advance(1)
            for c in plan.concurrency:
                prompts = [prompt_for(plan.decode_prompt_tokens) for _ in range(c)]
                t0 = time.monotonic()
                streams = await asyncio.gather(
                    *(
                        stream_completion(client, endpoint, model, t, n, plan.decode_output_tokens)
                        for t, n in prompts
                    )
                )
                busy.append((c, time.monotonic() - t0))
                good = [s for s in streams if s.tokens >= 3]
                for s, b in zip(good, effective_batches(good), strict=True):
                    point = _decode_point(s, c, b)
                    if point is not None:
                        decode.append(point)
                advance(c)
    return Measurements(tuple(prefill), tuple(decode), tuple(busy), time.monotonic() - start)


def measure(
    endpoint: str, model: str, plan: SweepPlan, advance: Callable[[int], None] | None = None
) -> Measurements:
    """Run the sweep against ``endpoint`` (a server root such as ``http://host:port``)."""
    return asyncio.run(_sweep(endpoint, model, plan, advance or (lambda _n: None)))
