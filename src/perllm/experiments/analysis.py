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

Every mean and interval comes from :mod:`perllm.experiments.intervals`.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from perllm.experiments.intervals import Estimate, estimate, geometric, positive, ratio, share

SATISFACTION_TARGET = 0.9
Row = dict[str, Any]
Cell = tuple[str, str]
Capacity = tuple[float, str]
"""A capacity in requests/s and how it is known: ``"="``, ``">="`` (at least) or ``"<"``."""

BELOW = "below the lowest load tested"


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


def _by(rows: Iterable[Row], *keys: str) -> dict[tuple[Any, ...], list[Row]]:
    groups: dict[tuple[Any, ...], list[Row]] = defaultdict(list)
    for row in rows:
        groups[tuple(row[k] for k in keys)].append(row)
    return groups


def capacities(rows: Sequence[Row]) -> dict[tuple[str, str, str, int], Capacity]:
    """(deployment, bandwidth, policy, seed) -> (capacity in requests/s, how it is known)."""
    out = {}
    for key, group in _by(rows, "deployment", "bandwidth", "policy", "seed").items():
        rates = [r["rate_rps"] for r in group]
        sats = [r["deadline_satisfaction"] for r in group]
        out[(key[0], key[1], key[2], key[3])] = capacity(rates, sats)
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


def _lowest_rate(rows: Sequence[Row]) -> dict[tuple[str, str], float]:
    lowest: dict[tuple[str, str], float] = {}
    for (dep, bw), group in _by(rows, "deployment", "bandwidth").items():
        lowest[(dep, bw)] = min(float(r["rate_rps"]) for r in group)
    return lowest


def cell_tables(rows: Sequence[Row]) -> dict[Cell, dict[str, dict[str, Any]]]:
    """Per (deployment, bandwidth), per policy: estimates and intervals of the headline metrics,
    and the lowest arrival rate of the sweep."""
    caps = capacities(rows)
    lowest = _lowest_rate(rows)
    nominal = [r for r in rows if r["rate_factor"] == 1.0]
    tables: dict[Cell, dict[str, dict[str, Any]]] = defaultdict(dict)
    for (dep, bw, policy), group in _by(nominal, "deployment", "bandwidth", "policy").items():
        tables[(dep, bw)][policy] = {
            "goodput_rps": positive([r["goodput_rps"] for r in group]),
            "deadline_satisfaction": share([r["deadline_satisfaction"] for r in group]),
            "energy_per_request_j": positive([r["energy_per_request_j"] for r in group]),
            "capacity_rps": capacity_estimate([caps[(dep, bw, policy, r["seed"])] for r in group]),
            "lowest_rate_rps": lowest[(dep, bw)],
            "energy_parts_j": {
                part: float(
                    np.mean([r[f"energy_{part}_j"] / max(r["completed"], 1) for r in group])
                )
                for part in ("transmission", "inference", "idle")
            },
        }
    return dict(tables)


def headline(rows: Sequence[Row], subject: str = "cs-ucb") -> dict[str, dict[str, Any]]:
    """Per cell, ``subject``'s goodput, capacity and energy ratios against every other policy."""
    caps = capacities(rows)
    nominal = {
        (r["deployment"], r["bandwidth"], r["policy"], r["seed"]): r
        for r in rows
        if r["rate_factor"] == 1.0
    }
    out: dict[str, dict[str, Any]] = {}
    cells = sorted({(d, b) for d, b, _, _ in nominal})
    for dep, bw in cells:
        policies = sorted({p for d, b, p, _ in nominal if (d, b) == (dep, bw)} - {subject})
        seeds = sorted({s for d, b, p, s in nominal if (d, b, p) == (dep, bw, subject)})
        versus = {}
        for other in policies:
            paired = [s for s in seeds if (dep, bw, other, s) in nominal]
            a = {s: nominal[(dep, bw, subject, s)] for s in paired}
            b = {s: nominal[(dep, bw, other, s)] for s in paired}
            versus[other] = {
                "goodput_ratio": ratio((a[s]["goodput_rps"], b[s]["goodput_rps"]) for s in paired),
                "capacity_ratio": capacity_ratio(
                    [(caps[(dep, bw, subject, s)], caps[(dep, bw, other, s)]) for s in paired]
                ),
                "energy_ratio": ratio(
                    (a[s]["energy_per_request_j"], b[s]["energy_per_request_j"]) for s in paired
                ),
            }
        out[f"{dep}|{bw}"] = {"deployment": dep, "bandwidth": bw, "versus": versus}
    return out
