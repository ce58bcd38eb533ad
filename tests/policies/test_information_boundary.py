"""The information boundary: online policies cannot read the ground truth.

A policy is handed :class:`~perllm.domain.RouterRequest` (no true output length, no true response
size). The test permutes the true output lengths among the requests of a trace and checks that
every non-clairvoyant policy makes exactly the same decisions on the same view; the clairvoyant
oracle, which may read the truth, is the positive control: its decisions do change.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from perllm.cluster.scenario import load as load_scenario
from perllm.domain import Decision, Request, RouterRequest
from perllm.policies.registry import ENTRIES, make_policy
from perllm.prefix import BLOCK_TOKENS
from perllm.sim.world import World
from perllm.workload.generator import generate_requests

ONLINE = [entry.name for entry in ENTRIES if not entry.clairvoyant]


def _permuted(requests: list[Request], seed: int) -> list[Request]:
    """The same requests with their true output lengths (and response sizes) shuffled."""
    order = np.random.default_rng(seed).permutation(len(requests))
    return [
        dataclasses.replace(
            r,
            output_tokens=requests[j].output_tokens,
            response_bytes=requests[j].response_bytes,
        )
        for r, j in zip(requests, order, strict=True)
    ]


def _decisions(policy_name: str, requests: list[Request]) -> list[Decision]:
    """Decisions of a fresh policy on the requests, each on a view with a load drawn from a
    fixed stream (the same for every trace), without any feedback."""
    cluster = load_scenario("perllm-paper")
    world = World(cluster, make_policy(policy_name, seed=3), requests)
    rng = np.random.default_rng(11)
    decisions = []
    for request in requests:
        world.queued[:] = rng.integers(0, 6, len(world.servers))
        world.running[:] = rng.integers(0, 4, len(world.servers))
        world.tokens[:] = (world.running + world.queued) * 300
        decisions.append(world.policy.select(request.routed, world.view))
    return decisions


@pytest.fixture(scope="module")
def traces() -> tuple[list[Request], list[Request]]:
    cluster = load_scenario("perllm-paper")
    requests = generate_requests(cluster.workload, 300, seed=5)
    permuted = _permuted(requests, seed=6)
    assert [r.output_tokens for r in requests] != [r.output_tokens for r in permuted]
    return requests, permuted


def test_the_routed_request_carries_no_ground_truth() -> None:
    fields = {f.name for f in dataclasses.fields(RouterRequest)}
    assert "output_tokens" not in fields
    assert "response_bytes" not in fields


def test_a_request_is_its_routed_request_and_the_truth_not_a_router_request() -> None:
    assert not issubclass(Request, RouterRequest)
    names = [f.name for f in dataclasses.fields(Request)]
    assert names == ["routed", "output_tokens", "response_bytes"]
    request = Request.of(7, 1.5, "chat", 10, 20, 40, 600, 9.0, "m", prefix_blocks=(1, 2))
    assert request.routed == RouterRequest(7, 1.5, "chat", 10, 40, 9.0, "m", None, (1, 2))
    assert (request.output_tokens, request.response_bytes) == (20, 600)


@pytest.mark.parametrize("name", ONLINE)
def test_online_decisions_do_not_depend_on_true_output_lengths(
    name: str, traces: tuple[list[Request], list[Request]]
) -> None:
    original, permuted = traces
    assert _decisions(name, original) == _decisions(name, permuted)


def test_the_oracle_reads_the_truth_so_the_check_can_fail(
    traces: tuple[list[Request], list[Request]],
) -> None:
    original, permuted = traces
    assert _decisions("oracle", original) != _decisions("oracle", permuted)


def _routed(request: Request, **changes: Any) -> Request:
    """``request`` with ``changes`` to what its router sees."""
    return dataclasses.replace(request, routed=dataclasses.replace(request.routed, **changes))


def _with_blocks(requests: list[Request], seed: int) -> list[Request]:
    """The requests with prompt blocks drawn from a small pool of shared prefixes."""
    rng = np.random.default_rng(seed)
    return [
        _routed(r, prefix_blocks=tuple(int(b) for b in rng.integers(0, 4) * 10 + range(3)))
        for r in requests
    ]


def _prefix_decisions(
    policy_name: str, requests: list[Request], permute_cache: bool, record_seed: int = 0
) -> list[Decision]:
    """Decisions on a view whose router record holds some of the prefixes, with the servers'
    true caches as filled or permuted among the servers."""
    cluster = load_scenario("perllm-paper")
    world = World(cluster, make_policy(policy_name, seed=3), requests)
    record = world.prefix_record
    assert record is not None
    rng = np.random.default_rng(record_seed)
    for server in range(len(world.servers)):
        record.sent(server, [int(rng.integers(0, 4)) * 10 + k for k in range(3)])
        world.servers[server].prefix.insert([server * 10 + k for k in range(3)])
    if permute_cache:
        caches = [engine.prefix for engine in world.servers]
        for engine, cache in zip(world.servers, caches[::-1], strict=True):
            engine.prefix = cache
    return [world.policy.select(request.routed, world.view) for request in requests]


@pytest.mark.parametrize("name", ONLINE)
def test_online_decisions_do_not_depend_on_the_true_prefix_caches(
    name: str, traces: tuple[list[Request], list[Request]]
) -> None:
    requests = _with_blocks(traces[0][:60], seed=7)
    assert _prefix_decisions(name, requests, False) == _prefix_decisions(name, requests, True)


def test_the_router_record_steers_prefix_affinity_so_the_check_can_fail(
    traces: tuple[list[Request], list[Request]],
) -> None:
    requests = [
        _routed(r, prompt_tokens=3 * BLOCK_TOKENS) for r in _with_blocks(traces[0][:60], seed=7)
    ]
    one = _prefix_decisions("prefix-affinity", requests, False, record_seed=1)
    other = _prefix_decisions("prefix-affinity", requests, False, record_seed=2)
    assert one != other
