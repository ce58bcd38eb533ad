"""CS-UCB's defining behaviour: load-aware energy, learning energy and time, constraint
satisfaction, earliest-deadline priority, deflection under overload, state."""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import math
import re
from statistics import NormalDist
from typing import Any

import numpy as np
import pytest

from perllm.cluster import scenario
from perllm.clustergen import generate
from perllm.clustergen.families import SHORT_RUNS, cluster_seed, family_settings
from perllm.domain import REJECT, LoadArrays, RouterRequest
from perllm.errors import InputError
from perllm.policies.bandit import ucb_index
from perllm.policies.cs_ucb import DEFLECTED_PRIORITY
from perllm.policies.estimates import ServerTable, estimate
from perllm.policies.ledger import ANSWERED, DROPPED, Ledger, Placement
from perllm.policies.log_ratio import LogRatioStats
from perllm.policies.miss import miss_probability
from perllm.policies.outstanding import LATE_AFTER, LateAnswers, PrefillLoad
from perllm.policies.registry import make_policy
from perllm.sim.runner import run_once
from perllm.testing import StaticView
from perllm.testing import paper_view as paper_view_of


def memo(policy: Any, request: RouterRequest) -> Placement:
    """What the policy keeps of ``request`` in its ledger (its estimates at the decision)."""
    placement = policy.ledger.get(request.id)
    assert placement is not None
    return placement


def watched(expected: float, queue_s: float = 0.0, placed_s: float = 0.0) -> Placement:
    """A placement of a ``chat`` request on server 0, as LateAnswers watches it."""
    return Placement(0, 0, False, "chat", expected, 0.0, 0.0, 0.0, 0.0, 0.0, queue_s, placed_s)


def fit_of(mu: float, sd: float) -> Any:
    """A length fit: ``(mu, sd)`` for ``chat``, none for any other class."""
    return lambda service_class: (mu, sd) if service_class == "chat" else None


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
    first, second = (
        request_factory(1, deadline_s=600.0, prompt=50),
        request_factory(2, deadline_s=600.0, prompt=50),
    )
    busy = policy.select(first, paper_view)
    paper_view.running[5] = 0
    idle = policy.select(second, paper_view)
    assert busy.server == idle.server == 5
    assert memo(policy, first).estimate_j < memo(policy, second).estimate_j


def test_learns_that_a_server_uses_more_energy_than_its_spec(
    paper_view, request_factory, feedback_factory
) -> None:
    # Energy decides here: every deadline is lenient.
    policy = make_policy("cs-ucb", seed=2)
    # The work in flight ends in an hour (a long batch job), so no choice here keeps the
    # cluster on for longer: marginal energy alone is compared.
    policy.begin(len(paper_view.servers))
    policy.horizon = 3600.0
    # True energy multipliers against the spec: the A100 really draws 4x its spec (costlier than
    # any edge); edge-1 is the most frugal. Only the chosen arm's energy is revealed.
    multiplier = np.array([1.0, 0.6, 1.2, 1.5, 1.1, 4.0])
    rng = np.random.default_rng(2)
    picks = []
    for i in range(400):
        paper_view.clock = float(i)  # the router's clock at the arrival
        request = request_factory(i, deadline_s=600.0, prompt=50)
        decision = policy.select(request, paper_view)
        picks.append(decision.server)
        modelled = memo(policy, request).estimate_j
        energy = modelled * multiplier[decision.server] * rng.lognormal(0.0, 0.1)
        policy.observe(feedback_factory(request, decision, energy_j=energy))
    late = picks[-100:]
    assert picks[0] == 5  # the datasheet's favourite is tried first
    assert late.count(1) >= 90, np.bincount(late, minlength=6)


def test_never_picks_an_infeasible_arm_while_a_feasible_one_is_known(
    paper_view, request_factory, feedback_factory
) -> None:
    policy = make_policy("cs-ucb", seed=2)
    # A 2-second deadline for 100 prompt + 50 output tokens: a CPU edge needs ~6 s, the A100 ~1 s.
    for i in range(300):
        paper_view.clock = float(i)  # the router's clock at the arrival
        request = request_factory(i, deadline_s=2.0)
        decision = policy.select(request, paper_view)
        assert paper_view.servers[decision.server].tier == "cloud", f"request {i}"
        policy.observe(feedback_factory(request, decision, energy_j=10.0, processing_s=1.0))


