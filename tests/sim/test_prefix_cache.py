"""Prefix reuse: block hashes, a server's LRU cache, the router's record, and the simulated
server skipping the prefill of a cached prefix."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from perllm.domain import Decision, PowerSpec, Request, ServerSpec
from perllm.perf.model import deployment
from perllm.physics import CHARS_PER_TOKEN
from perllm.prefix import BLOCK_TOKENS, BlockLRU, PrefixRecord, cached_tokens, prompt_blocks
from perllm.sim.server import Job, ServerEngine

BLOCK_CHARS = int(BLOCK_TOKENS * CHARS_PER_TOKEN)
_ids = itertools.count()


def test_shared_leading_text_shares_leading_blocks_and_nothing_after() -> None:
    system = "s" * (2 * BLOCK_CHARS)
    first = prompt_blocks(system + "a" * BLOCK_CHARS + "tail")
    second = prompt_blocks(system + "b" * BLOCK_CHARS)
    assert len(first) == len(second) == 3  # the partial tail block is not named
    assert first[:2] == second[:2]
    assert first[2] != second[2]
    # Chained: the same block text after a different prefix is a different block.
    assert prompt_blocks("x" * BLOCK_CHARS + "a" * BLOCK_CHARS)[1] != first[2]
    assert prompt_blocks("short") == ()
    assert all(isinstance(b, int) and b >= 0 for b in first)


def test_the_lru_matches_leading_blocks_and_evicts_the_least_recently_used() -> None:
    lru = BlockLRU(3)
    assert lru.insert([1, 2, 3]) == []
    assert lru.match([1, 2, 3, 4]) == 3
    assert lru.match([2, 3]) == 2
    assert lru.match([9, 1]) == 0  # a prefix must match from its first block
    lru.insert([1])  # 1 is now the most recently used: 2 goes first
    assert lru.insert([4]) == [2]
    assert lru.match([1, 2]) == 1
    assert BlockLRU(0).insert([5]) == [5]


def test_cached_tokens_leave_one_token_to_compute() -> None:
    assert cached_tokens(2, 5 * BLOCK_TOKENS) == 2 * BLOCK_TOKENS
    assert cached_tokens(3, 3 * BLOCK_TOKENS) == 3 * BLOCK_TOKENS - 1
    assert cached_tokens(0, 100) == 0
    assert cached_tokens(1, 0) == 0


def test_the_record_gives_each_server_its_longest_sent_prefix() -> None:
    record = PrefixRecord([10, 10, 2])
    record.sent(0, [1, 2, 3])
    record.sent(1, [1, 2])
    record.sent(2, [1, 7])
    prompt = 10 * BLOCK_TOKENS
    tokens = record.tokens([1, 2, 3, 4], prompt)
    assert tokens.tolist() == [3 * BLOCK_TOKENS, 2 * BLOCK_TOKENS, BLOCK_TOKENS]
    assert not record.tokens([5, 1], prompt).any()
    assert not record.tokens([], prompt).any()
    # Server 2 holds two blocks: sending two more evicts 1 and 7 from its record.
    record.sent(2, [8, 9])
    assert record.tokens([1, 7], prompt).tolist() == [BLOCK_TOKENS, BLOCK_TOKENS, 0.0]


def test_a_record_sized_from_kv_capacity_holds_that_many_blocks() -> None:
    record = PrefixRecord.for_servers([3 * BLOCK_TOKENS + 5])
    record.sent(0, [1, 2, 3, 4])
    assert record.tokens([2, 3, 4], 10 * BLOCK_TOKENS).tolist() == [3 * BLOCK_TOKENS]
    assert record.tokens([1], 10 * BLOCK_TOKENS).tolist() == [0.0]


def _spec(kv_capacity: int = 200_000) -> ServerSpec:
    return ServerSpec(
        name="s0",
        tier="cloud",
        hardware="test",
        model="test",
        max_batch=8,
        kv_capacity_tokens=kv_capacity,
        perf=deployment("a100-80gb", "llama-3.1-8b", "fp16").perf(),
        power=PowerSpec(idle_w=60.0, max_w=400.0),
        link="wan",
    )


def _job(prompt: int, blocks: tuple[int, ...]) -> Job:
    request = Request.of(
        id=next(_ids),
        arrival_s=0.0,
        service_class="chat",
        prompt_tokens=prompt,
        output_tokens=1,
        request_bytes=4 * prompt,
        response_bytes=4,
        deadline_s=1e9,
        prefix_blocks=blocks,
    )
    return Job(request, Decision(server=0), dispatch_s=0.0)


def _prefill_alone(engine: ServerEngine, job: Job, now: float) -> float:
    """Run ``job`` alone on an idle ``engine`` from ``now``; its prefill time."""
    engine.add(job, now)
    while np.isnan(job.finish_s):
        engine.wakeup(engine.next_event_s())
    return job.first_token_s - job.start_s


def test_a_cached_prefix_skips_its_prefill() -> None:
    engine = ServerEngine(_spec())
    perf = engine.perf
    prompt = 4 * BLOCK_TOKENS
    first = _job(prompt, (1, 2, 3, 4))
    assert _prefill_alone(engine, first, 0.0) == pytest.approx(perf.prefill_s(prompt))
    assert first.cached_tokens == 0
    follow_up = _job(prompt + 100, (1, 2, 3, 4, 5))
    seconds = _prefill_alone(engine, follow_up, 10.0)
    assert follow_up.cached_tokens == 4 * BLOCK_TOKENS
    assert seconds == pytest.approx(perf.prefill_s(100))
    stranger = _job(prompt, (9, 2, 3, 4))  # the same later blocks after another first one
    assert _prefill_alone(engine, stranger, 20.0) == pytest.approx(perf.prefill_s(prompt))
    assert stranger.cached_tokens == 0


def test_evicted_prefixes_are_prefilled_again() -> None:
    engine = ServerEngine(_spec(kv_capacity=3 * BLOCK_TOKENS))  # room for three blocks
    prompt = 2 * BLOCK_TOKENS
    _prefill_alone(engine, _job(prompt, (1, 2)), 0.0)
    _prefill_alone(engine, _job(prompt, (3, 4)), 10.0)  # evicts block 1
    again = _job(prompt, (1, 2))
    _prefill_alone(engine, again, 20.0)
    assert again.cached_tokens == 0


def test_a_prediction_leaves_the_true_cache_untouched() -> None:
    engine = ServerEngine(_spec())
    probe = engine.predict(_job(BLOCK_TOKENS * 2, (1, 2)), 0.0)
    assert probe.first_token_s > 0.0
    assert engine.prefix.match([1, 2]) == 0
