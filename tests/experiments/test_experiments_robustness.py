"""Robustness analysis: win rates, the strongest other policy per cell, ratios, the bound."""

from __future__ import annotations

import math
from typing import Any

import pytest

from perllm.experiments.robustness import cells, scores, strongest_other, win_matrix

CONTENDERS = ["a", "b", "c"]


def _row(cluster: int, policy: str, met: int, energy: float, **extra: Any) -> dict[str, Any]:
    return {
        "cluster": cluster,
        "load": 1.0,
        "seed": 0,
        "policy": policy,
        "met": met,
        "goodput_rps": met / 10.0,
        "deadline_satisfaction": met / 100.0,
        "weighted_energy_j": energy,
        **extra,
    }


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


def test_within_one_percent_forgives_only_losses_of_at_most_one_percent() -> None:
    rows = [
        _row(0, "a", 990, 1.0),  # 1% fewer than b: within
        _row(0, "b", 1000, 1.0),
        _row(1, "a", 989, 1.0),  # 1.1% fewer: not within
        _row(1, "b", 1000, 1.0),
    ]
    by_policy = {s.policy: s for s in scores(rows, ["a", "b"], ["a", "b"])}
    assert by_policy["a"].beats_all == 0.0
    assert by_policy["a"].beats_all_within == 0.5
    assert by_policy["b"].beats_all_within == 1.0


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
    assert a.beats_all == 0.5  # cell 0 only
    assert by_policy["b"].beats_all == 0.5  # cell 1 only
    assert by_policy["c"].beats_all == 0.0  # ties b in cell 0, but a meets more there
    assert a.beats_all_by_load == {1.0: 0.5}
    oracle = by_policy["oracle"]
    assert math.isnan(oracle.win_rate)
    assert oracle.goodput_ratio == pytest.approx(math.sqrt((90.5 / 80.5) * (50.5 / 50.5)))
    # c meets nothing in cell 1: its ratio stays finite.
    assert 0 < by_policy["c"].goodput_ratio < 1


def test_bound_fraction_averages_cells_with_a_bound() -> None:
    rows = [dict(row, bound_goodput_rps=10.0) for row in ROWS]
    rows[0]["bound_goodput_rps"] = math.nan
    a = next(s for s in scores(rows, CONTENDERS, ["a"]) if s.policy == "a")
    assert a.bound_fraction == pytest.approx(0.4)  # cell 1 only: 4.0 / 10.0