def test_learns_that_a_server_is_slower_than_its_spec(
    paper_view, request_factory, feedback_factory
) -> None:
    policy = make_policy("cs-ucb", seed=3)
    # Each server learns alone here: pooled, the one server observed would lend its slowness to
    # the untried edges as their prior (an error servers share), and every arm would look
    # hopeless. The pool is the next test's.
    policy.begin(len(paper_view.servers))
    assert policy.times is not None
    policy.times.pooled = False
    # Feedback says the cloud takes 40x its estimate (~90 s): with a 20 s deadline it is
    # hopeless there, while the CPU edges (about 10 s) make it.
    picks = []
    for i in range(200):
        paper_view.clock = float(i)  # the router's clock at the arrival
        request = request_factory(i, deadline_s=20.0, prompt=20)
        decision = policy.select(request, paper_view)
        picks.append(paper_view.servers[decision.server].tier)
        slow = 40.0 if decision.server == 5 else 1.0
        policy.observe(
            feedback_factory(
                request,
                decision,
                energy_j=5.0,
                processing_s=decision.estimate_s * slow,
                met=decision.estimate_s * slow <= 20.0,
            )
        )
    assert picks[0] == "cloud"  # the cheaper while its datasheet stands
    assert picks[-50:].count("cloud") == 0


def _cloud_picks(
    policy: Any, view: StaticView, request_factory: Any, feedback_factory: Any, until: int
) -> list[bool]:
    """One request a second for 300 s, the cloud as fast as its estimates except 100x slower
    for the requests placed on it from the 100th to ``until`` (a 20 s deadline it then misses;
    the CPU edges, about 10 s, make it): whether each one went to the cloud."""
    picks = []
    for i in range(300):
        view.clock = float(i)
        request = request_factory(i, deadline_s=20.0, prompt=20)
        decision = policy.select(request, view)
        picks.append(decision.server == 5)
        slowed = decision.server == 5 and 100 <= i < until
        taken = decision.estimate_s * (100.0 if slowed else 1.0)
        policy.observe(
            feedback_factory(request, decision, energy_j=5.0, processing_s=taken, met=taken <= 20.0)
        )
    assert all(picks[:100])  # the cloud was the choice while it kept its estimates
    return picks


def test_a_server_that_slows_down_mid_run_is_left_within_a_few_requests(
    paper_view, request_factory, feedback_factory
) -> None:
    # A hundred observations say the cloud is as its model: the mean of its record would need
    # as many again to move past the deadline; the drift sees the change in a few.
    factories = (request_factory, feedback_factory)
    drifting = make_policy("cs-ucb", seed=3)
    picks = _cloud_picks(drifting, paper_view, *factories, until=300)
    assert sum(picks[100:150]) <= 5  # (later, as its drift fades, it is tried again)
    still = make_policy("cs-ucb", {"drift-rate": 0.0}, seed=3)
    assert sum(_cloud_picks(still, paper_view_of(), *factories, until=300)[100:200]) >= 90


def test_a_server_slow_for_a_while_is_tried_again_once_its_drift_has_faded(
    paper_view, request_factory, feedback_factory
) -> None:
    # Ten slow requests, then the cloud is itself again: its drift fades with age (a minute by
    # default), so it is chosen again; a drift that never faded would shut it out for good. The
    # ten stay in its record (a one-in-eleven chance of a 100x slowdown), so a low price on a
    # miss is what makes the cheaper cloud worth its risk again.
    factories = (request_factory, feedback_factory)
    cheap = {"miss-price": 1.0}
    fading = _cloud_picks(make_policy("cs-ucb", cheap, seed=3), paper_view, *factories, 110)
    assert sum(fading[100:200]) <= 5 and sum(fading[250:]) >= 45
    lasting = make_policy("cs-ucb", {**cheap, "drift-memory-s": 1e9}, seed=3)
    assert sum(_cloud_picks(lasting, paper_view_of(), *factories, until=110)[200:]) == 0


def test_a_server_whose_answers_come_late_is_left_before_any_comes_back(
    paper_view, request_factory, feedback_factory
) -> None:
    # The cloud stops answering (a slowdown far beyond its record) while the edges answer on
    # time. No slow answer ever comes back, so neither the record nor the drift can see it; the
    # share of the cloud's answers still out when they were due does. With a 30 s deadline the
    # cloud (about 1.3 s at the mean length, 3.5 s planned) is chosen while it seems its record;
    # slowed as much as its late answers say, it is not feasible (the edges, about 15 s planned,
    # are). The drift is kept from fading here, to see the detection alone.
    rng = np.random.default_rng(5)

    def cloud_picks(params: dict[str, Any]) -> list[bool]:
        policy = make_policy("cs-ucb", {"drift-memory-s": 1e9, **params}, seed=5)
        for tokens in rng.lognormal(4.0, 0.8, size=50):
            policy.lengths.observe("chat", int(tokens))
        view, picks = paper_view_of(), []
        for i in range(60):
            view.clock = float(i)  # each request's answer is due well within the second
            request = request_factory(i, deadline_s=30.0, prompt=20)
            decision = policy.select(request, view)
            picks.append(decision.server == 5)
            if decision.server != 5:  # the edges answer as estimated; the cloud never does
                policy.observe(
                    feedback_factory(
                        request, decision, energy_j=50.0, processing_s=decision.estimate_s
                    )
                )
        return picks

    watched = cloud_picks({})
    assert all(watched[:LATE_AFTER]) and not any(watched[20:])
    assert all(cloud_picks({"late-margin": math.inf}))


