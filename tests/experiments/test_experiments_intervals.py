"""Intervals over seeds: each stays inside its quantity's range and contains its estimate, and
is the Student-t interval of the scale it is taken on."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import special, stats

from perllm.experiments.intervals import fmt, geometric, positive, ratio, share

SEEDS = st.integers(min_value=2, max_value=8)


def _t_interval(x: np.ndarray) -> tuple[float, float]:
    low, high = stats.t.interval(0.95, x.size - 1, loc=x.mean(), scale=stats.sem(x))
    return float(low), float(high)


def test_a_ratio_interval_is_the_t_interval_of_the_log_ratios() -> None:
    pairs = [(954.0, 1.0), (2.0, 1.0), (5000.0, 2.0)]
    stat = ratio(pairs)
    logs = np.log([a / b for a, b in pairs])
    low, high = _t_interval(logs)
    assert stat["mean"] == pytest.approx(math.exp(logs.mean()))
    assert stat["estimator"] == "geometric mean"
    assert (stat["ci_low"], stat["ci_high"]) == pytest.approx((math.exp(low), math.exp(high)))
    # the plain t-interval of these ratios reaches far below 0
    assert _t_interval(np.array([a / b for a, b in pairs]))[0] < -1000
    assert 0 < stat["ci_low"] <= stat["mean"] <= stat["ci_high"]


def test_a_share_interval_is_the_t_interval_on_the_logit_scale() -> None:
    values = np.array([0.999, 0.99, 0.62])
    stat = share(values)
    p = values.mean()
    half = _t_interval(values)[1] - p
    assert stat["mean"] == pytest.approx(p)
    assert special.logit(stat["ci_low"]) == pytest.approx(special.logit(p) - half / (p * (1 - p)))
    assert special.logit(stat["ci_high"]) == pytest.approx(special.logit(p) + half / (p * (1 - p)))
    # where the plain t-interval passes 1, this one stays below it
    assert _t_interval(values)[1] > 1
    assert 0 <= stat["ci_low"] <= p <= stat["ci_high"] < 1


def test_a_positive_interval_is_the_t_interval_on_the_log_scale() -> None:
    values = np.array([0.0, 0.0005, 0.06])
    stat = positive(values)
    m = values.mean()
    half = _t_interval(values)[1] - m
    assert stat["ci_low"] == pytest.approx(m * math.exp(-half / m))
    assert stat["ci_high"] == pytest.approx(m * math.exp(half / m))
    assert _t_interval(values)[0] < 0 < stat["ci_low"] <= m <= stat["ci_high"]


def test_a_floor_other_than_zero_bounds_the_interval() -> None:
    stat = positive([1.0, 1.02, 3.5], floor=1.0)
    assert 1.0 < stat["ci_low"] <= stat["mean"] <= stat["ci_high"]
    with pytest.raises(ValueError, match="outside"):
        positive([0.5, 1.5], floor=1.0)
    # rounding noise below the floor is not an error
    assert positive([1.0 - 1e-12, 1.0 - 1e-12], floor=1.0)["ci_low"] == 1.0


@given(st.lists(st.floats(0.0, 1.0), min_size=2, max_size=8))
def test_share_intervals_stay_in_the_unit_interval(values: list[float]) -> None:
    stat = share(values)
    assert 0.0 <= stat["ci_low"] <= stat["mean"] <= stat["ci_high"] <= 1.0


@given(st.lists(st.floats(0.0, 1e6), min_size=2, max_size=8))
def test_positive_intervals_stay_at_or_above_zero(values: list[float]) -> None:
    stat = positive(values)
    assert 0.0 <= stat["ci_low"] <= stat["mean"] <= stat["ci_high"]


@given(st.lists(st.tuples(st.floats(1e-6, 1e6), st.floats(1e-6, 1e6)), min_size=2, max_size=8))
def test_ratio_intervals_stay_above_zero(pairs: list[tuple[float, float]]) -> None:
    stat = ratio(pairs)
    assert 0.0 < stat["ci_low"] <= stat["mean"] * (1 + 1e-12)
    assert stat["mean"] <= stat["ci_high"] * (1 + 1e-12)


def test_where_there_is_no_honest_interval_there_is_none() -> None:
    one = share([0.8])
    assert one["mean"] == 0.8 and math.isnan(one["ci_low"]) and one["note"] == "one seed"
    assert fmt(one, 3) == "0.800"
    undefined = ratio([(5.0, 1.0), (4.0, 0.0)])
    assert math.isnan(undefined["mean"]) and undefined["note"] == "zero denominator"
    assert fmt(undefined, suffix="x") == "n/a"
    zero = ratio([(0.0, 1.0), (3.0, 1.0)])
    assert zero["mean"] == 0.0 and math.isnan(zero["ci_low"])
    assert fmt(zero, suffix="x") == "0.00x"
    bound = geometric([2.0, 8.0], bound="≥")
    assert bound["mean"] == pytest.approx(4.0) and math.isnan(bound["ci_high"])
    assert fmt(bound, suffix="x") == "≥ 4.00x"


def test_fmt_never_prints_a_positive_bound_as_zero() -> None:
    stat = positive([0.0, 0.0, 0.003])
    text = fmt(stat)
    low = text[text.index("[") + 1 : text.index(",")]
    assert float(low) > 0, text
    assert text.startswith("0.001 [")
