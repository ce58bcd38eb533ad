"""Learned statistics as additive totals: the protocol each statistic keeps (observe, bounds,
totals, merge), merging two routers' by addition, and a merge layer that knows no layout."""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest

from perllm.cluster import scenario
from perllm.gateway import shared_state
from perllm.policies import mergeable
from perllm.policies.bandit import ArmStats
from perllm.policies.base import StatisticsPolicy
from perllm.policies.log_ratio import LogRatioStats
from perllm.policies.mergeable import (
    Additive,
    LearnedStatistic,
    NamedSums,
    SharedStatistics,
    StatisticSet,
    Totals,
    add_totals,
    subtract_totals,
)
from perllm.policies.registry import make_policy
from perllm.sim.world import simulate
from perllm.workload.generator import generate_requests

CLUSTER = scenario.load("tiny")
LEARNING = ["cs-ucb", "ucb1", "epsilon-greedy"]


def run(policy: Any, n: int, seed: int) -> None:
    simulate(CLUSTER, policy, generate_requests(CLUSTER.workload, n, seed), seed=seed)


def _log_ratios(pooled: bool) -> LogRatioStats:
    return LogRatioStats(4, 1.0, 0.3, pooled=pooled, variants=2)


def _observations(seed: int) -> list[tuple[str, int, int, float]]:
    rng = np.random.default_rng(seed)
    return [
        (str(rng.choice(["chat", "batch|x"])), int(rng.integers(2)), int(rng.integers(4)), x)
        for x in rng.normal(0.2, 0.5, size=300)
    ]


