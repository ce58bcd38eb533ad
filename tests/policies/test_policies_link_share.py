"""Link shares by urgency: the rule, and how CS-UCB applies it."""

from __future__ import annotations

import dataclasses

import pytest

from perllm import physics
from perllm.policies.link_share import SHARE_FLOOR, URGENT_S, urgency_share
from perllm.policies.registry import make_policy


def test_the_share_is_tau_over_the_time_to_spare_between_the_floor_and_one() -> None:
    assert urgency_share(-5.0) == urgency_share(0.0) == urgency_share(URGENT_S) == 1.0
    assert urgency_share(1.0) == pytest.approx(URGENT_S / 1.0)
    assert urgency_share(100.0) == pytest.approx(URGENT_S / 100.0)
    assert urgency_share(1e9) == SHARE_FLOOR
    budgets = [0.2, 0.5, 3.0, 40.0, 900.0]
    shares = [urgency_share(b) for b in budgets]
    assert shares == sorted(shares, reverse=True)


def test_an_urgent_upload_gets_more_of_the_link_than_a_lenient_one(
    paper_view, request_factory
) -> None:
    policy = make_policy("cs-ucb", seed=1)
    photo = dataclasses.replace(request_factory(0, deadline_s=8.0), request_bytes=600_000)
    document = dataclasses.replace(request_factory(1, deadline_s=600.0), request_bytes=6_000_000)
    urgent, lenient = policy.select(photo, paper_view), policy.select(document, paper_view)
    assert urgent.share > 20 * lenient.share
    assert lenient.share >= SHARE_FLOOR
    # The share comes from the time to spare: deadline less the rest of the processing.
    rtt = paper_view.links[paper_view.servers[urgent.server].link].rtt_s
    transfer = physics.transfer_s(
        photo.request_bytes + physics.response_bytes(128.0),
        float(paper_view.bandwidth[urgent.server]),
        rtt,
        urgent.share,
        0.0,
    )
    rest = urgent.estimate_s - transfer
    assert urgent.share == pytest.approx(urgency_share(photo.deadline_s - rest - rtt))


def test_the_estimate_counts_the_transfers_a_small_share_waits_behind(
    paper_view, request_factory
) -> None:
    document = dataclasses.replace(request_factory(0, deadline_s=600.0), request_bytes=6_000_000)
    alone = make_policy("cs-ucb", seed=2).select(document, paper_view)
    paper_view.active_weight[:] = 1.0  # an urgent transfer on every link
    behind = make_policy("cs-ucb", seed=2).select(document, paper_view)
    assert behind.server == alone.server
    assert behind.share == pytest.approx(alone.share, rel=1e-6)
    wire = physics.wire_s(document.request_bytes + physics.response_bytes(128.0), 100.0)
    # At a share z behind a weight of 1 it takes about wire * (1 + 1 / z): far longer.
    assert behind.estimate_s - alone.estimate_s > 10 * wire


def test_a_deflected_request_gets_the_least_share(paper_view, request_factory) -> None:
    decision = make_policy("cs-ucb").select(request_factory(deadline_s=0.01), paper_view)
    assert not decision.reject
    assert decision.share == SHARE_FLOOR


def test_without_shares_by_urgency_every_transfer_weighs_the_same(
    paper_view, request_factory
) -> None:
    policy = make_policy("cs-ucb", {"share-by-urgency": False})
    for i, deadline in enumerate((8.0, 600.0, 0.01)):
        assert policy.select(request_factory(i, deadline_s=deadline), paper_view).share == 1.0
