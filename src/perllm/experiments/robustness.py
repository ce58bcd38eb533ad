"""Robustness over generated clusters: two objectives, deadlines met and energy per met request.

A *cell* is one (cluster, load, seed): every policy runs on the same requests there. Rows are
:class:`~perllm.experiments.rows.RunRow`, one run each; what is read of them is ``cluster``,
``load``, ``seed``, ``policy``, ``requests``, ``met`` (deadlines met), ``goodput_rps``,
``deadline_satisfaction``, ``weighted_energy_j`` and ``bound_goodput_rps`` (an upper bound on
goodput from :mod:`perllm.bound`, ``nan`` where there is none).

Definitions, for a policy ``p`` among the *contenders* (the non-clairvoyant policies scored
against one another), in a cell of ``n`` requests:

- **energy per met request**: ``E_p / (met_p + 1/2)`` with ``E_p`` the run's weighted energy
  (half a met request keeps it finite when a run meets nothing);
- **win rate** of ``p`` against ``q``: the share of cells where ``p``'s goodput is higher than
  ``q``'s, ties counting one half;
- **most-met other** of ``p`` in a cell: the contender other than ``p`` with the most deadlines
  met there (the first in the given order on ties);
- **goodput ratio**: ``(met_p + 1/2) / (met_b + 1/2)`` against the most-met other ``b``, which is
  ``goodput_p / goodput_b`` (all policies of a cell share its arrival window);
- **energy per met vs most-met baseline**: ``p``'s energy per met request over ``b``'s (lower is
  better);
- **dominated**: the share of cells where some other contender ``q`` meets at least as many
  deadlines, up to ``TOLERANCE`` of the cell's requests (``met_q >= met_p - 0.001 n``), at no
  more than ``DOMINANCE`` (0.95) times ``p``'s energy per met request: a cell where ``p`` is
  beaten on both objectives at once;
- **frugal ratio**: ``p``'s energy per met request over the least energy per met request of any
  contender, ``p`` included, that meets at least ``met_p - 0.005 n`` deadlines (``FRUGAL_SLACK``):
  1 when no policy meeting about as many deadlines spends less; summarised by its geometric
  mean, its 95th percentile and the share of cells where it is at most ``FRUGAL_WITHIN`` (1.25);
- ratios are summarised by their geometric mean over cells;
- **fraction of the bound**: ``goodput_p / bound``, averaged over the cells that have a bound;
- **cloud-only check** (:func:`cloud_check`): over the cells where ``cloud-only`` meets at least
  95% of deadlines, the share where a policy meets at least as many deadlines (no tolerance) at
  no more than 1.10 times cloud-only's energy per met request.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from perllm.experiments.rows import RunRow

__all__ = [
    "CloudCheck",
    "PolicyScore",
    "cells",
    "cloud_check",
    "dominated_in",
    "energy_per_met",
    "frugal_ratio_in",
    "geomean",
    "goodput_ratio",
    "quantile",
    "scores",
    "strongest_other",
    "win_matrix",
]

Cell = tuple[int, float, int]
"""(cluster, load, seed)."""
Runs = Mapping[str, RunRow]
"""A cell's runs by policy label."""
SMOOTHING = 0.5  # half a met request, so that ratios stay finite
TOLERANCE = 0.001  # "as many deadlines": within 0.1 percentage point of the cell's requests
DOMINANCE = 0.95  # dominated: another contender at <= 0.95x the energy per met request
FRUGAL_SLACK = 0.005  # frugal ratio's peers: within 0.5 percentage point of the requests
FRUGAL_WITHIN = 1.25  # the frugal ratio's reported share: cells at most this
CLOUD_MET = 0.95  # the cloud-only check's cells: cloud-only meets >= 95% of deadlines
CLOUD_ENERGY = 1.10  # ... and a policy passes at <= 1.10x cloud-only's energy per met request


@dataclass(frozen=True, slots=True)
class PolicyScore:
    """One policy's summary over all cells (``nan`` where it does not apply)."""

    policy: str
    cells: int
    win_rate: float
    goodput_ratio: float
    energy_ratio: float  # energy per met vs most-met baseline (geometric mean)
    goodput_ratio_by_load: dict[float, float]
    mean_satisfaction: float
    bound_fraction: float
    dominated: float
    frugal_ratio: float  # geometric mean
    frugal_within: float  # share of cells with a frugal ratio <= FRUGAL_WITHIN
    frugal_p95: float


@dataclass(frozen=True, slots=True)
class CloudCheck:
    """:func:`cloud_check`'s answer: ``passed`` of ``cells`` (``share`` is ``nan`` if none)."""

    policy: str
    reference: str
    cells: int
    passed: int

    @property
    def share(self) -> float:
        return self.passed / self.cells if self.cells else math.nan


def cells(rows: Iterable[RunRow]) -> dict[Cell, dict[str, RunRow]]:
    """Group rows by (cluster, load, seed), then by policy."""
    grouped: dict[Cell, dict[str, RunRow]] = defaultdict(dict)
    for row in rows:
        grouped[(row.cluster, row.load, row.seed)][row.policy] = row
    return dict(grouped)


def _met(row: RunRow) -> float:
    return float(row.met) + SMOOTHING


def goodput_ratio(mine: RunRow, other: RunRow) -> float:
    """``(met + 1/2) / (met_other + 1/2)``: the goodput ratio of two runs of one cell."""
    return _met(mine) / _met(other)