@pytest.mark.parametrize("batch_full", [False, True])
def test_a_silent_server_is_left_whether_its_requests_start_at_once_or_wait(
    batch_full, paper_view, request_factory
) -> None:
    # No answer ever comes back from the cloud. Its requests are due when its record says; those
    # queued behind a full batch too, since nothing ahead of them has finished either.
    policy = make_policy("cs-ucb", {"drift-memory-s": 1e9}, seed=5)
    for tokens in np.random.default_rng(5).lognormal(4.0, 0.8, size=50):
        policy.lengths.observe("chat", int(tokens))
    paper_view.running[5] = 48 if batch_full else 0
    picks = []
    for i in range(30):
        paper_view.clock = float(i)
        decision = policy.select(request_factory(i, deadline_s=600.0, prompt=20), paper_view)
        picks.append(decision.server)
    watched, drift = float(policy.late.shares[2, 5]), float(policy.drift.values[0, 5])
    assert picks[:LATE_AFTER] == [5] * LATE_AFTER and watched >= LATE_AFTER and drift > 1.0
    assert 5 not in picks[-10:]


def test_a_queued_request_out_when_due_is_late_only_if_its_server_was_silent() -> None:
    # Ten queued requests, placed at 0 and due at 1, none back. Where the server answered
    # something since they were placed, later requests with earlier deadlines may have passed
    # them: they count neither way. Where it answered nothing, they are late. Queued requests
    # back in time count as on time whatever the server did.
    mu, sd = 4.0, 0.8
    mean = math.exp(mu + sd * sd / 2)
    for answered_at, back in ((0.5, False), (None, False), (0.5, True)):
        late, ledger = LateAnswers(1, rate=0.2), Ledger[Placement]()
        for i in range(10):
            ledger.place(i, placement := watched(mean, queue_s=0.3, placed_s=0.0))
            late.watch(i, placement, 1.0)
            if back:
                ledger.release(i, ANSWERED)
        if answered_at is not None:
            late.answered(0, answered_at)
        found = late.slowdowns(1.0, 0.5, fit_of(mu, sd))
        if back:
            assert late.shares[2, 0] == 10 and late.shares[0, 0] == 0.0 and not found
        elif answered_at is None:
            assert late.shares[2, 0] == 10 and found
        else:
            assert late.shares[2, 0] == 0 and not found


def test_late_answers_wait_for_a_length_fit_and_are_judged_by_the_fit_when_due() -> None:
    # A request placed before its class had a fit is judged by the fit its class has when it
    # falls due; without one then, it counts neither way. The shares are unbiased means: five
    # late answers in a row read as a late share of 1.
    mu, sd = 4.0, 0.8
    mean = math.exp(mu + sd * sd / 2)
    late, ledger = LateAnswers(1, rate=0.2), Ledger[Placement]()
    for i in range(10):
        ledger.place(i, placement := watched(mean))
        late.watch(i, placement, 1.0 if i < 5 else 2.0)
    assert not late.slowdowns(1.0, 0.5, lambda service_class: None)
    assert late.shares[2, 0] == 0
    found = late.slowdowns(2.0, 0.5, fit_of(mu, sd))
    assert late.shares[2, 0] == LATE_AFTER and len(found) == 1
    # A late share of 1 is read at its clamp (1e-3 on time): the slowdown is bounded.
    on_time = NormalDist().inv_cdf(1e-3)
    assert found[0][1] == pytest.approx(math.log(mean) - mu - sd * on_time)


def test_late_answers_imply_the_slowdown_and_ordinary_lateness_implies_none() -> None:
    # Output lengths from the class's fit: late when longer than the mean over the slowdown f.
    # About P(o > mean) of the answers are late on a server as fast as its record: nothing to
    # report at the default margin. Three times slower, the late share says so (reported at
    # almost any share, so that the estimate is not only taken where the share ran high).
    mu, sd, rng = 4.0, 0.8, np.random.default_rng(6)
    mean = math.exp(mu + sd * sd / 2)
    for f, margin in ((1.0, 0.5), (3.0, 0.05)):
        late, ledger = LateAnswers(1, rate=0.2), Ledger[Placement]()
        found: list[float] = []
        for i, tokens in enumerate(rng.lognormal(mu, sd, size=400)):
            ledger.place(i, placement := watched(mean))
            late.watch(i, placement, float(i))
            if not tokens * f > mean:
                ledger.release(i, ANSWERED)  # back by the time it is due
            found += [log_f for _, log_f in late.slowdowns(float(i), margin, fit_of(mu, sd))]
        if f == 1.0:
            assert not found
        else:
            assert len(found) > 300 and abs(np.median(found) - math.log(f)) < 0.2


