"""Robustness analysis: win rates, the most-met other policy per cell, ratios, dominance,
the frugal ratio, the cloud-only check and the bound."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest

from perllm.experiments.robustness import (
    cells,
    cloud_check,
    dominated_in,
    frugal_ratio_in,
    quantile,
    scores,
    strongest_other,
    win_matrix,
)
from perllm.experiments.rows import RunRow

CONTENDERS = ["a", "b", "c"]


def _row(cluster: int, policy: str, met: int, energy: float, **extra: Any) -> RunRow:
    fields = {
        "cluster": cluster,
        "load": 1.0,
        "seed": 0,
        "policy": policy,
        "requests": 100,
        "met": met,
        "goodput_rps": met / 10.0,
        "deadline_satisfaction": met / 100.0,
        "weighted_energy_j": energy,
        "bound_goodput_rps": math.nan,
        **extra,
    }
    return RunRow(**{**dict.fromkeys(RunRow.columns(), 0), **fields})


ROWS = [
    # cell 0: a 80, b 60, c 60; oracle 90
    _row(0, "a", 80, 800.0),
    _row(0, "b", 60, 300.0),
    _row(0, "c", 60, 600.0),
    _row(0, "oracle", 90, 450.0),
    # cell 1: a 40, b 50, c 0
    _row(1, "a", 40, 400.0),
    _row(1, "b", 50, 250.0),
    _row(1, "c", 0, 100.0),
    _row(1, "oracle", 50, 200.0),
]


def test_win_matrix_counts_ties_as_halves() -> None:
    matrix = win_matrix(cells(ROWS), CONTENDERS)
    assert matrix["a"]["b"] == 0.5  # wins cell 0, loses cell 1
    assert matrix["b"]["c"] == 0.75  # tie in cell 0, win in cell 1
    assert matrix["c"]["b"] == 0.25
    assert "oracle" not in matrix


def test_strongest_other_excludes_the_policy_and_the_oracle() -> None:
    grouped = cells(ROWS)
    cell0 = grouped[(0, 1.0, 0)]
    assert strongest_other(cell0, "a", CONTENDERS) == "b"  # b and c tie: the first listed
    assert strongest_other(cell0, "b", CONTENDERS) == "a"
    assert strongest_other(cell0, "oracle", CONTENDERS) == "a"


def test_scores_are_geometric_means_against_the_strongest_other() -> None:
    by_policy = {s.policy: s for s in scores(ROWS, CONTENDERS, [*CONTENDERS, "oracle"])}
    a = by_policy["a"]
    # cell 0: a 80 vs b 60; cell 1: a 40 vs b 50
    expected = math.sqrt((80.5 / 60.5) * (40.5 / 50.5))
    assert a.goodput_ratio == pytest.approx(expected)
    energy = math.sqrt((800 / 80.5) / (300 / 60.5) * (400 / 40.5) / (250 / 50.5))
    assert a.energy_ratio == pytest.approx(energy)
    assert a.goodput_ratio_by_load == {1.0: pytest.approx(expected)}
    assert a.win_rate == pytest.approx((0.5 + 1.0) / 2)  # against b, against c
    assert a.mean_satisfaction == pytest.approx(0.6)
    assert math.isnan(a.bound_fraction)
    oracle = by_policy["oracle"]
    assert math.isnan(oracle.win_rate)
    assert oracle.goodput_ratio == pytest.approx(math.sqrt((90.5 / 80.5) * (50.5 / 50.5)))
    # c meets nothing in cell 1: its ratio stays finite.
    assert 0 < by_policy["c"].goodput_ratio < 1


def test_bound_fraction_averages_cells_with_a_bound() -> None:
    rows = [dataclasses.replace(row, bound_goodput_rps=10.0) for row in ROWS]
    rows[0] = dataclasses.replace(rows[0], bound_goodput_rps=math.nan)
    a = next(s for s in scores(rows, CONTENDERS, ["a"]) if s.policy == "a")
    assert a.bound_fraction == pytest.approx(0.4)  # cell 1 only: 4.0 / 10.0


def _cell(*runs: tuple[str, int, float], requests: int = 1000) -> dict[str, RunRow]:
    """One cell's runs: (policy, met, weighted energy)."""
    return {p: _row(0, p, met, energy, requests=requests) for p, met, energy in runs}