def energy_per_met(row: RunRow) -> float:
    """``weighted_energy_j / (met + 1/2)``: a run's energy per met request (J)."""
    return float(row.weighted_energy_j) / _met(row)


def dominated_in(runs: Runs, policy: str, contenders: Sequence[str]) -> bool:
    """Whether another contender of this cell meets as many deadlines as ``policy`` (up to
    :data:`TOLERANCE` of the requests) at <= :data:`DOMINANCE` x its energy per met request."""
    mine = runs[policy]
    floor = float(mine.met) - TOLERANCE * float(mine.requests)
    cap = DOMINANCE * energy_per_met(mine)
    return any(
        float(runs[q].met) >= floor and energy_per_met(runs[q]) <= cap
        for q in contenders
        if q != policy and q in runs
    )


def frugal_ratio_in(runs: Runs, policy: str, contenders: Sequence[str]) -> float:
    """``policy``'s energy per met request over the least among the contenders (``policy``
    included) meeting at least its deadlines less :data:`FRUGAL_SLACK` of the requests (>= 1)."""
    mine = runs[policy]
    floor = float(mine.met) - FRUGAL_SLACK * float(mine.requests)
    peers = [runs[q] for q in contenders if q != policy and q in runs]
    own = energy_per_met(mine)
    least = min([own, *(energy_per_met(q) for q in peers if float(q.met) >= floor)])
    return own / least if least > 0 else (1.0 if own == 0 else math.inf)


def win_matrix(
    grouped: Mapping[Cell, Runs], contenders: Sequence[str]
) -> dict[str, dict[str, float]]:
    """``matrix[p][q]``: the win rate of ``p`` against ``q`` on goodput (cells with both)."""
    matrix: dict[str, dict[str, float]] = {p: {} for p in contenders}
    for p in contenders:
        for q in contenders:
            if p == q:
                continue
            points = [
                1.0 if g[p].met > g[q].met else 0.5 if g[p].met == g[q].met else 0.0
                for g in grouped.values()
                if p in g and q in g
            ]
            matrix[p][q] = sum(points) / len(points) if points else math.nan
    return matrix


def strongest_other(runs: Runs, policy: str, contenders: Sequence[str]) -> str | None:
    """The contender other than ``policy`` with the most deadlines met in this cell."""
    others = [q for q in contenders if q != policy and q in runs]
    if not others:
        return None
    return max(others, key=lambda q: (runs[q].met, -others.index(q)))


def geomean(values: Sequence[float]) -> float:
    """The geometric mean of positive values (``nan`` if there are none)."""
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else math.nan


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def quantile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile, linear between order statistics (``nan`` if there are none)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def scores(
    rows: Iterable[RunRow], contenders: Sequence[str], policies: Sequence[str]
) -> list[PolicyScore]:
    """Score every policy in ``policies`` (contenders and references such as the oracle)
    against the contenders other than itself, cell by cell."""
    grouped = cells(rows)
    matrix = win_matrix(grouped, contenders)
    result = []
    for p in policies:
        goodput, energy, satisfaction, fractions, dominated, frugal = [], [], [], [], [], []
        by_load: dict[float, list[float]] = defaultdict(list)
        for (_, load, _), runs in sorted(grouped.items(), key=lambda item: str(item[0])):
            if p not in runs:
                continue
            mine = runs[p]
            satisfaction.append(float(mine.deadline_satisfaction))
            bound = float(mine.bound_goodput_rps)
            if bound > 0:
                fractions.append(float(mine.goodput_rps) / bound)
            best = strongest_other(runs, p, contenders)
            if best is None:
                continue
            ratio = goodput_ratio(mine, runs[best])
            goodput.append(ratio)
            by_load[float(load)].append(ratio)
            energy.append(energy_per_met(mine) / energy_per_met(runs[best]))
            dominated.append(float(dominated_in(runs, p, contenders)))
            frugal.append(frugal_ratio_in(runs, p, contenders))
        wins = [v for v in matrix.get(p, {}).values() if not math.isnan(v)]
        result.append(
            PolicyScore(
                policy=p,
                cells=len(satisfaction),
                win_rate=_mean(wins),
                goodput_ratio=geomean(goodput),
                energy_ratio=geomean(energy),
                goodput_ratio_by_load={k: geomean(v) for k, v in sorted(by_load.items())},
                mean_satisfaction=_mean(satisfaction),
                bound_fraction=_mean(fractions),
                dominated=_mean(dominated),
                frugal_ratio=geomean(frugal),
                frugal_within=_mean([float(r <= FRUGAL_WITHIN) for r in frugal]),
                frugal_p95=quantile(frugal, 0.95),
            )
        )
    return result


def cloud_check(rows: Iterable[RunRow], policy: str, reference: str = "cloud-only") -> CloudCheck:
    """Over the cells where ``reference`` meets >= :data:`CLOUD_MET` of its deadlines, how many
    where ``policy`` meets at least as many at <= :data:`CLOUD_ENERGY` x its energy per met
    request (cells lacking either policy do not count)."""
    eligible = passed = 0
    for runs in cells(rows).values():
        if policy not in runs or reference not in runs:
            continue
        mine, cloud = runs[policy], runs[reference]
        if float(cloud.met) < CLOUD_MET * float(cloud.requests):
            continue
        eligible += 1
        cap = CLOUD_ENERGY * energy_per_met(cloud)
        passed += float(mine.met) >= float(cloud.met) and energy_per_met(mine) <= cap
    return CloudCheck(policy, reference, eligible, passed)