def _approx(a: Mapping[str, float], b: Mapping[str, float]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert a[name] == pytest.approx(b[name], rel=1e-9, abs=1e-9), name


@pytest.mark.parametrize("pooled", [False, True])
def test_merging_two_replicas_equals_one_that_saw_both(pooled: bool) -> None:
    one, two, both = _log_ratios(pooled), _log_ratios(pooled), _log_ratios(pooled)
    seen = _observations(1)
    for i, (group, variant, server, x) in enumerate(seen):
        for stats in (one if i % 3 else two, both):
            stats.observe((stats.group(group) + variant, server), x)
    assert isinstance(one, LearnedStatistic)
    one.merge(two.totals())
    _approx(one.totals(), both.totals())
    for group in ("chat", "batch|x"):  # the same rows hold the same bounds
        for variant in range(2):
            for server in range(4):
                mine = one.bounds((one.group(group) + variant, server))
                theirs = both.bounds((both.group(group) + variant, server))
                assert mine == pytest.approx(theirs, rel=1e-9)


def test_totals_are_additive_and_bounds_derive_from_them() -> None:
    stats = _log_ratios(True)
    for group, variant, server, x in _observations(2):
        stats.observe((stats.group(group) + variant, server), x)
    totals = stats.totals()
    # Sums only: the counts are whole observations, and adding a statistic to itself doubles
    # every total (zeros are left out, never written).
    assert sum(v for k, v in totals.items() if "|count|" in k) == 300
    doubled = _log_ratios(True)
    doubled.adopt(totals)
    doubled.merge(totals)
    _approx(doubled.totals(), {k: 2 * v for k, v in totals.items()})
    # A fresh copy adopting the totals has every bound, row for row.
    copy = _log_ratios(True)
    copy.adopt(totals)
    for group, first in stats.groups.items():
        row = copy.group(group)
        np.testing.assert_allclose(copy.upper[row : row + 2], stats.upper[first : first + 2])
        np.testing.assert_allclose(copy.lower[row : row + 2], stats.lower[first : first + 2])
    # A bound a statistic does not keep is not made up.
    upper_only = LogRatioStats(4, 1.0, 0.3, sides=1)
    assert math.isnan(upper_only.bounds((upper_only.group("x"), 0))[0])


def test_arm_statistics_merge_and_bound_like_ucb1() -> None:
    one, two, both = ArmStats(3), ArmStats(3), ArmStats(3)
    rng = np.random.default_rng(3)
    for i in range(200):
        name, arm, reward = str(rng.choice(["a", "b"])), int(rng.integers(3)), -rng.random()
        for arms in (one if i % 2 else two, both):
            row = arms.row(name)
            arms.pull(row, arm)
            arms.observe((row, arm), reward)
    assert isinstance(one, LearnedStatistic)
    one.merge(two.totals())
    _approx(one.totals(), both.totals())
    row = both.row("a")
    low, high = both.bounds((row, 0))
    n, total = both.count[row, 0], both.count[row].sum()
    assert (low + high) / 2 == pytest.approx(both.mean[row, 0])
    assert (high - low) / 2 == pytest.approx(math.sqrt(2 * math.log(total) / n))
    fresh = ArmStats(3)
    assert fresh.bounds((fresh.row("a"), 0)) == (-math.inf, math.inf)


class _Tally:
    """A statistic the merge layer has never heard of: sums per name."""

    def __init__(self) -> None:
        self.sums: Totals = {}

    def totals(self) -> Totals:
        return dict(self.sums)

    def merge(self, totals: Mapping[str, float]) -> None:
        self.adopt(add_totals(self.sums, totals))

    def adopt(self, totals: Mapping[str, float], *, strict: bool = False) -> None:
        self.sums = dict(totals)


def test_the_merge_layer_knows_no_policy_s_layout() -> None:
    # It sees parts and names only: any statistic with totals fits, whatever its layout.
    tally, other = _Tally(), _Tally()
    statistics = StatisticSet({"k": tally, "v": other})
    assert isinstance(tally, Additive) and isinstance(statistics, Additive)
    statistics.adopt({"k|anything|at all": 2.0, "elsewhere|x": 1.0})  # another part: skipped
    statistics.merge({"k|anything|at all": 3.0, "v|y": 1.0})
    assert (tally.totals(), other.totals()) == ({"anything|at all": 5.0}, {"y": 1.0})
    assert statistics.totals() == {"k|anything|at all": 5.0, "v|y": 1.0}
    with pytest.raises(ValueError, match=r"^'elsewhere\|x': not a statistic of k or v$"):
        statistics.adopt({"elsewhere|x": 1.0}, strict=True)
    # Neither the merge layer nor the Redis sync names a policy's statistics or rows.
    for module in (mergeable, shared_state):
        source = inspect.getsource(module)
        for word in ("cs_ucb", "times", "energy", "crowded", "classes", "n_arms"):
            assert word not in source, (module.__name__, word)
        assert not re.search(r"\b2 \* ", source), module.__name__  # 2 * row + crowded


@pytest.mark.parametrize("name", LEARNING)
def test_a_policy_s_totals_round_trip_and_add(name: str) -> None:
    one, two = make_policy(name, seed=1), make_policy(name, seed=2)
    run(one, 200, 1)
    run(two, 100, 2)
    assert isinstance(one, SharedStatistics) and isinstance(one, StatisticsPolicy)
    totals_one, totals_two = one.shared_stats(), two.shared_stats()
    fresh = make_policy(name, seed=3)  # never decided: it learns the cluster's size here
    assert isinstance(fresh, StatisticsPolicy)
    fresh.adopt_shared_stats(totals_one, len(CLUSTER.servers))
    assert fresh.shared_stats() == totals_one
    fresh.adopt_shared_stats(add_totals(totals_one, totals_two), len(CLUSTER.servers))
    _approx(fresh.shared_stats(), add_totals(totals_one, totals_two))
    counts = [v for k, v in fresh.shared_stats().items() if "|count|" in k]
    assert sum(counts) == sum(
        v for t in (totals_one, totals_two) for k, v in t.items() if "|count|" in k
    )
    run(fresh, 20, 4)  # and decides on them


def test_cs_ucb_totals_hold_times_energy_and_lengths() -> None:
    policy = make_policy("cs-ucb", seed=1)
    run(policy, 200, 1)
    totals = policy.shared_stats()
    assert {name.split("|", 1)[0] for name in totals} == {"t", "e", "l"}
    lengths = policy.lengths.state()["count"]
    assert {k: v for k, v in totals.items() if k.startswith("l|count|")} == {
        f"l|count|{c}": float(n) for c, n in lengths.items()
    }


@pytest.mark.parametrize("name", ["ucb1", "epsilon-greedy"])
def test_arm_bandit_totals_keep_pending_pulls(name: str) -> None:
    one, two = make_policy(name, seed=1), make_policy(name, seed=2)
    run(one, 200, 1)
    run(two, 100, 2)
    arms = one.arms
    assert arms is not None
    totals = one.shared_stats()
    arms.pending[0, 0] += 2.0  # pulls of its own still out
    finished = arms.count.sum()
    one.adopt_shared_stats(add_totals(totals, two.shared_stats()), len(CLUSTER.servers))
    assert arms.pending[0, 0] == 2.0
    assert arms.count.sum() == finished + two.arms.count.sum()
    assert np.array_equal(arms.tried, arms.count + arms.pending)


class _PerClass:
    """Sums per statistic and class, as the reward and the output lengths keep them."""

    def __init__(self) -> None:
        self.kept: dict[str, Any] = {}

    def state(self) -> dict[str, Any]:
        return self.kept

    def restore(self, state: dict[str, Any]) -> None:
        self.kept = state


def test_sums_per_class_are_totals_named_by_statistic_and_class() -> None:
    per_class = _PerClass()
    sums = NamedSums(per_class, ("sum", "count"), integral=("count",))
    sums.adopt({"sum|a|b": 2.5, "count|a|b": 2.0, "median|a": 1.0})  # not one of its: skipped
    assert per_class.kept == {"sum": {"a|b": 2.5}, "count": {"a|b": 2}}
    sums.merge({"count|a|b": 1.0, "count|c": 1.0})
    assert sums.totals() == {"sum|a|b": 2.5, "count|a|b": 3.0, "count|c": 1.0}
    with pytest.raises(ValueError, match=r"'median\|a': not a total of sum, count by name"):
        sums.adopt({"median|a": 1.0}, strict=True)


def test_names_a_statistic_cannot_place_are_skipped_unless_strict() -> None:
    # Totals from another version or another cluster (a server beyond this one's) in a shared
    # store are skipped; in a saved state they are refused, naming the first.
    stats = LogRatioStats(2, 1.0, 0.3, variants=2)
    foreign = {"0|5|count|chat": 3.0, "e|3|count": 1.0, "0|1|count|chat": math.nan}
    stats.adopt({**foreign, "1|1|count|chat": 2.0})
    assert stats.totals() == {"1|1|count|chat": 2.0}
    with pytest.raises(ValueError, match=r"'0\|5\|count\|chat': not a server of 2"):
        stats.adopt(foreign, strict=True)
    with pytest.raises(ValueError, match="not a finite number"):
        stats.adopt({"0|1|count|chat": math.nan}, strict=True)


def test_subtract_drops_rounding_noise() -> None:
    assert subtract_totals({"a": 0.1 + 0.2, "b": 2.0}, {"a": 0.3, "c": 1.0}) == {
        "b": 2.0,
        "c": -1.0,
    }
