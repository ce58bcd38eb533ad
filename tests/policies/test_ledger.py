"""A request's memo: kept in one ledger the policy owns from the decision to the outcome, and
released exactly once, by its feedback or by ``forget``; a Decision carries none of it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from perllm.domain import Decision
from perllm.policies.ledger import ANSWERED, DROPPED, PENDING, Ledger, Pull
from perllm.policies.registry import make_policy

LEARNING = ["cs-ucb", "ucb1", "epsilon-greedy"]


def test_a_memo_is_released_once_and_records_how_its_request_ended() -> None:
    ledger: Ledger[Pull] = Ledger()
    memo = Pull(0, 3)
    ledger.place(7, memo)
    assert 7 in ledger and len(ledger) == 1 and ledger.get(7) is memo
    assert memo.outcome == PENDING
    assert ledger.release(7, ANSWERED) is memo and memo.outcome == ANSWERED
    assert ledger.release(7, DROPPED) is None and memo.outcome == ANSWERED
    assert 7 not in ledger and ledger.get(7) is None and len(ledger) == 0


def test_a_decision_carries_only_what_the_worlds_need() -> None:
    fields = {field.name for field in dataclasses.fields(Decision)}
    assert fields == {"server", "share", "reject", "estimate_s", "priority"}


def _learned(policy: object) -> float:
    totals = policy.shared_stats()  # type: ignore[attr-defined]
    return sum(v for k, v in totals.items() if "|count|" in k)


@pytest.mark.parametrize("name", LEARNING)
def test_feedback_releases_the_memo_once(
    name: str, paper_view, request_factory, feedback_factory
) -> None:
    policy = make_policy(name, seed=1)
    request = request_factory(deadline_s=600.0)
    decision = policy.select(request, paper_view)
    assert len(policy.ledger) == 1
    feedback = feedback_factory(request, decision, energy_j=5.0)
    policy.observe(feedback)
    assert len(policy.ledger) == 0
    learned = _learned(policy)
    assert learned > 0
    policy.observe(feedback)  # a second report of the same request: nothing left to learn from
    assert _learned(policy) == learned
    if name == "cs-ucb":
        assert policy.outstanding.counts.sum() == 0
    else:
        assert policy.arms.pending.sum() == 0


@pytest.mark.parametrize("name", LEARNING)
def test_a_forgotten_request_teaches_nothing_when_its_feedback_comes_anyway(
    name: str, paper_view, request_factory, feedback_factory
) -> None:
    policy = make_policy(name, seed=1)
    request = request_factory(deadline_s=600.0)
    decision = policy.select(request, paper_view)
    policy.forget(request, decision)
    policy.forget(request, decision)  # twice: released once
    assert len(policy.ledger) == 0
    policy.observe(feedback_factory(request, decision, energy_j=5.0))
    assert _learned(policy) == 0


def test_cs_ucb_keeps_its_estimates_in_the_memo(paper_view, request_factory) -> None:
    policy = make_policy("cs-ucb", seed=1)
    request = request_factory(deadline_s=30.0)
    decision = policy.select(request, paper_view)
    memo = policy.ledger.get(request.id)
    assert memo is not None
    assert (memo.server, memo.priority) == (decision.server, decision.priority)
    assert memo.estimate_s == decision.estimate_s  # what the gateway reports to the client
    assert memo.estimate_j > 0 and 0.0 <= memo.miss_probability <= 1.0
    # Its entry in the server's queue order is the memo's.
    row = policy.outstanding.priorities[memo.server, : policy.outstanding.counts[memo.server]]
    assert np.array_equal(row, [memo.priority])


def test_a_request_run_elsewhere_than_placed_teaches_no_correction(
    paper_view, request_factory, feedback_factory
) -> None:
    # The gateway may run a request on another backend than the policy chose (its choice had
    # become unusable): the estimates were of the chosen server, so no correction is learned
    # from it; its output length still is.
    policy = make_policy("cs-ucb", seed=1)
    request = request_factory(deadline_s=600.0)
    decision = policy.select(request, paper_view)
    moved = dataclasses.replace(decision, server=(decision.server + 1) % len(paper_view.servers))
    policy.observe(feedback_factory(request, moved, energy_j=5.0))
    assert policy.times.count.sum() == policy.energy.count.sum() == 0
    assert policy.lengths.state()["count"] == {request.service_class: 1}
    assert policy.outstanding.counts.sum() == 0
