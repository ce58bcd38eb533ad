"""Learned statistics as additive totals, so that several routers can pool what they learn and a
router can save it.

A :class:`LearnedStatistic` learns from observations (``observe``), says what it has learned
with confidence bounds (``bounds``), and keeps nothing but sums (counts, sums of observations,
sums of squares): its *totals*, a flat mapping ``name -> number``. Totals merge by addition:
what two routers learned from disjoint sets of requests is exactly the sum of their totals,
whatever the order the observations came in, and every value the statistic derives from them
(means, spreads, bounds) is a function of the totals, recomputed when totals are adopted.

The names are the statistic's own, and stable across processes: they use service-class names
and server indices, never a process's row numbering, so the same total has the same name in
every router. A policy gathers its statistics in a :class:`StatisticSet`, which prefixes each
one's names with its part's name (``PART|NAME``). Nothing here, nor in the Redis sync
(:mod:`perllm.gateway.shared_state`), nor in a saved state, knows how a policy lays out its
statistics: they see named totals only.

A policy that shares its totals with other routers is :class:`SharedStatistics`:
``shared_stats()`` gives the totals now; ``adopt_shared_stats(totals, n_servers)`` replaces the
learned statistics by ``totals`` (absent names are zero) for a cluster of ``n_servers``. What
is not a sum (pending pulls, requests placed and not yet back) is left as it is.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, Protocol, TypeVar, runtime_checkable

__all__ = [
    "Additive",
    "BadTotal",
    "LearnedStatistic",
    "NamedSums",
    "SharedStatistics",
    "StatisticSet",
    "Totals",
    "add_totals",
    "subtract_totals",
]

Totals = dict[str, float]

K = TypeVar("K", contravariant=True)


@runtime_checkable
class Additive(Protocol):
    """Learned state held as additive totals (see the module docstring).

    ``adopt`` replaces the totals by ``totals`` and recomputes what derives from them; a name
    that is not one of the statistic's (another version's, or another cluster's server) and a
    value that is not a finite number are skipped, or with ``strict`` refused:
    :class:`BadTotal` (a ``ValueError``), one line naming the first. ``merge`` adds ``totals``
    to the statistic's own."""

    def totals(self) -> Totals: ...

    def merge(self, totals: Mapping[str, float]) -> None: ...

    def adopt(self, totals: Mapping[str, float], *, strict: bool = False) -> None: ...


@runtime_checkable
class LearnedStatistic(Additive, Protocol[K]):
    """A statistic learned from observations: ``observe(key, value)`` adds one observation of
    ``key``, ``bounds(key)`` is ``(lower, upper)`` for what is learned of ``key``, and its state
    is additive totals (:class:`Additive`)."""

    def observe(self, key: K, value: float) -> None: ...

    def bounds(self, key: K) -> tuple[float, float]: ...


@runtime_checkable
class SharedStatistics(Protocol):
    """A policy whose learned state is additive totals (see the module docstring)."""

    def shared_stats(self) -> dict[str, float]: ...

    def adopt_shared_stats(self, totals: Mapping[str, float], n_servers: int) -> None: ...


def add_totals(a: Mapping[str, float], b: Mapping[str, float]) -> Totals:
    """``a + b`` name by name (absent names are zero)."""
    out = dict(a)
    for name, value in b.items():
        out[name] = out.get(name, 0.0) + value
    return out


def subtract_totals(a: Mapping[str, float], b: Mapping[str, float]) -> Totals:
    """``a - b`` name by name, without the names whose difference is zero up to rounding
    (a total rebuilt from a sum differs from it in the last bits only)."""
    out: Totals = {}
    for name in a.keys() | b.keys():
        x, y = a.get(name, 0.0), b.get(name, 0.0)
        diff = x - y
        if abs(diff) > 1e-12 * max(1.0, abs(x), abs(y)):
            out[name] = diff
    return out


class BadTotal(ValueError):
    """A total a statistic refuses to adopt: its name, and why (one line)."""

    def __init__(self, name: str, why: str) -> None:
        super().__init__(f"{name!r}: {why}")
        self.name, self.why = name, why


def refuse(strict: bool, name: str, why: str) -> None:
    """Raise :class:`BadTotal` if ``strict`` (a statistic's ``adopt`` skips what it cannot place
    otherwise)."""
    if strict:
        raise BadTotal(name, why)


def finite(strict: bool, name: str, value: float) -> bool:
    """Whether ``value`` is a finite number (see :func:`refuse`)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return True
    refuse(strict, name, "not a finite number")
    return False


class StatisticSet:
    """A policy's statistics under names of their own: its totals are each part's, named
    ``PART|NAME``."""

    def __init__(self, parts: Mapping[str, Additive]) -> None:
        self.parts = dict(parts)

    def totals(self) -> Totals:
        return {
            f"{part}|{name}": value
            for part, statistic in self.parts.items()
            for name, value in statistic.totals().items()
        }

    def merge(self, totals: Mapping[str, float]) -> None:
        self.adopt(add_totals(self.totals(), totals))

    def adopt(self, totals: Mapping[str, float], *, strict: bool = False) -> None:
        split: dict[str, Totals] = {part: {} for part in self.parts}
        for name, value in totals.items():
            part, sep, rest = name.partition("|")
            if not sep or part not in split:
                refuse(strict, name, f"not a statistic of {' or '.join(sorted(self.parts))}")
                continue
            split[part][rest] = value
        for part, statistic in self.parts.items():
            try:
                statistic.adopt(split[part], strict=strict)
            except BadTotal as err:
                raise BadTotal(f"{part}|{err.name}", err.why) from None


class _SumsState(Protocol):
    def state(self) -> dict[str, Any]: ...

    def restore(self, state: dict[str, Any]) -> None: ...


class NamedSums:
    """The totals of an object whose state is sums per statistic and name, ``{STAT: {NAME:
    number}}`` (sums per service class, say): names ``STAT|NAME``; the ``integral`` statistics
    (counts) are restored as integers."""

    def __init__(
        self, target: _SumsState, stats: Iterable[str], integral: Iterable[str] = ()
    ) -> None:
        self.target = target
        self.stats = tuple(stats)
        self.integral = frozenset(integral)

    def totals(self) -> Totals:
        state = self.target.state()
        return {
            f"{stat}|{name}": float(value)
            for stat in self.stats
            for name, value in state.get(stat, {}).items()
            if value
        }

    def merge(self, totals: Mapping[str, float]) -> None:
        self.adopt(add_totals(self.totals(), totals))

    def adopt(self, totals: Mapping[str, float], *, strict: bool = False) -> None:
        state: dict[str, dict[str, float]] = {stat: {} for stat in self.stats}
        for name, value in totals.items():
            stat, sep, key = name.partition("|")
            if not sep or stat not in state:
                refuse(strict, name, f"not a total of {', '.join(self.stats)} by name")
            elif finite(strict, name, value):
                state[stat][key] = round(value) if stat in self.integral else value
        self.target.restore(state)
