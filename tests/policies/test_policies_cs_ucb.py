"""CS-UCB's defining behaviour: load-aware energy, learning energy and time, constraint
satisfaction, earliest-deadline priority, deflection under overload, state."""

from __future__ import annotations

import json

import numpy as np
import pytest

from perllm.domain import REJECT
from perllm.policies.bandit import ucb_index
from perllm.policies.cs_ucb import DEFLECTED_PRIORITY
from perllm.policies.registry import make_policy


def test_ucb_index_formula() -> None:
    mean = np.array([0.5, -0.2, 0.0])
    count = np.array([4.0, 1.0, 0.0])
    index = ucb_index(mean, count, total=5.0, exploration=0.3)
    assert index[0] == 0.5 + 0.3 * np.sqrt(2 * np.log(5.0) / 4.0)
    assert index[1] == -0.2 + 0.3 * np.sqrt(2 * np.log(5.0) / 1.0)
    assert index[2] == np.inf


def test_a_busy_cloud_gpu_is_recognised_as_cheap(paper_view, request_factory) -> None:
    policy = make_policy("cs-ucb", seed=1)
    lenient = request_factory(deadline_s=600.0, prompt=50)
    # Every server idle: the A100 costs less than a CPU edge even paying its whole step.
    assert paper_view.servers[policy.select(lenient, paper_view).server].tier == "cloud"
    # The estimate is marginal: at a batch of 40 a request adds little to what the A100 draws.
    paper_view.running[5] = 40
    busy = policy.select(request_factory(1, deadline_s=600.0, prompt=50), paper_view)
    paper_view.running[5] = 0
    idle = policy.select(request_factory(2, deadline_s=600.0, prompt=50), paper_view)
    assert busy.server == idle.server == 5
    assert busy.estimate_j < idle.estimate_j


def test_learns_that_a_server_uses_more_energy_than_its_spec(
    paper_view, request_factory, feedback_factory
) -> None:
    policy = make_policy("cs-ucb", seed=2)
    # True energy multipliers against the spec: the A100 really draws 4x its spec (costlier than
    # any edge); edge-1 is the most frugal. Only the chosen arm's energy is revealed.
    multiplier = np.array([1.0, 0.6, 1.2, 1.5, 1.1, 4.0])
    rng = np.random.default_rng(2)
    picks = []
    for i in range(400):
        request = request_factory(i, deadline_s=600.0, prompt=50)
        decision = policy.select(request, paper_view)
        picks.append(decision.server)
        energy = decision.estimate_j * multiplier[decision.server] * rng.lognormal(0.0, 0.1)
        policy.observe(feedback_factory(request, decision, energy_j=energy))
    late = picks[-100:]
    assert picks[0] == 5  # the datasheet's favourite is tried first
    assert late.count(1) >= 90, np.bincount(late, minlength=6)


def test_earliest_deadline_priority_lets_a_tight_request_pass_a_lenient_queue(
    paper_view, request_factory
) -> None:
    for deadline_priority, tier in ((True, "cloud"), (False, "edge")):
        policy = make_policy("cs-ucb", {"deadline-priority": deadline_priority}, seed=3)
        paper_view.running[:] = 0
        paper_view.queued[:] = 0
        for i in range(160):  # lenient requests fill the A100's batch and queue
            decision = policy.select(request_factory(i, deadline_s=900.0, prompt=50), paper_view)
            assert decision.server == 5
        paper_view.running[5], paper_view.queued[5] = 48, 2000
        paper_view.running[:5] = 4  # every edge's batch is full too
        tight = request_factory(200, deadline_s=40.0, prompt=50)
        decision = policy.select(tight, paper_view)
        assert paper_view.servers[decision.server].tier == tier, deadline_priority
        if deadline_priority:
            assert decision.priority == int((tight.arrival_s + tight.deadline_s) * 1000)


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


def test_a_hopeless_request_is_deflected_behind_every_feasible_one(
    paper_view, request_factory
) -> None:
    policy = make_policy("cs-ucb")
    feasible = policy.select(request_factory(0, deadline_s=600.0), paper_view)
    hopeless = policy.select(request_factory(1, deadline_s=0.01), paper_view)
    assert not hopeless.reject
    assert paper_view.servers[hopeless.server].tier == "cloud"  # where it ends soonest
    assert hopeless.priority > feasible.priority
    assert hopeless.priority >= DEFLECTED_PRIORITY


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
    # The restored policy decides as the original does from the same state.
    request = request_factory(1000, cls="a")
    assert restored.select(request, paper_view).server == policy.select(request, paper_view).server
    assert restored.state()["times"] == saved["times"]
    assert restored.state()["energy"] == saved["energy"]


def test_restoring_state_of_another_cluster_is_refused(paper_view, request_factory) -> None:
    policy = make_policy("cs-ucb")
    policy.select(request_factory(), paper_view)
    state = policy.state()
    state["n_servers"] = 3
    other = make_policy("cs-ucb")
    other.restore(state)
    with pytest.raises(ValueError, match="3 servers"):
        other.select(request_factory(), paper_view)


def test_an_arm_where_the_request_starts_at_once_goes_before_a_queue(
    paper_view, request_factory
) -> None:
    lenient = request_factory(deadline_s=600.0, prompt=50)
    paper_view.running[5], paper_view.queued[5] = 48, 10  # the A100's batch is full
    prefer = make_policy("cs-ucb", seed=1)
    assert paper_view.servers[prefer.select(lenient, paper_view).server].tier == "edge"
    # Without the preference, the queue of the cheaper A100 is joined.
    cheapest = make_policy("cs-ucb", {"prefer-free-slots": False}, seed=1)
    assert paper_view.servers[cheapest.select(lenient, paper_view).server].tier == "cloud"


def test_time_is_learned_apart_for_a_crowded_batch(
    paper_view, request_factory, feedback_factory
) -> None:
    policy = make_policy("cs-ucb", seed=8)
    # The A100 takes 20x its estimate when its batch is at least half full, 1x otherwise.
    for i in range(300):
        crowded = i % 2 == 1
        paper_view.running[5] = 40 if crowded else 0
        request = request_factory(i, deadline_s=12.0, prompt=20)
        decision = policy.select(request, paper_view)
        factor = 20.0 if crowded and decision.server == 5 else 1.0
        taken = decision.estimate_s * factor
        energy = decision.estimate_j  # energy as the model says: only time is learned here
        policy.observe(
            feedback_factory(
                request, decision, energy_j=energy, processing_s=taken, met=taken <= 12
            )
        )
    paper_view.running[5] = 0
    assert policy.select(request_factory(1000, deadline_s=12.0, prompt=20), paper_view).server == 5
    paper_view.running[5] = 40
    assert policy.select(request_factory(1001, deadline_s=12.0, prompt=20), paper_view).server != 5