def test_a_failed_request_is_neither_late_nor_on_time() -> None:
    # Ten late answers, then ten requests that ended at once: answered, they pull the late share
    # back down as answers on time; failed or forgotten (their memos dropped), they count as
    # nothing and the share stays where the late answers put it.
    mu, sd = 4.0, 0.8
    mean = math.exp(mu + sd * sd / 2)
    for forget in (False, True):
        late, ledger = LateAnswers(1, rate=0.2), Ledger[Placement]()
        for i in range(20):
            ledger.place(i, placement := watched(mean))
            late.watch(i, placement, 1.0 if i < 10 else 2.0)
            if i >= 10:
                ledger.release(i, DROPPED if forget else ANSWERED)
        assert ledger.release(99, DROPPED) is None  # never placed: nothing to release
        assert late.slowdowns(1.0, 0.5, fit_of(mu, sd))  # the late answers report a slowdown
        late.slowdowns(2.0, 0.5, fit_of(mu, sd))
        share = 1.0 - 0.8**10
        assert late.shares[2, 0] == (10 if forget else 20)
        assert late.shares[0, 0] == pytest.approx(share if forget else share * 0.8**10)
        assert not late._due


def test_the_drift_is_neither_saved_nor_shared_and_a_replica_keeps_its_own(
    paper_view, request_factory, feedback_factory
) -> None:
    def slowed(seed: int) -> Any:
        policy = make_policy("cs-ucb", seed=seed)
        request = request_factory(deadline_s=3.0, prompt=20)
        decision = policy.select(request, paper_view)
        taken = decision.estimate_s * 4
        policy.observe(feedback_factory(request, decision, energy_j=5.0, processing_s=taken))
        assert policy.drift.values[0, decision.server] > 0.0
        return policy

    policy = slowed(3)
    # The drift is about the recent past: a restored policy starts without one.
    assert not any("drift" in key for key in policy.state())
    restored = make_policy("cs-ucb", seed=3)
    restored.restore(policy.state())
    restored.begin(len(paper_view.servers))
    assert not restored.drift.values[0].any()
    # Shared totals carry the records, not the drift: a replica's own survives a merge.
    assert not any("drift" in key for key in policy.shared_stats())
    replica = slowed(4)
    own = replica.drift.values.copy()
    replica.adopt_shared_stats(policy.shared_stats(), len(paper_view.servers))
    assert replica.drift.values.tolist() == own.tolist()


def test_the_decision_s_estimate_is_the_shared_estimate_of_its_arm(
    paper_view, request_factory
) -> None:
    # CS-UCB's compiled decision calls the shared estimate's kernel itself: its time for the
    # chosen arm is the one estimate() gives (numba caches each file's kernels apart, so a stale
    # cache after an edit of estimates.py would show here).
    policy = make_policy("cs-ucb", {"recent-window-s": 0.0, "share-by-urgency": False})
    paper_view.running[:] = [1, 0, 2, 3, 0, 20]
    paper_view.queued[:] = [0, 0, 1, 0, 0, 5]
    request = request_factory(deadline_s=30.0, prompt=300)
    decision = policy.select(request, paper_view)
    expected = policy.lengths.expected(request.service_class)
    table = ServerTable.of(paper_view)
    # Nothing it placed is queued yet: in deadline order, no queued request goes first.
    loads = paper_view.load_arrays()
    ahead = np.zeros(len(paper_view.servers))
    est = estimate(table, loads, request, expected, weights=paper_view.weights, queued_ahead=ahead)
    assert decision.estimate_s == pytest.approx(float(est.processing_s[0, decision.server]))
    assert memo(policy, request).estimate_j == pytest.approx(
        float(est.inference_j[decision.server])
    )


def test_a_prefix_the_router_sent_counts_as_prefill_saved_in_the_estimate(
    paper_view, request_factory
) -> None:
    # The same shared estimate, with the prompt's recorded prefix per server taken off prefill:
    # the decision's estimate matches it, and the prefill the policy remembers is the rest.
    policy = make_policy("cs-ucb", {"recent-window-s": 0.0, "share-by-urgency": False})
    request = request_factory(deadline_s=60.0, prompt=3000)
    paper_view.running[:] = [1, 1, 1, 1, 1, 8]
    paper_view.prefix[:] = [0.0, 0.0, 2560.0, 0.0, 0.0, 0.0]
    decision = policy.select(request, paper_view)
    table, loads = ServerTable.of(paper_view), paper_view.load_arrays()
    expected = policy.lengths.expected(request.service_class)
    est = estimate(
        table,
        loads,
        request,
        expected,
        weights=paper_view.weights,
        queued_ahead=np.zeros(len(paper_view.servers)),
        cached_tokens=paper_view.prefix,
    )
    assert decision.estimate_s == pytest.approx(float(est.processing_s[0, decision.server]))
    saved = 2560.0 * table.prefill_s_per_token[2]
    assert est.service_s[2] == pytest.approx(est.service_s[1] - saved)  # twin edge servers
    assert memo(policy, request).prefill == pytest.approx(
        table.prefill_of(decision.server, 3000 - float(paper_view.prefix[decision.server]))
    )


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
    assert paper_view.servers[hopeless.server].tier == "cloud"  # where it costs least
    assert hopeless.priority > feasible.priority
    assert hopeless.priority >= DEFLECTED_PRIORITY


