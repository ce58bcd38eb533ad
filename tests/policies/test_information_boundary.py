"""The information boundary: online policies cannot read the ground truth.

A policy is handed :class:`~perllm.domain.RouterRequest` (no true output length, no true response
size). The test permutes the true output lengths among the requests of a trace and checks that
every non-clairvoyant policy makes exactly the same decisions on the same view; the clairvoyant
oracle, which may read the truth, is the positive control: its decisions do change.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from perllm.cluster.scenario import load as load_scenario
from perllm.domain import Decision, Request, RouterRequest
from perllm.policies.registry import ENTRIES, make_policy
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
