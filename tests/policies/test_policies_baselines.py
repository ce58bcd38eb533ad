"""Each baseline's defining behaviour."""

from __future__ import annotations

import numpy as np
import pytest

from perllm.errors import InputError
from perllm.policies.registry import ENTRIES, REGISTRY, make_policy


def test_every_policy_is_registered_with_a_description() -> None:
    expected = {
        "cs-ucb",
        "random",
        "round-robin",
        "least-loaded",
        "cloud-only",
        "edge-only",
        "prefix-affinity",
        "greedy-latency",
        "greedy-energy",
        "feasible-energy",
        "feasible-latency",
        "ucb1",
        "epsilon-greedy",
        "oracle",
        "planner",
    }
    assert expected == set(REGISTRY)
    for entry in ENTRIES:
        assert entry.summary


def test_cloud_only_never_picks_an_edge(paper_view, request_factory) -> None:
    policy = make_policy("cloud-only")
    rng = np.random.default_rng(0)
    for i in range(200):
        paper_view.queued[:] = rng.integers(0, 10, len(paper_view.servers))
        decision = policy.select(request_factory(i), paper_view)
        assert paper_view.servers[decision.server].tier == "cloud"


def test_edge_only_never_picks_the_cloud_and_prefers_the_emptiest_edge(
    paper_view, request_factory
) -> None:
    policy = make_policy("edge-only")
    paper_view.running[:] = [3, 3, 0, 3, 3, 0]  # the cloud (index 5) is empty too
    decision = policy.select(request_factory(), paper_view)
    assert decision.server == 2


def test_least_loaded_picks_the_emptiest_server_relative_to_its_batch(
    paper_view, request_factory
) -> None:
    policy = make_policy("least-loaded")
    # Edges hold 4 at most, the cloud 48: 10 running on the cloud is emptier than 2 on an edge.
    paper_view.running[:] = [2, 2, 2, 2, 2, 10]
    assert policy.select(request_factory(), paper_view).server == 5
    paper_view.running[:] = [2, 1, 2, 2, 2, 40]
    assert policy.select(request_factory(), paper_view).server == 1


def test_least_loaded_skips_unhealthy_servers(paper_view, request_factory) -> None:
    policy = make_policy("least-loaded")
    paper_view.running[:] = [4, 4, 4, 4, 0, 40]
    paper_view.healthy[4] = False
    assert policy.select(request_factory(), paper_view).server != 4


def test_round_robin_cycles_through_every_server(paper_view, request_factory) -> None:
    policy = make_policy("round-robin")
    chosen = [policy.select(request_factory(i), paper_view).server for i in range(12)]
    assert chosen == list(range(6)) * 2


def test_random_is_seeded(paper_view, request_factory) -> None:
    a = make_policy("random", seed=3)
    b = make_policy("random", seed=3)
    picks_a = [a.select(request_factory(i), paper_view).server for i in range(50)]
    picks_b = [b.select(request_factory(i), paper_view).server for i in range(50)]
    assert picks_a == picks_b
    assert len(set(picks_a)) == 6


def test_greedy_latency_prefers_the_fast_cloud_until_it_is_congested(
    paper_view, request_factory
) -> None:
    policy = make_policy("greedy-latency")
    request = request_factory(prompt=50)
    assert paper_view.servers[policy.select(request, paper_view).server].tier == "cloud"
    paper_view.queued[5] = 5000  # a very long cloud queue
    assert paper_view.servers[policy.select(request, paper_view).server].tier == "edge"


def test_greedy_energy_ignores_deadlines(paper_view, request_factory) -> None:
    policy = make_policy("greedy-energy")
    # The A100 is far more energy-efficient per token: chosen even with a hopeless deadline.
    decision = policy.select(request_factory(deadline_s=0.001), paper_view)
    assert paper_view.servers[decision.server].tier == "cloud"


def test_feasible_energy_takes_the_cheapest_server_that_meets_the_deadline(
    paper_view, request_factory
) -> None:
    policy = make_policy("feasible-energy")
    lenient = request_factory(deadline_s=600.0, prompt=50)
    # A busy A100 is far cheaper per request than a CPU edge: it wins while it is feasible.
    paper_view.running[5] = 20
    assert paper_view.servers[policy.select(lenient, paper_view).server].tier == "cloud"
    # With a queue long enough to miss the deadline, a feasible edge is taken instead.
    paper_view.queued[5] = 20_000
    assert paper_view.servers[policy.select(lenient, paper_view).server].tier == "edge"


def test_feasible_policies_fall_back_to_the_least_late(paper_view, request_factory) -> None:
    hopeless = request_factory(deadline_s=1e-3, prompt=50)
    paper_view.running[:] = [4, 4, 4, 4, 4, 10]
    for name in ("feasible-energy", "feasible-latency"):
        decision = make_policy(name).select(hopeless, paper_view)
        assert decision.server == 5, name  # the A100 is the least late by far