def test_a_deflected_request_teaches_energy_but_not_time(
    paper_view, request_factory, feedback_factory
) -> None:
    policy = make_policy("cs-ucb")
    hopeless = request_factory(deadline_s=0.01)
    decision = policy.select(hopeless, paper_view)
    assert decision.priority >= DEFLECTED_PRIORITY
    # It waited behind every request that could make it: 100x its estimate says nothing about
    # the model, so only its energy is learned.
    policy.observe(
        feedback_factory(
            hopeless, decision, energy_j=5.0, processing_s=decision.estimate_s * 100, met=False
        )
    )
    assert policy.times.count.sum() == 0
    assert policy.energy.count.sum() == 1


def test_an_untried_server_starts_from_what_the_others_showed() -> None:
    tau = 0.3
    pooled, alone = LogRatioStats(3, 1.0, tau, pooled=True), LogRatioStats(3, 1.0, tau)
    for stats in (pooled, alone):
        assert (stats.group("slow"), stats.group("fast")) == (0, 1)
        for _ in range(5):
            stats.observe((0, 0), math.log(2.0))  # twice as slow as their specs
            stats.observe((0, 1), math.log(2.0))
            stats.observe((1, 0), math.log(0.5))  # in another row, twice as fast
            stats.observe((1, 1), math.log(0.5))
    # Alone, server 2 keeps the datasheet's prior; pooled, it expects what 0 and 1 showed, give
    # or take how far servers scatter about each other (tau).
    assert alone.upper[0, 2] == pytest.approx(math.exp(tau))
    assert pooled.upper[0, 2] == pytest.approx(2.0 * math.exp(tau))
    assert pooled.lower[0, 2] == pytest.approx(math.exp(-tau))  # no rosier than the datasheet
    # Good news lowers only the optimistic bound: the pessimistic one stays the datasheet's.
    assert pooled.lower[1, 2] == pytest.approx(0.5 * math.exp(-tau))
    assert pooled.upper[1, 2] == pytest.approx(math.exp(tau))
    # Its own observations outweigh the pool as they come: the prior is worth sd^2 / tau^2 of
    # them, a normal model's posterior mean.
    rng = np.random.default_rng(7)
    own = rng.normal(0.0, 0.6, size=30)
    for x in own:
        pooled.observe((0, 2), float(x))
    n, sd = len(own), float(np.std(own))
    weight = sd**2 / tau**2
    mean = (own.sum() + weight * math.log(2.0)) / (n + weight)
    assert pooled.upper[0, 2] == pytest.approx(math.exp(mean + sd / math.sqrt(n + weight)))
    assert pooled.spread[0, 2] == pytest.approx(sd)
    # The pool is derived from the counts, so a restored copy has the same bounds.
    restored = LogRatioStats(3, 1.0, tau, pooled=True)
    restored.adopt(pooled.totals())
    np.testing.assert_allclose(restored.upper, pooled.upper)
    np.testing.assert_allclose(restored.lower, pooled.lower)
    np.testing.assert_allclose(restored.own, pooled.own)
    assert pooled.own[0, 0] == pytest.approx(2.0)  # its own record, not the pool's
    # A value that is not finite is ignored rather than spoiling the whole row.
    for bad in (math.inf, math.nan):
        pooled.observe((0, 1), bad)
    np.testing.assert_allclose(pooled.upper, restored.upper)


def test_a_narrower_scatter_between_servers_keeps_an_arm_nearer_the_pool() -> None:
    # The same arm, the same answers: the smaller tau, the more they must say to move it.
    uppers = []
    for tau in (0.1, 0.3, 1.0):
        stats = LogRatioStats(2, 1.0, tau, pooled=True)
        stats.group("c")
        for _ in range(20):
            stats.observe((0, 0), math.log(3.0))  # a server three times slower than its spec
        for x in (0.1, -0.1, 0.2, -0.2):
            stats.observe((0, 1), x)  # one as fast as its spec, give or take 20%
        uppers.append(float(stats.upper[0, 1]))
    assert uppers[0] > uppers[1] > uppers[2] > 1.0


def test_state_round_trips_through_json(paper_view, request_factory, feedback_factory) -> None:
    policy = make_policy("cs-ucb", seed=5)
    for i in range(100):
        paper_view.clock = float(i)  # the router's clock at the arrival
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
    assert restored.state()["totals"] == policy.state()["totals"]


def test_restoring_state_of_another_cluster_is_refused(paper_view, request_factory) -> None:
    small = make_policy("cs-ucb")
    small.select(request_factory(), paper_view_of(3))
    other = make_policy("cs-ucb")
    other.restore(small.state())  # a state of its own kind: kept until the first decision
    with pytest.raises(ValueError, match="3 servers"):
        other.select(request_factory(), paper_view)


