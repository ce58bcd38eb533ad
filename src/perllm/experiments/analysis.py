"""From result rows to the numbers people compare: per-cell tables, capacity, headline ratios.

- **goodput** is read at the deployment's nominal load (rate factor 1.0);
- **capacity** is the highest arrival rate at which a policy keeps at least 90% of deadlines met,
  found per seed from the load sweep by linear interpolation between the last rate that meets
  the target and the first that does not. A policy that meets it at every rate of the sweep is
  only known to reach the top rate (``">="``); one that meets it at none, only to stay below
  the lowest rate tested (``"<"``, with that rate as the value);
- **energy** is the energy per completed request at nominal load;
- a **ratio** of CS-UCB to another policy is computed per seed (the two ran on the same workload,
  so they are paired), and reported as the geometric mean over seeds with a 95% interval.

Every mean and interval comes from :mod:`perllm.experiments.intervals`. The rows are
:class:`~perllm.experiments.rows.GridRow`; the tables are :class:`PolicyStats` per cell and
policy, and :class:`HeadlineCell` per cell.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from perllm.experiments.intervals import Estimate, estimate, geometric, positive, ratio, share
from perllm.experiments.rows import GridRow

SATISFACTION_TARGET = 0.9
Cell = tuple[str, str]
"""A cell of the grid: (deployment, bandwidth condition)."""
Capacity = tuple[float, str]
"""A capacity in requests/s and how it is known: ``"="``, ``">="`` (at least) or ``"<"``."""

BELOW = "below the lowest load tested"
ENERGY_PARTS = ("transmission", "inference", "idle")

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True, slots=True)
class PolicyStats:
    """One policy in one cell: its headline metrics over seeds at nominal load, the lowest
    arrival rate of the cell's sweep, and its mean energy per completed request by part."""

    goodput_rps: Estimate
    deadline_satisfaction: Estimate
    energy_per_request_j: Estimate
    capacity_rps: Estimate
    lowest_rate_rps: float
    energy_parts_j: dict[str, float]

    def to_json(self) -> dict[str, object]:
        return {
            "goodput_rps": self.goodput_rps,
            "deadline_satisfaction": self.deadline_satisfaction,
            "energy_per_request_j": self.energy_per_request_j,
            "capacity_rps": self.capacity_rps,
            "lowest_rate_rps": self.lowest_rate_rps,
            "energy_parts_j": self.energy_parts_j,
        }


@dataclass(frozen=True, slots=True)
class Versus:
    """The subject's ratios to one other policy in one cell (geometric means over seeds)."""

    goodput_ratio: Estimate
    capacity_ratio: Estimate
    energy_ratio: Estimate

    def to_json(self) -> dict[str, object]:
        return {
            "goodput_ratio": self.goodput_ratio,
            "capacity_ratio": self.capacity_ratio,
            "energy_ratio": self.energy_ratio,
        }


@dataclass(frozen=True, slots=True)
class HeadlineCell:
    """One cell's headline: the subject's ratios to every other policy."""

    deployment: str
    bandwidth: str
    versus: dict[str, Versus]

    def to_json(self) -> dict[str, object]:
        return {
            "deployment": self.deployment,
            "bandwidth": self.bandwidth,
            "versus": {policy: v.to_json() for policy, v in self.versus.items()},
        }


def capacity(rates: Sequence[float], satisfaction: Sequence[float]) -> Capacity:
    """Highest rate with satisfaction >= target (interpolated), and how it is known.

    ``(rate, "=")`` where the sweep crosses the target, ``(top rate, ">=")`` where it never
    falls below it, ``(lowest rate, "<")`` where it never reaches it.
    """
    points = sorted(zip(rates, satisfaction, strict=True))
    for (r0, s0), (r1, s1) in itertools.pairwise(points):
        if s0 >= SATISFACTION_TARGET > s1:
            return r0 + (s0 - SATISFACTION_TARGET) / (s0 - s1) * (r1 - r0), "="
    if points and points[-1][1] >= SATISFACTION_TARGET:
        return points[-1][0], ">="
    return (points[0][0] if points else math.nan), "<"


def _by(rows: Iterable[GridRow], key: Callable[[GridRow], K]) -> dict[K, list[GridRow]]:
    groups: dict[K, list[GridRow]] = defaultdict(list)
    for row in rows:
        groups[key(row)].append(row)
    return groups


def capacities(rows: Sequence[GridRow]) -> dict[tuple[str, str, str, int], Capacity]:
    """(deployment, bandwidth, policy, seed) -> (capacity in requests/s, how it is known)."""
    out = {}
    groups = _by(rows, lambda r: (r.deployment, r.bandwidth, r.policy, r.seed))
    for key, group in groups.items():
        rates = [r.rate_rps for r in group]
        sats = [r.deadline_satisfaction for r in group]
        out[key] = capacity(rates, sats)
    return out


