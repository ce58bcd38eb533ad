"""CS-UCB's defining behaviour: exploration, constraint satisfaction, delayed feedback, regret."""

from __future__ import annotations

import json

import numpy as np

from perllm.domain import REJECT
from perllm.policies.bandit import ucb_index
from perllm.policies.registry import make_policy


def test_ucb_index_formula() -> None:
    mean = np.array([0.5, -0.2, 0.0])
    count = np.array([4.0, 1.0, 0.0])
    index = ucb_index(mean, count, total=5.0, exploration=0.3)
    assert index[0] == 0.5 + 0.3 * np.sqrt(2 * np.log(5.0) / 4.0)
    assert index[1] == -0.2 + 0.3 * np.sqrt(2 * np.log(5.0) / 1.0)
    assert index[2] == np.inf


def test_explores_every_arm_of_a_class_before_exploiting(paper_view, request_factory) -> None:
    policy = make_policy("cs-ucb", seed=1)
    arms = len(paper_view.servers) * len(policy.config.share_levels)
    chosen = [policy.select(request_factory(i, cls="batch"), paper_view).arm for i in range(arms)]
    assert sorted(chosen) == list(range(arms))
    # Another class starts its own exploration: statistics are per class.
    other = [policy.select(request_factory(i, cls="chat"), paper_view).arm for i in range(arms)]
    assert sorted(other) == list(range(arms))


def test_never_picks_an_infeasible_arm_while_a_feasible_one_is_known(
    paper_view, request_factory, feedback_factory
) -> None:
    policy = make_policy("cs-ucb", seed=2)
    # A 2-second deadline for 100 prompt + 50 output tokens: a CPU edge needs ~6 s, the A100 ~1 s.
    for i in range(300):
        request = request_factory(i, deadline_s=2.0)
        decision = policy.select(request, paper_view)
        assert paper_view.servers[decision.server].tier == "cloud", f"request {i}"
        policy.observe(feedback_factory(request, decision, energy_j=10.0, processing_s=1.0))


def test_learns_that_a_server_is_slower_than_its_spec(
    paper_view, request_factory, feedback_factory
) -> None:
    policy = make_policy("cs-ucb", seed=3)
    # Feedback says the cloud takes 40x its estimate (~9 s): with a 3 s deadline it is infeasible.
    picks = []
    for i in range(200):
        request = request_factory(i, deadline_s=3.0, prompt=20)
        decision = policy.select(request, paper_view)
        picks.append(paper_view.servers[decision.server].tier)
        slow = 40.0 if decision.server == 5 else 1.0
        policy.observe(
            feedback_factory(
                request,
                decision,
                energy_j=5.0,
                processing_s=decision.estimate_s * slow,
                met=decision.estimate_s * slow <= 3.0,
            )
        )
    assert picks[-50:].count("cloud") == 0


def test_rejects_when_nothing_is_feasible_and_admission_control_is_on(
    paper_view, request_factory
) -> None:
    policy = make_policy("cs-ucb")
    paper_view.admission_control = True
    assert policy.select(request_factory(deadline_s=0.01), paper_view) == REJECT


def test_least_violation_when_nothing_is_feasible(paper_view, request_factory) -> None:
    policy = make_policy("cs-ucb")
    decision = policy.select(request_factory(deadline_s=0.01), paper_view)
    assert not decision.reject
    assert paper_view.servers[decision.server].tier == "cloud"  # the fastest, least late


def test_pending_pulls_spread_delayed_feedback(paper_view, request_factory, feedback_factory):
    policy = make_policy("cs-ucb", seed=4)
    # Learn first that the cloud is the best arm, with feedback for every pull.
    for i in range(400):
        request = request_factory(i, cls="c")
        decision = policy.select(request, paper_view)
        energy = 5.0 if decision.server == 5 else 50.0
        policy.observe(feedback_factory(request, decision, energy_j=energy))
    # Then 2000 decisions with no feedback at all: the pending counts shrink the favourite's
    # bonus, so the others are tried again instead of everything piling onto one arm.
    arms = [policy.select(request_factory(i, cls="c"), paper_view).arm for i in range(2000)]
    counts = np.bincount(arms, minlength=12)
    assert counts.max() < 2000
    assert (counts > 0).sum() > 3


def test_regret_grows_sublinearly_on_a_stationary_problem(
    paper_view, request_factory, feedback_factory
) -> None:
    mu = np.array([60.0, 45.0, 80.0, 70.0, 55.0, 20.0])  # mean energy per server
    rng = np.random.default_rng(7)
    policy = make_policy("cs-ucb", seed=7)
    horizon = 4000
    regret = np.zeros(horizon)
    for i in range(horizon):
        request = request_factory(i, cls="stationary")
        decision = policy.select(request, paper_view)
        energy = max(rng.normal(mu[decision.server], 5.0), 0.1)
        policy.observe(feedback_factory(request, decision, energy_j=energy))
        regret[i] = mu[decision.server] - mu.min()
    cumulative = np.cumsum(regret)
    t = horizon // 4
    assert cumulative[horizon - 1] < 2.5 * cumulative[t - 1]
    assert cumulative[t - 1] > 0  # it did have to learn


def test_state_round_trips_through_json(paper_view, request_factory, feedback_factory) -> None:
    policy = make_policy("cs-ucb", seed=5)
    for i in range(100):
        request = request_factory(i, cls=("a", "b")[i % 2])
        decision = policy.select(request, paper_view)
        policy.observe(feedback_factory(request, decision, energy_j=1.0 + decision.server))
    saved = json.loads(json.dumps(policy.state()))
    restored = make_policy("cs-ucb", seed=6)
    restored.restore(saved)
    assert json.loads(json.dumps(restored.state())) == saved
    # The restored policy exploits what was learned: no fresh exploration of class "a".
    decision = restored.select(request_factory(1000, cls="a"), paper_view)
    assert decision.arm >= 0
    again = restored.state()["arms"]["count"]
    assert again == saved["arms"]["count"]