def _first(state: dict[str, Any], prefix: str) -> str:
    return next(name for name in sorted(state["totals"]) if name.startswith(prefix))


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (lambda s: s.update(n_servers=3), "totals: 't|0|5|count|chat': not a server of 3"),
        (lambda s: s.update(n_servers="6"), "n_servers: '6', not a count"),
        (lambda s: s.update(totals=[1]), "totals: not a mapping"),
        (lambda s: s["totals"].update({"t|0|0|count|chat": "x"}), "'t|0|0|count|chat'"),
        (lambda s: s["totals"].update({_first(s, "e|"): math.inf}), "not a finite number"),
        (lambda s: s["totals"].update({"t|2|0|count|chat": 1.0}), "not a variant below 2"),
        (lambda s: s["totals"].update({"t|0|0|mean|chat": 1.0}), "not a name VARIANT"),
        (lambda s: s["totals"].update({"x|1": 1.0}), "'x|1': not a statistic of e or l or t"),
        (lambda s: s["totals"].update({"l|median|chat": 1.0}), "'l|median|chat'"),
        (lambda s: s.update(policy="ucb1"), "policy: 'ucb1', not 'cs-ucb'"),
        (lambda s: s.update(bogus=1), "bogus: not a field"),
        (lambda s: s.pop("totals"), "totals: missing"),
    ],
)
def test_a_state_of_the_wrong_shape_is_refused_at_once(
    change: Any, where: str, paper_view, request_factory, feedback_factory
) -> None:
    policy = make_policy("cs-ucb")
    request = request_factory(cls="chat", deadline_s=600.0)
    policy.observe(feedback_factory(request, policy.select(request, paper_view), energy_j=2.0))
    state = json.loads(json.dumps(policy.state()))
    change(state)
    with pytest.raises(ValueError, match="^cs-ucb state: .*" + re.escape(where)) as info:
        make_policy("cs-ucb").restore(state)
    assert "\n" not in str(info.value)


def test_time_is_learned_apart_for_a_crowded_batch(
    paper_view, request_factory, feedback_factory
) -> None:
    policy = make_policy("cs-ucb", seed=8)
    # The A100 takes 20x its estimate when its batch is at least half full, 1x otherwise.
    for i in range(300):
        paper_view.clock = float(i)  # the router's clock at the arrival
        crowded = i % 2 == 1
        paper_view.running[5] = 40 if crowded else 0
        request = request_factory(i, deadline_s=12.0, prompt=20)
        decision = policy.select(request, paper_view)
        factor = 20.0 if crowded and decision.server == 5 else 1.0
        taken = decision.estimate_s * factor
        energy = memo(policy, request).estimate_j  # as the model says: only time is learned
        policy.observe(
            feedback_factory(
                request, decision, energy_j=energy, processing_s=taken, met=taken <= 12
            )
        )
    paper_view.running[5] = 0
    assert policy.select(request_factory(1000, deadline_s=12.0, prompt=20), paper_view).server == 5
    paper_view.running[5] = 40
    assert policy.select(request_factory(1001, deadline_s=12.0, prompt=20), paper_view).server != 5


@pytest.mark.parametrize("window", [0.0, 2.0])
def test_time_is_learned_at_the_output_length_each_request_had(
    window, paper_view, request_factory, feedback_factory
) -> None:
    # The world is exactly the model, but outputs vary from 5 to 500 tokens around the mean:
    # measured at the real length, the model has no error to learn (measured at the mean, the
    # spread of lengths would look like one). With a prefill window, other traffic keeps the A100
    # prefilling about a third of the time, so each decode step there takes 1 / (1 - u) longer.
    table = ServerTable.of(paper_view)
    rng = np.random.default_rng(4)
    policy = make_policy("cs-ucb", {"recent-window-s": window})
    for i in range(60):
        paper_view.clock = float(i)  # the router's clock at the arrival
        request = request_factory(i, deadline_s=600.0, prompt=50)
        expected = policy.lengths.expected(request.service_class)
        loads = paper_view.load_arrays()
        stall = np.zeros(len(paper_view.servers))
        if window and i:
            policy.prefills.placed(5, paper_view.clock, 0.3)
            u = np.minimum(policy.prefills.utilisation(float(i), loads, table.max_batch), 0.9)
            stall = u / (1.0 - u)
        decision = policy.select(request, paper_view)
        step = estimate(table, loads, request, expected).decode_step_s * (1.0 + stall)
        tokens = int(rng.integers(5, 500))
        taken = decision.estimate_s + (tokens - expected) * step[decision.server]
        policy.observe(
            feedback_factory(
                request, decision, energy_j=1.0, processing_s=taken, output_tokens=tokens
            )
        )
    assert float(np.abs(policy.times.total).sum()) < 1e-9


def test_a_prefill_window_below_a_millisecond_is_refused() -> None:
    with pytest.raises(InputError, match=r"recent-window-s.*0\.001"):
        make_policy("cs-ucb", {"recent-window-s": 1e-6})
    make_policy("cs-ucb", {"recent-window-s": 0})  # off