def capacity_estimate(per_seed: Sequence[Capacity]) -> Estimate:
    """Mean capacity over seeds with its interval; where some seed's capacity lies outside the
    loads tested, only a bound on the mean (no interval), or none if seeds fall on both sides."""
    values = [v for v, _ in per_seed]
    kinds = {k for _, k in per_seed}
    if kinds <= {"="}:
        return positive(values)
    mean = float(np.mean(values))
    if kinds >= {"<", ">="}:
        note = "outside the loads tested, on both sides"
        return estimate(math.nan, n=len(values), note=note)
    if "<" in kinds:
        return estimate(mean, n=len(values), bound="<", note=BELOW)
    return estimate(mean, n=len(values), bound="≥", note="above the highest load tested")


def capacity_ratio(pairs: Sequence[tuple[Capacity, Capacity]]) -> Estimate:
    """Geometric mean over seeds of one capacity over another (paired by seed).

    A capacity outside the loads tested makes its seed's ratio a bound (``<`` lowest rate in
    the denominator: at least; in the numerator: at most; ``>=`` the other way round); seeds
    bounded on the same side give a bound, seeds bounded on both sides no estimate.
    """
    values, sides = [], set()
    for (a, ka), (b, kb) in pairs:
        at_least = ka == ">=" or kb == "<"
        at_most = ka == "<" or kb == ">="
        sides |= {"≥"} if at_least else set()
        sides |= {"≤"} if at_most else set()
        values.append(a / b if b > 0 else math.nan)
    if len(sides) > 1:
        note = "capacities outside the loads tested, on both sides"
        return estimate(math.nan, n=len(values), estimator="geometric mean", note=note)
    if not sides:
        return ratio((a, b) for (a, _), (b, _) in pairs)
    return geometric(values, bound=sides.pop())


def _lowest_rate(rows: Sequence[GridRow]) -> dict[Cell, float]:
    lowest: dict[Cell, float] = {}
    for cell, group in _by(rows, lambda r: (r.deployment, r.bandwidth)).items():
        lowest[cell] = min(float(r.rate_rps) for r in group)
    return lowest


def _energy_part(row: GridRow, part: str) -> float:
    joules = {
        "transmission": row.energy_transmission_j,
        "inference": row.energy_inference_j,
        "idle": row.energy_idle_j,
    }
    return joules[part]


def cell_tables(rows: Sequence[GridRow]) -> dict[Cell, dict[str, PolicyStats]]:
    """Per (deployment, bandwidth), per policy: estimates and intervals of the headline metrics,
    and the lowest arrival rate of the sweep."""
    caps = capacities(rows)
    lowest = _lowest_rate(rows)
    nominal = [r for r in rows if r.rate_factor == 1.0]
    tables: dict[Cell, dict[str, PolicyStats]] = defaultdict(dict)
    groups = _by(nominal, lambda r: (r.deployment, r.bandwidth, r.policy))
    for (dep, bw, policy), group in groups.items():
        tables[(dep, bw)][policy] = PolicyStats(
            goodput_rps=positive([r.goodput_rps for r in group]),
            deadline_satisfaction=share([r.deadline_satisfaction for r in group]),
            energy_per_request_j=positive([r.energy_per_request_j for r in group]),
            capacity_rps=capacity_estimate([caps[(dep, bw, policy, r.seed)] for r in group]),
            lowest_rate_rps=lowest[(dep, bw)],
            energy_parts_j={
                part: float(np.mean([_energy_part(r, part) / max(r.completed, 1) for r in group]))
                for part in ENERGY_PARTS
            },
        )
    return dict(tables)


def headline(rows: Sequence[GridRow], subject: str = "cs-ucb") -> dict[Cell, HeadlineCell]:
    """Per cell, ``subject``'s goodput, capacity and energy ratios against every other policy."""
    caps = capacities(rows)
    nominal = {
        (r.deployment, r.bandwidth, r.policy, r.seed): r for r in rows if r.rate_factor == 1.0
    }
    out: dict[Cell, HeadlineCell] = {}
    cells = sorted({(d, b) for d, b, _, _ in nominal})
    for dep, bw in cells:
        policies = sorted({p for d, b, p, _ in nominal if (d, b) == (dep, bw)} - {subject})
        seeds = sorted({s for d, b, p, s in nominal if (d, b, p) == (dep, bw, subject)})
        versus = {}
        for other in policies:
            paired = [s for s in seeds if (dep, bw, other, s) in nominal]
            a = {s: nominal[(dep, bw, subject, s)] for s in paired}
            b = {s: nominal[(dep, bw, other, s)] for s in paired}
            versus[other] = Versus(
                goodput_ratio=ratio((a[s].goodput_rps, b[s].goodput_rps) for s in paired),
                capacity_ratio=capacity_ratio(
                    [(caps[(dep, bw, subject, s)], caps[(dep, bw, other, s)]) for s in paired]
                ),
                energy_ratio=ratio(
                    (a[s].energy_per_request_j, b[s].energy_per_request_j) for s in paired
                ),
            )
        out[(dep, bw)] = HeadlineCell(dep, bw, versus)
    return out
