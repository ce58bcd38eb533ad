"""From result rows to the numbers people compare: per-cell tables, capacity, headline ratios.

- **goodput** is read at the deployment's nominal load (rate factor 1.0);
- **capacity** is the highest arrival rate at which a policy keeps at least 90% of deadlines met,
  found per seed from the load sweep by linear interpolation between the last rate that meets
  the target and the first that does not. A policy that meets it at every rate of the sweep is
  given the top rate (a lower bound, flagged ``censored``); one that never does gets 0;
- **energy** is the energy per completed request at nominal load;
- a **ratio** of CS-UCB to another policy is computed per seed (the two ran on the same workload,
  so they are paired), and reported as the mean with a 95% Student-t confidence interval.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from scipy import stats

SATISFACTION_TARGET = 0.9
Row = dict[str, Any]
Cell = tuple[str, str]


def mean_ci(values: Sequence[float]) -> dict[str, float]:
    """Mean and 95% t-interval of finite values (``nan`` bounds with fewer than two)."""
    x = np.array([v for v in values if math.isfinite(v)], dtype=float)
    if x.size == 0:
        return {"mean": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n": 0}
    mean = float(x.mean())
    if x.size < 2:
        return {"mean": mean, "ci_low": math.nan, "ci_high": math.nan, "n": 1}
    half = float(stats.t.ppf(0.975, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return {"mean": mean, "ci_low": mean - half, "ci_high": mean + half, "n": int(x.size)}


def capacity(rates: Sequence[float], satisfaction: Sequence[float]) -> tuple[float, bool]:
    """Highest rate with satisfaction >= target (interpolated); (rate, censored)."""
    points = sorted(zip(rates, satisfaction, strict=True))
    best = 0.0
    for (r0, s0), (r1, s1) in itertools.pairwise(points):
        if s0 >= SATISFACTION_TARGET > s1:
            return r0 + (s0 - SATISFACTION_TARGET) / (s0 - s1) * (r1 - r0), False
        if s0 >= SATISFACTION_TARGET:
            best = r0
    if points and points[-1][1] >= SATISFACTION_TARGET:
        return points[-1][0], True
    return best, False


def _by(rows: Iterable[Row], *keys: str) -> dict[tuple[Any, ...], list[Row]]:
    groups: dict[tuple[Any, ...], list[Row]] = defaultdict(list)
    for row in rows:
        groups[tuple(row[k] for k in keys)].append(row)
    return groups


def capacities(rows: Sequence[Row]) -> dict[tuple[str, str, str, int], tuple[float, bool]]:
    """(deployment, bandwidth, policy, seed) -> (capacity in requests/s, censored)."""
    out = {}
    for key, group in _by(rows, "deployment", "bandwidth", "policy", "seed").items():
        rates = [r["rate_rps"] for r in group]
        sats = [r["deadline_satisfaction"] for r in group]
        out[(key[0], key[1], key[2], key[3])] = capacity(rates, sats)
    return out


def cell_tables(rows: Sequence[Row]) -> dict[Cell, dict[str, dict[str, Any]]]:
    """Per (deployment, bandwidth), per policy: mean and CI of the headline metrics."""
    caps = capacities(rows)
    nominal = [r for r in rows if r["rate_factor"] == 1.0]
    tables: dict[Cell, dict[str, dict[str, Any]]] = defaultdict(dict)
    for (dep, bw, policy), group in _by(nominal, "deployment", "bandwidth", "policy").items():
        seeds = [r["seed"] for r in group]
        cap_values = [caps[(dep, bw, policy, s)] for s in seeds]
        tables[(dep, bw)][policy] = {
            "goodput_rps": mean_ci([r["goodput_rps"] for r in group]),
            "deadline_satisfaction": mean_ci([r["deadline_satisfaction"] for r in group]),
            "energy_per_request_j": mean_ci([r["energy_per_request_j"] for r in group]),
            "capacity_rps": mean_ci([c for c, _ in cap_values]),
            "capacity_censored": any(censored for _, censored in cap_values),
            "energy_parts_j": {
                part: float(
                    np.mean([r[f"energy_{part}_j"] / max(r["completed"], 1) for r in group])
                )
                for part in ("transmission", "inference", "idle")
            },
        }
    return dict(tables)


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else math.nan


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
            pairs = [
                (nominal[(dep, bw, subject, s)], nominal[(dep, bw, other, s)])
                for s in seeds
                if (dep, bw, other, s) in nominal
            ]
            versus[other] = {
                "goodput_ratio": mean_ci(
                    [_ratio(a["goodput_rps"], b["goodput_rps"]) for a, b in pairs]
                ),
                "capacity_ratio": mean_ci(
                    [
                        _ratio(
                            caps[(dep, bw, subject, a["seed"])][0],
                            caps[(dep, bw, other, a["seed"])][0],
                        )
                        for a, _ in pairs
                    ]
                ),
                "energy_ratio": mean_ci(
                    [_ratio(a["energy_per_request_j"], b["energy_per_request_j"]) for a, b in pairs]
                ),
            }
        out[f"{dep}|{bw}"] = {"deployment": dep, "bandwidth": bw, "versus": versus}
    return out