def test_prefill_load_decays_and_counts_what_a_full_server_admits() -> None:
    load = PrefillLoad(2, tau_s=2.0)
    max_batch = np.array([4.0, 4.0])

    def loads(running: float) -> LoadArrays:
        zeros = np.zeros(2)
        ones = np.ones(2)
        return LoadArrays(zeros, np.array([running, 0.0]), zeros, zeros, zeros, ones > 0, ones)

    load.placed(0, now=10.0, prefill_s=1.0)
    load.placed(0, now=10.0, prefill_s=1.0)
    assert load.utilisation(10.0, loads(1), max_batch) == pytest.approx([1.0, 0.0])
    assert load.utilisation(12.0, loads(1), max_batch) == pytest.approx([math.exp(-1.0), 0.0])
    load.placed(0, now=12.0, prefill_s=0.5)
    assert load.utilisation(12.0, loads(1), max_batch)[0] == pytest.approx(math.exp(-1.0) + 0.25)
    # A full batch admits one request per one that finishes, however many are sent: the done
    # prefills count there, not the placed.
    assert load.utilisation(12.0, loads(4), max_batch)[0] == 0.0
    load.done(0, now=12.0, prefill_s=0.4)
    assert load.utilisation(12.0, loads(4), max_batch)[0] == pytest.approx(0.2)


def test_a_burst_of_placements_stretches_the_estimate_with_their_prefills(
    paper_view, request_factory
) -> None:
    # Thirty requests in a third of a second: the A100 prefills them before decoding, which
    # the batch's own steps do not show. With the prefill window the estimate grows as the
    # burst lands (and a request that no longer fits its deadline there goes elsewhere or
    # waits); without it every one is estimated as the first.
    estimates = {}
    for window in (0.0, 2.0):
        policy = make_policy("cs-ucb", {"recent-window-s": window})
        view = copy.deepcopy(paper_view)
        seen = []
        for i in range(30):
            view.clock = 0.01 * i  # 10 ms apart
            request = dataclasses.replace(
                request_factory(i, deadline_s=20.0, prompt=300), arrival_s=view.clock
            )
            decision = policy.select(request, view)
            view.running[decision.server] += 1
            if decision.server == 5:
                seen.append(decision.estimate_s)
        estimates[window] = seen
    assert max(estimates[0.0]) == pytest.approx(min(estimates[0.0]), rel=0.05)
    assert estimates[2.0][-1] > 3 * estimates[2.0][0]
    assert len(estimates[2.0]) < 30  # some went to the edges


def test_a_backlog_s_prompts_do_not_shut_a_server_it_can_serve_in_time(
    paper_view, request_factory
) -> None:
    # The router's tokens in flight on the A100 fill its cache, but most are the prompts of its
    # queue, which hold no cache yet: a lenient request that fits the cache is placed there in
    # time (its deadline's priority), not deflected as if the A100 could never take it.
    paper_view.healthy[:5] = False
    paper_view.running[5], paper_view.queued[5] = 4, 20
    paper_view.tokens[5] = paper_view.servers[5].kv_capacity_tokens
    decision = make_policy("cs-ucb").select(request_factory(deadline_s=600.0), paper_view)
    assert decision.server == 5
    assert decision.priority < DEFLECTED_PRIORITY


def test_a_request_larger_than_a_server_s_cache_is_never_placed_there_in_time(
    paper_view, request_factory
) -> None:
    # Bigger than the A100's cache, within the CPU edges' (their RAM holds more): only an edge
    # can take it, however slow, even with the A100 idle.
    cloud_cache = paper_view.servers[5].kv_capacity_tokens
    huge = request_factory(deadline_s=1e6, prompt=cloud_cache + 1)
    decision = make_policy("cs-ucb").select(huge, paper_view)
    assert paper_view.servers[decision.server].tier == "edge"
    assert decision.priority < DEFLECTED_PRIORITY


@pytest.mark.parametrize("seed", range(4))
def test_the_miss_probability_is_that_of_its_model(seed: int) -> None:
    # P(F exp(eps) (fixed + o step) > D), eps ~ N(0, sd_l^2), ln o ~ N(mu, sd_o^2): the
    # quadrature against a Monte Carlo draw of the same model.
    rng = np.random.default_rng(seed)
    fixed, step = rng.uniform(0.1, 5.0), rng.uniform(0.005, 0.1)
    mu, sd_o, sd_l, factor = (
        rng.uniform(3.0, 6.0),
        rng.uniform(0.2, 1.2),
        rng.uniform(0.0, 0.8),
        1.3,
    )
    o = rng.lognormal(mu, sd_o, 400_000)
    eps = rng.normal(0.0, sd_l, o.size)
    times = factor * np.exp(eps) * (fixed + o * step)
    for deadline in np.quantile(times, (0.1, 0.5, 0.9, 0.99)):
        p = miss_probability(deadline, factor, fixed, step, mu, sd_o, sd_l)
        assert p == pytest.approx(float(np.mean(times > deadline)), abs=0.01)
    # Far out in the tail the quadrature is skipped: the answer must not jump there.
    far = [
        miss_probability(d, factor, fixed, step, mu, sd_o, sd_l)
        for d in np.quantile(times, 0.999) * np.linspace(1.0, 40.0, 400)
    ]
    assert all(b <= a + 1e-12 for a, b in itertools.pairwise(far))  # never rises with the deadline
    assert max(abs(b - a) for a, b in itertools.pairwise(far)) < 2e-3
    # No time left, or not a number: a certain miss.
    for bad in (0.0, -1.0, math.nan):
        assert miss_probability(bad, factor, fixed, step, mu, sd_o, sd_l) == 1.0
    # A known length: the time is log-normal in the model's error alone.
    p = miss_probability(3.0, 1.0, 1.0, 0.01, math.log(100.0), 0.0, 0.5)
    assert p == pytest.approx(0.5 * math.erfc(math.log(3.0 / 2.0) / (0.5 * math.sqrt(2.0))))