def test_dominated_needs_as_many_deadlines_and_five_percent_less_energy() -> None:
    # energy per met request: a 1000/100.5, b at 0.949x with one deadline fewer (0.1 pt of 1000)
    runs = _cell(("a", 100, 1000.0), ("b", 99, 0.949 * 1000.0 * 99.5 / 100.5))
    assert dominated_in(runs, "a", ["a", "b"])
    assert not dominated_in(runs, "b", ["a", "b"])
    # two deadlines fewer is more than the tolerance
    runs = _cell(("a", 100, 1000.0), ("b", 98, 0.5 * 1000.0))
    assert not dominated_in(runs, "a", ["a", "b"])
    # as many deadlines at 0.96x the energy per met request: not 5% less
    runs = _cell(("a", 100, 1000.0), ("b", 100, 960.0))
    assert not dominated_in(runs, "a", ["a", "b"])
    # the oracle is no contender
    runs = _cell(("a", 100, 1000.0), ("oracle", 200, 10.0))
    assert not dominated_in(runs, "a", ["a"])


def test_frugal_ratio_compares_with_the_cheapest_meeting_nearly_as_many() -> None:
    # peers within 0.5 pt of 1000 requests: b (5 fewer) counts, c (6 fewer) does not
    runs = _cell(("a", 100, 400.0), ("b", 95, 95.5), ("c", 94, 1.0))
    assert frugal_ratio_in(runs, "a", ["a", "b", "c"]) == pytest.approx((400 / 100.5) / 1.0)
    # c is within 0.5 pt of b's 95 deadlines: b's peer
    assert frugal_ratio_in(runs, "b", ["a", "b", "c"]) == pytest.approx(1.0 / (1.0 / 94.5))
    assert frugal_ratio_in(runs, "c", ["a", "b", "c"]) == 1.0  # the cheapest of all


def test_scores_summarise_dominance_and_the_frugal_ratio() -> None:
    rows = [
        # cell 0: b dominates a (as many met, half the energy): a's frugal ratio 2
        _row(0, "a", 50, 1000.0),
        _row(0, "b", 50, 500.0),
        # cell 1: a meets the most, b spends the least: neither dominates; frugal ratios 1
        _row(1, "a", 60, 300.0),
        _row(1, "b", 10, 10.0),
    ]
    by_policy = {s.policy: s for s in scores(rows, ["a", "b"], ["a", "b"])}
    a, b = by_policy["a"], by_policy["b"]
    assert a.dominated == 0.5 and b.dominated == 0.0
    assert a.frugal_ratio == pytest.approx(math.sqrt(2.0))
    assert a.frugal_within == 0.5
    assert a.frugal_p95 == pytest.approx(1.0 + 0.95 * (2.0 - 1.0))
    assert b.frugal_ratio == pytest.approx(1.0) and b.frugal_within == 1.0


def test_quantile_interpolates_between_order_statistics() -> None:
    assert quantile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert quantile([1.0, 2.0], 0.95) == pytest.approx(1.95)
    assert math.isnan(quantile([], 0.5))


def test_cloud_check_counts_cells_where_cloud_only_meets_95_percent() -> None:
    rows = [
        # cell 0: cloud-only 96 of 100; cs-ucb as many at 1.05x its energy per met: passes
        _row(0, "cloud-only", 96, 1000.0),
        _row(0, "cs-ucb", 96, 1050.0),
        # cell 1: cloud-only 98; cs-ucb one fewer: fails
        _row(1, "cloud-only", 98, 1000.0),
        _row(1, "cs-ucb", 97, 100.0),
        # cell 2: cloud-only 94: not counted
        _row(2, "cloud-only", 94, 1000.0),
        _row(2, "cs-ucb", 94, 100.0),
        # cell 3: cs-ucb at 1.2x cloud-only's energy per met: fails
        _row(3, "cloud-only", 95, 1000.0),
        _row(3, "cs-ucb", 95, 1200.0),
    ]
    check = cloud_check(rows, "cs-ucb")
    assert (check.cells, check.passed) == (3, 1)
    assert check.share == pytest.approx(1 / 3)
    assert math.isnan(cloud_check(rows, "missing").share)