def test_feasible_latency_takes_the_least_loaded_feasible_server(
    paper_view, request_factory
) -> None:
    policy = make_policy("feasible-latency")
    paper_view.running[:] = [3, 0, 3, 3, 3, 40]
    lenient = request_factory(deadline_s=600.0, prompt=50)
    assert policy.select(lenient, paper_view).server == 1
    # A tight deadline that only the A100 can meet: the busier A100 is taken.
    tight = request_factory(deadline_s=5.0, prompt=50)
    assert policy.select(tight, paper_view).server == 5


def test_epsilon_greedy_counts_pending_pulls_against_an_arm(
    paper_view, request_factory, feedback_factory
) -> None:
    policy = make_policy("epsilon-greedy", {"epsilon": 0.0, "share-levels": [1.0]})
    # Try every arm once and report: the cloud (arm 5) is the best.
    tried = [policy.select(request_factory(i), paper_view) for i in range(6)]
    for i, decision in enumerate(tried):
        energy = 10.0 if decision.server == 5 else 100.0
        policy.observe(feedback_factory(request_factory(i), decision, energy_j=energy))
    picks = [policy.select(request_factory(i), paper_view).server for i in range(40)]
    # The best arm is taken first, but its pending pulls (imputed the worst mean) soon make
    # it look worse than the others, so a burst is not piled onto it alone.
    assert picks[0] == 5
    assert len(set(picks)) > 1


@pytest.mark.parametrize(
    ("name", "params", "field"),
    [
        ("cs-ucb", {"exploration": -1}, "exploration"),
        ("cs-ucb", {"bogus": 1}, "bogus"),
        ("epsilon-greedy", {"epsilon": 2}, "epsilon"),
        ("ucb1", {"penalty": -0.5}, "penalty"),
    ],
)
def test_bad_parameters_give_one_line_naming_the_field(name, params, field) -> None:
    with pytest.raises(InputError) as info:
        make_policy(name, params)
    message = str(info.value)
    assert "\n" not in message
    assert field in message and name in message


def test_unknown_policy_lists_the_known_ones() -> None:
    with pytest.raises(InputError, match=r"unknown policy 'nope'.*cs-ucb"):
        make_policy("nope")


@pytest.mark.parametrize("name", [e.name for e in ENTRIES if e.clairvoyant])
def test_clairvoyant_policies_cannot_route_live_requests(name: str) -> None:
    with pytest.raises(InputError, match="clairvoyant") as info:
        make_policy(name, live=True)
    assert "\n" not in str(info.value)
    make_policy(name)  # the simulator may build them


@pytest.mark.parametrize("name", ["cs-ucb", "ucb1", "epsilon-greedy"])
def test_a_forgotten_request_leaves_nothing_behind(name: str, paper_view, request_factory) -> None:
    policy = make_policy(name, seed=3)
    request = request_factory(deadline_s=30.0)
    policy.forget(request, policy.select(request, paper_view))
    assert len(policy.ledger) == 0
    if name == "cs-ucb":
        assert policy.outstanding.counts.sum() == 0
    else:
        arms = policy.arms
        assert arms.pending.sum() == arms.tried.sum() == arms.total.sum() == 0
        assert arms.untried == [arms.n_arms]


def test_an_energy_not_measured_teaches_no_policy_its_own_model(
    paper_view, request_factory, feedback_factory
) -> None:
    # A gateway reports ``nan`` inference energy where a backend's meter has not measured yet:
    # the bandits' rewards count it as the class's mean, CS-UCB learns no energy from it, and
    # no learned total turns into nan.
    for name in ("cs-ucb", "ucb1", "epsilon-greedy"):
        policy = make_policy(name, seed=1)
        for i, energy in enumerate((5.0, float("nan"), 7.0)):
            request = request_factory(i, deadline_s=600.0)
            decision = policy.select(request, paper_view)
            policy.observe(feedback_factory(request, decision, energy_j=energy))
        assert all(np.isfinite(v) for v in policy.shared_stats().values()), name
        if name == "cs-ucb":
            assert policy.energy.count.sum() == 2  # the two measured answers


def test_prefix_affinity_follows_the_longest_sent_prefix_unless_saturated(
    paper_view, request_factory
) -> None:
    policy = make_policy("prefix-affinity")
    request = request_factory(1, prompt=4000)
    assert policy.select(request, paper_view).server == 0  # no prefix: the least loaded
    paper_view.queued[:] = 1.0
    paper_view.queued[4] = 0.0
    paper_view.prefix[2] = 2500.0  # over half the prompt
    paper_view.prefix[3] = 3000.0
    assert policy.select(request, paper_view).server == 3
    paper_view.running[3] = paper_view.servers[3].max_batch  # no free slot: the next longest
    assert policy.select(request, paper_view).server == 2
    paper_view.prefix[2] = 1000.0  # under half the prompt: the least loaded
    assert policy.select(request, paper_view).server == 4
    lenient = make_policy("prefix-affinity", {"min-match": 0.2})
    assert lenient.select(request, paper_view).server == 2