def test_without_a_price_on_a_miss_the_least_energy_wins_whatever_its_risk(
    paper_view, request_factory
) -> None:
    # The A100 has been 20x slower than its model once in ten requests: a 40 s deadline is at
    # some risk there, none on the idle CPU edges, which cost about twice its energy.
    tight = request_factory(deadline_s=40.0, prompt=50)
    decisions = []
    for price in (0.0, 1000.0):
        policy = make_policy("cs-ucb", {"miss-price": price})
        policy.begin(len(paper_view.servers))
        policy.times.pooled = False  # the A100's record is its own, not the edges' prior
        policy.horizon = 3600.0  # the work in flight outlasts either choice
        row = policy.times.group(tight.service_class)
        for k in range(50):
            policy.times.observe((row, 5), math.log(20.0) if k % 10 == 0 else 0.0)
        decisions.append(policy.select(tight, paper_view))
        decisions.append(memo(policy, tight))
    free, free_memo, dear, dear_memo = decisions
    assert free.server == 5 and dear.server != 5
    assert dear_memo.miss_probability < free_memo.miss_probability
    assert dear_memo.estimate_j > free_memo.estimate_j


@pytest.mark.parametrize("cluster", [1002, 1005])
def test_a_price_on_a_miss_meets_more_deadlines_than_none(cluster: int) -> None:
    # One fixed trace: a GPU-edge tuning cluster (RTX and Jetson edges beside data-center GPUs)
    # at 1.5x its capacity. Without a price the cheapest arm wins whatever its risk; with the
    # default price far more deadlines are met (beyond it, more price moves them by the noise).
    generated = generate(cluster_seed("gpu-edge", cluster), family_settings("gpu-edge", SHORT_RUNS))
    built = scenario.build(scenario.parse(generated.data, "generated"), "generated")
    rate = 1.5 * generated.capacity.rate_rps
    free, priced = (
        run_once(built, "cs-ucb", rate_rps=rate, policy_params=params).summary
        for params in ({"miss-price": 0.0}, {})
    )
    assert priced.met > 1.04 * free.met


def test_a_request_that_would_outlast_the_work_in_flight_pays_the_cluster_s_idle_power() -> None:
    # Two RTX 3090 edges and a busy A100 (the least marginal energy, the slower arm). While the
    # work in flight ends long after either would, only the marginal energy counts; with nothing
    # else in flight, the longer the request takes, the longer the whole cluster draws idle
    # power, and the edge, done sooner, costs less.
    cluster = scenario.load("tiny")
    request = RouterRequest(0, 0.0, "chat", 100, 400, 600.0)
    chosen = {}
    for horizon in (0.0, 3600.0):
        view = StaticView(cluster.servers, cluster.links)
        view.running[2] = 8
        policy = make_policy("cs-ucb")
        policy.begin(len(cluster.servers))
        policy.horizon = horizon
        chosen[horizon] = policy.select(request, view)
    assert chosen[3600.0].server == 2 and chosen[0.0].server in (0, 1)
    assert chosen[0.0].estimate_s < chosen[3600.0].estimate_s


def test_the_compiled_pass_reads_each_request_value_under_its_own_name(paper_view) -> None:
    # The request record is filled in field order: each field must hold its own value.
    policy = make_policy("cs-ucb", {"miss-price": 7.0, "prefill-cap": 0.8})
    policy.begin(len(paper_view.servers))
    policy.horizon = 12.5
    paper_view.clock = 3.0
    request = RouterRequest(0, 1.0, "chat", 321, 4000, 45.0)
    policy.select(request, paper_view)
    record = policy._request[0]
    weights = paper_view.weights
    expected = {
        "prompt_tokens": 321.0,
        "deadline_s": 45.0,
        "now": 3.0,
        "horizon": 12.5,
        "expected_tokens": policy.lengths.expected("chat"),
        "w_transmission": weights.transmission,
        "w_inference": weights.inference,
        "w_idle": weights.idle,
    }
    assert {name: float(record[name]) for name in expected} == expected
    assert float(record["total_bytes"]) > 4000.0  # the request's bytes and the answer's
    knobs = policy._knobs[0]
    assert (float(knobs["miss_price"]), float(knobs["prefill_cap"])) == (7.0, 0.8)
