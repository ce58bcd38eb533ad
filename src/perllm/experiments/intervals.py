"""Estimates over seeds with 95% confidence intervals that stay inside the range of their
quantity; every interval the report prints or plots comes from here.

Each interval is a Student-t interval (``scipy.stats.t`` quantile with n - 1 degrees of
freedom, ``scipy.stats.sem`` standard error) taken on a scale where the quantity is unbounded,
then mapped back, so it contains its point estimate and never leaves the quantity's range:

- :func:`share`, a quantity in [0, 1] (deadlines met, a fraction of the bound): the mean p and
  ``expit(logit p ± t·se / (p (1 - p)))``, the delta-method interval on the logit scale;
- :func:`positive`, a quantity at least ``floor`` (goodput, energy, capacity: 0; a multiple
  of a lower bound: 1): the mean m and ``floor + (m - floor)·exp(± t·se / (m - floor))``, the
  delta-method interval on the log scale;
- :func:`ratio`, a ratio of two positive quantities paired by seed: the geometric mean of the
  ratios and ``exp(mean log r ± t·se(log r))``, the t-interval of the log ratios.

Where every seed gives the same value the interval is that value. Values outside the range
(beyond rounding noise, which is clipped) are an error. Where no interval can be given the
bounds are ``nan`` and ``note`` says why (one seed, a zero ratio); a ratio with a zero
denominator in any seed has no estimate at all (``mean`` is ``nan``). Where only a bound is
known (a capacity outside the loads tested), ``bound`` holds its sign (``"<"``, ``"≤"``,
``"≥"``) and ``mean`` the bound's value. :func:`fmt` writes any of them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import TypedDict

import numpy as np
from scipy import special, stats

LEVEL = 0.95


class Estimate(TypedDict):
    """A point estimate over seeds with its interval (``nan`` bounds where there is none)."""

    mean: float
    ci_low: float
    ci_high: float
    n: int
    estimator: str
    bound: str
    note: str


def estimate(
    mean: float,
    low: float = math.nan,
    high: float = math.nan,
    *,
    n: int = 0,
    estimator: str = "mean",
    bound: str = "",
    note: str = "",
) -> Estimate:
    """An :class:`Estimate` (no interval unless ``low`` and ``high`` are given)."""
    return {
        "mean": float(mean),
        "ci_low": float(low),
        "ci_high": float(high),
        "n": n,
        "estimator": estimator,
        "bound": bound,
        "note": note,
    }


def _finite(values: Iterable[float]) -> np.ndarray:
    return np.array([v for v in values if math.isfinite(v)], dtype=float)


def _half_width(x: np.ndarray) -> float:
    """``t·se`` of the mean of ``x`` (at least two values)."""
    quantile = float(stats.t.ppf(0.5 + LEVEL / 2, x.size - 1))
    return quantile * float(stats.sem(x))


def _bounded(values: Iterable[float], low: float, high: float | None) -> Estimate:
    x = _finite(values)
    if x.size == 0:
        return estimate(math.nan, note="no value")
    top = math.inf if high is None else high
    slack = 1e-9 * max(1.0, abs(low), abs(high or 0.0))
    if np.any(x < low - slack) or np.any(x > top + slack):
        raise ValueError(f"values outside [{low:g}, {top:g}]: {x.tolist()}")
    x = np.clip(x, low, top)  # rounding noise just outside the range
    mean = float(x.mean())
    if x.size < 2:
        return estimate(mean, n=1, note="one seed")
    half = _half_width(x)
    if high is None:
        excess = mean - low
        if excess <= 0.0 or half == 0.0:  # every value alike
            return estimate(mean, mean, mean, n=int(x.size))
        factor = math.exp(half / excess)
        return estimate(mean, low + excess / factor, low + excess * factor, n=int(x.size))
    span = high - low
    p = (mean - low) / span
    if p <= 0.0 or p >= 1.0 or half == 0.0:  # every value alike
        return estimate(mean, mean, mean, n=int(x.size))
    centre = float(special.logit(p))
    width = half / span / (p * (1.0 - p))
    lo = low + span * float(special.expit(centre - width))
    hi = low + span * float(special.expit(centre + width))
    return estimate(mean, min(lo, mean), max(hi, mean), n=int(x.size))


def share(values: Iterable[float]) -> Estimate:
    """Mean and logit-scale 95% interval of values in [0, 1] (non-finite ones are skipped)."""
    return _bounded(values, 0.0, 1.0)


def positive(values: Iterable[float], floor: float = 0.0) -> Estimate:
    """Mean and log-scale 95% interval of values at least ``floor`` (non-finite ones skipped)."""
    return _bounded(values, floor, None)


def geometric(values: Sequence[float], bound: str = "") -> Estimate:
    """Geometric mean and log-scale 95% interval of positive ratios.

    With a ``bound`` (each value only bounds its ratio, on the same side), the geometric mean
    bounds theirs on that side too, and there is no interval.
    """
    r = np.asarray(values, dtype=float)
    if r.size == 0 or not np.all(np.isfinite(r)) or np.any(r < 0):
        return estimate(math.nan, n=int(r.size), estimator="geometric mean", note="no value")
    if np.any(r == 0):
        note = "a ratio of 0 in some seed"
        return estimate(0.0, n=int(r.size), estimator="geometric mean", bound=bound, note=note)
    logs = np.log(r)
    centre = float(logs.mean())
    mean = math.exp(centre)
    if bound or r.size < 2:
        note = "a bound" if bound else "one seed"
        return estimate(mean, n=int(r.size), estimator="geometric mean", bound=bound, note=note)
    half = _half_width(logs)
    return estimate(
        mean,
        math.exp(centre - half),
        math.exp(centre + half),
        n=int(r.size),
        estimator="geometric mean",
    )


def ratio(pairs: Iterable[tuple[float, float]]) -> Estimate:
    """Geometric mean over seeds of ``a / b`` for paired ``(a, b)``, with its 95% interval.

    A zero (or non-finite) denominator in any seed leaves the ratio undefined: ``nan``.
    """
    pairs = list(pairs)
    if any(not (b > 0 and math.isfinite(b)) or not math.isfinite(a) for a, b in pairs):
        return estimate(math.nan, n=len(pairs), estimator="geometric mean", note="zero denominator")
    return geometric([a / b for a, b in pairs])


def number(value: float, digits: int) -> str:
    """``value`` to ``digits`` decimals; a small non-zero value to two significant digits, so
    that nothing positive prints as 0."""
    if value != 0 and abs(value) < 0.5 * 10.0**-digits:
        return f"{value:.2g}"
    return f"{value:.{digits}f}"


def fmt(stat: Estimate, digits: int = 2, suffix: str = "") -> str:
    """``mean [low, high]``; ``mean`` alone without an interval; ``< bound`` for a bound; ``n/a``
    without an estimate."""
    mean = stat["mean"]
    if not math.isfinite(mean):
        return "n/a"
    text = number(mean, digits) + suffix
    if stat["bound"]:
        return f"{stat['bound']} {text}"
    low, high = stat["ci_low"], stat["ci_high"]
    if math.isfinite(low) and math.isfinite(high):
        return f"{text} [{number(low, digits)}, {number(high, digits)}]"
    return text
