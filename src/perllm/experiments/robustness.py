"""Robustness over generated clusters: win rates and ratios against the strongest baseline.

A *cell* is one (cluster, load, seed): every policy runs on the same requests there. Rows are
one run each, with at least ``cluster``, ``load``, ``seed``, ``policy``, ``met`` (deadlines met),
``goodput_rps`` and ``weighted_energy_j``; optionally ``bound_goodput_rps`` (an upper bound on
goodput from :mod:`perllm.bound`, when that package is installed).

Definitions, for a policy ``p`` among the *contenders* (the non-clairvoyant policies run):

- **win rate** of ``p`` against ``q``: the share of cells where ``p``'s goodput is higher than
  ``q``'s, ties counting one half;
- **strongest baseline** of ``p`` in a cell: the contender other than ``p`` with the highest
  goodput there (the first in the given order on ties), so every policy is measured against the
  best of the *others*, cell by cell;
- **goodput ratio**: ``(met_p + 1/2) / (met_b + 1/2)``, which is ``goodput_p / goodput_b``
  (all policies of a cell share its arrival window) kept finite when one of them meets nothing;
- **energy ratio**: energy per deadline-met request, ``E_p / (met_p + 1/2)`` over the same for
  ``b`` (weighted energy; lower is better);
- ratios are summarised by their geometric mean over cells;
- **beats all**: the share of cells where ``p`` meets at least as many deadlines as every other
  contender (as many as its strongest baseline there); **within 1%**: the same with ``p``
  allowed to meet up to 1% fewer than that baseline (``CLOSE``). Where every good policy meets
  nearly all deadlines, a cell is decided by a handful of requests, and a change as small as a
  few percent in one prior width moves that many: the second figure shows which losses are of
  that size;
- **fraction of the bound**: ``goodput_p / bound``, averaged over the cells that have a bound.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "PolicyScore",
    "cells",
    "goodput_ratio",
    "scores",
    "strongest_other",
    "win_matrix",
]

Cell = tuple[Any, Any, Any]
SMOOTHING = 0.5  # half a met request, so that ratios stay finite
CLOSE = 0.01  # "within 1%": meets at least (1 - CLOSE) times the strongest baseline's deadlines


@dataclass(frozen=True, slots=True)
class PolicyScore:
    """One policy's summary over all cells (``nan`` where it does not apply)."""

    policy: str
    cells: int
    win_rate: float
    goodput_ratio: float
    energy_ratio: float
    goodput_ratio_by_load: dict[float, float]
    mean_satisfaction: float
    bound_fraction: float
    beats_all: float
    beats_all_by_load: dict[float, float]
    beats_all_within: float


def cells(rows: Iterable[Mapping[str, Any]]) -> dict[Cell, dict[str, Mapping[str, Any]]]:
    """Group rows by (cluster, load, seed), then by policy."""
    grouped: dict[Cell, dict[str, Mapping[str, Any]]] = defaultdict(dict)
    for row in rows:
        grouped[(row["cluster"], row["load"], row["seed"])][str(row["policy"])] = row
    return dict(grouped)


def _met(row: Mapping[str, Any]) -> float:
    return float(row["met"]) + SMOOTHING


def goodput_ratio(mine: Mapping[str, Any], other: Mapping[str, Any]) -> float:
    """``(met + 1/2) / (met_other + 1/2)``: the goodput ratio of two runs of one cell."""
    return _met(mine) / _met(other)


def _energy_per_met(row: Mapping[str, Any]) -> float:
    return float(row["weighted_energy_j"]) / _met(row)


def win_matrix(
    grouped: Mapping[Cell, Mapping[str, Mapping[str, Any]]], contenders: Sequence[str]
) -> dict[str, dict[str, float]]:
    """``matrix[p][q]``: the win rate of ``p`` against ``q`` on goodput (cells with both)."""
    matrix: dict[str, dict[str, float]] = {p: {} for p in contenders}
    for p in contenders:
        for q in contenders:
            if p == q:
                continue
            points = [
                1.0 if g[p]["met"] > g[q]["met"] else 0.5 if g[p]["met"] == g[q]["met"] else 0.0
                for g in grouped.values()
                if p in g and q in g
            ]
            matrix[p][q] = sum(points) / len(points) if points else math.nan
    return matrix


def strongest_other(
    runs: Mapping[str, Mapping[str, Any]], policy: str, contenders: Sequence[str]
) -> str | None:
    """The contender other than ``policy`` with the most deadlines met in this cell."""
    others = [q for q in contenders if q != policy and q in runs]
    if not others:
        return None
    return max(others, key=lambda q: (runs[q]["met"], -others.index(q)))


def _geomean(values: Sequence[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else math.nan


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def scores(
    rows: Iterable[Mapping[str, Any]], contenders: Sequence[str], policies: Sequence[str]
) -> list[PolicyScore]:
    """Score every policy in ``policies`` (contenders and references such as the oracle)
    against the strongest contender other than itself, cell by cell."""
    grouped = cells(rows)
    matrix = win_matrix(grouped, contenders)
    result = []
    for p in policies:
        goodput, energy, satisfaction, fractions, beats, close = [], [], [], [], [], []
        by_load: dict[float, list[float]] = defaultdict(list)
        beats_by_load: dict[float, list[float]] = defaultdict(list)
        for (_, load, _), runs in sorted(grouped.items(), key=lambda item: str(item[0])):
            if p not in runs:
                continue
            mine = runs[p]
            satisfaction.append(float(mine["deadline_satisfaction"]))
            bound = float(mine.get("bound_goodput_rps", math.nan))
            if bound > 0:
                fractions.append(float(mine["goodput_rps"]) / bound)
            best = strongest_other(runs, p, contenders)
            if best is None:
                continue
            ratio = goodput_ratio(mine, runs[best])
            goodput.append(ratio)
            by_load[float(load)].append(ratio)
            beaten = float(mine["met"] >= runs[best]["met"])
            beats.append(beaten)
            close.append(float(mine["met"] >= (1.0 - CLOSE) * runs[best]["met"]))
            beats_by_load[float(load)].append(beaten)
            energy.append(_energy_per_met(mine) / _energy_per_met(runs[best]))
        wins = [v for v in matrix.get(p, {}).values() if not math.isnan(v)]
        result.append(
            PolicyScore(
                policy=p,
                cells=len(satisfaction),
                win_rate=_mean(wins),
                goodput_ratio=_geomean(goodput),
                energy_ratio=_geomean(energy),
                goodput_ratio_by_load={k: _geomean(v) for k, v in sorted(by_load.items())},
                mean_satisfaction=_mean(satisfaction),
                bound_fraction=_mean(fractions),
                beats_all=_mean(beats),
                beats_all_by_load={k: _mean(v) for k, v in sorted(beats_by_load.items())},
                beats_all_within=_mean(close),
            )
        )
    return result
