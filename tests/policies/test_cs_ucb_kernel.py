"""CS-UCB's choice (stages 4 and 5): computing the miss probability only where it can matter picks
the same server, with the same probability, as a plain scan that computes it everywhere."""

from __future__ import annotations

import itertools
import math

import numpy as np
import numpy.typing as npt
import pytest
from numba import njit

from perllm.policies.cs_ucb_kernel import least_score
from perllm.policies.miss import miss_probability

Array = npt.NDArray[np.float64]
Inputs = tuple[npt.NDArray[np.bool_], Array, Array, Array, Array, Array, Array]

compiled = njit(cache=False)(least_score)  # as the decision pass runs it


def scan(
    inputs: Inputs, deadline_s: float, mu_o: float, sd_o: float, penalty: float
) -> tuple[int, float]:
    """The reference: every candidate's score in index order, the first strictly better (or
    as good and sooner done) replacing the best."""
    candidate, e_lcb, t_mean, factor, fixed, step, spread = inputs
    best, best_score, best_p = -1, math.inf, 1.0
    for s in range(len(e_lcb)):
        if not candidate[s]:
            continue
        p = miss_probability(deadline_s, factor[s], fixed[s], step[s], mu_o, sd_o, spread[s])
        score = e_lcb[s] + penalty * p
        if best < 0 or score < best_score or (score == best_score and t_mean[s] < t_mean[best]):
            best, best_score, best_p = s, score, p
    return best, best_p


def draw(rng: np.random.Generator, n: int) -> Inputs:
    """Servers with energies and times drawn from few values (so that ties are common), now and
    then an infinite or not-a-number one, and times near and far from the deadline."""
    candidate = rng.random(n) < 0.8
    candidate[rng.integers(n)] = True
    e_lcb = rng.choice(np.array([0.0, 1.0, 2.0, 5.0, 5.0, 40.0, math.inf, math.nan]), n)
    t_mean = rng.choice(np.array([0.5, 1.0, 1.0, 3.0, math.nan]), n)
    factor = rng.uniform(0.5, 3.0, n)
    fixed = rng.uniform(0.0, 6.0, n)
    step = rng.choice(np.array([0.0, 0.01, 0.05]), n)
    spread = rng.choice(np.array([0.0, 0.3, 1.0]), n)
    return candidate, e_lcb, t_mean, factor, fixed, step, spread


@pytest.mark.parametrize("penalty", [0.0, 1.0, 30.0, 1e4, math.inf])
def test_the_choice_is_the_plain_scan_s(penalty: float) -> None:
    rng = np.random.default_rng(7)
    for _ in range(400):
        n = int(rng.integers(1, 9))
        inputs = draw(rng, n)
        deadline_s, mu_o, sd_o = rng.uniform(0.5, 8.0), rng.normal(4.0, 1.0), rng.uniform(0, 1.5)
        expected = scan(inputs, deadline_s, mu_o, sd_o, penalty)
        got = compiled(*inputs, deadline_s, mu_o, sd_o, penalty)
        assert (got[0], got[1]) == expected, inputs


def test_identical_servers_go_to_the_first_candidate() -> None:
    n = 5
    same = np.ones(n)
    candidate = np.array([False, True, True, True, True])
    best, p = compiled(
        candidate, same * 3.0, same, same, same, same * 0.01, same * 0.3, 4.0, 3.0, 0.5, 30.0
    )
    assert best == 1
    assert p == miss_probability(4.0, 1.0, 1.0, 0.01, 3.0, 0.5, 0.3)


def test_a_dearer_server_wins_when_its_miss_is_less_likely_enough() -> None:
    """The penalty is what the skipped computations could not change: the cheaper server here
    is almost sure to miss, so the dearer one must still be evaluated and chosen."""
    candidate = np.array([True, True])
    e_lcb = np.array([10.0, 1.0])
    ones = np.ones(2)
    fixed = np.array([0.5, 50.0])  # server 1 cannot make a 4 s deadline
    best, p = compiled(
        candidate, e_lcb, ones, ones, fixed, ones * 0.001, ones * 0.3, 4.0, 3.0, 0.5, 30.0
    )
    assert best == 0
    assert p < 0.01


def test_a_higher_price_never_picks_a_likelier_miss_or_a_cheaper_server() -> None:
    """The trade-off's monotonicity, decision by decision. The penalty is the price times the
    request's reference energy, which the price does not change. For penalties ``a < b`` with
    picks ``x`` and ``y``, each pick's score is the least at its own penalty, so ``(b - a)(P_x -
    P_y) >= 0`` and ``E_y - E_x >= a (P_x - P_y) >= 0``: as the price rises the chosen miss
    probability never rises and the chosen energy never falls. (Over a whole run the decisions
    feed back into the loads and the learning, and no such order holds: docs/lab-notebook.md.)"""
    rng = np.random.default_rng(11)
    penalties = np.concatenate(([0.0], np.geomspace(0.01, 1e5, 60)))
    changed = 0
    for _ in range(300):
        n = int(rng.integers(2, 12))
        candidate, _, t_mean, factor, fixed, step, spread = draw(rng, n)
        e_lcb = rng.uniform(0.0, 50.0, n)  # finite energies: a score that is a number
        deadline_s, mu_o, sd_o = rng.uniform(0.5, 8.0), rng.normal(4.0, 1.0), rng.uniform(0, 1.5)
        inputs = (candidate, e_lcb, t_mean, factor, fixed, step, spread)
        picks = [compiled(*inputs, deadline_s, mu_o, sd_o, penalty) for penalty in penalties]
        for (x, p_x), (y, p_y) in itertools.pairwise(picks):
            assert p_y <= p_x and e_lcb[y] >= e_lcb[x], (inputs, deadline_s, mu_o, sd_o)
        changed += len({best for best, _ in picks}) > 1
    assert changed > 100  # the penalty moves the choice in most of these server sets
