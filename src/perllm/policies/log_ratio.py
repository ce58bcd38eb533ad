"""A learned correction: per (row, server) statistics of ``l = ln(observed / estimated)`` and the
confidence bounds they give (CS-UCB's step 2, :mod:`perllm.policies.cs_ucb`).

Rows come in named groups of ``variants`` rows each (CS-UCB: a service class, calm and
crowded). Every arm keeps additive totals (count, sum, sum of squares), named by group, variant
and server, so replicas can merge them and a router can save them
(:class:`~perllm.policies.mergeable.LearnedStatistic`); the bounds are derived from them and
refreshed on every update."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from perllm.policies.kernel_cache import kernel
from perllm.policies.mergeable import Totals, add_totals, finite, refuse

Array = npt.NDArray[np.float64]

# Which bounds a LogRatioStats keeps up to date.
UPPER, LOWER = 1, 2

_STATS = ("count", "total", "total_sq")


@kernel
def _refresh(  # pragma: no cover - compiled; tested through LogRatioStats
    count: Array,
    total: Array,
    total_sq: Array,
    upper: Array,
    lower: Array,
    own: Array,
    spread: Array,
    row: int,
    confidence: float,
    prior_sd: float,
    pooled: bool,
    server: int,
    log_ratio: float,
    sides: int,
) -> None:
    """Add the observation ``log_ratio`` of ``server`` (none if ``server`` < 0), then refresh
    the bounds of every arm of ``row`` (see :class:`LogRatioStats`): the upper bound and the own
    record if ``sides & 1``, the lower bound if ``sides & 2``."""
    want_upper, want_lower = (sides & 1) != 0, (sides & 2) != 0
    if server >= 0:
        count[row, server] += 1.0
        total[row, server] += log_ratio
        total_sq[row, server] += log_ratio * log_ratio
    n_servers = count.shape[1]
    row_n, row_total, row_sq = 0.0, 0.0, 0.0
    for s in range(n_servers):
        row_n += count[row, s]
        row_total += total[row, s]
        row_sq += total_sq[row, s]
    for s in range(n_servers):
        n = count[row, s]
        if want_upper and (server < 0 or s == server):  # only the observed arm's record moved
            own[row, s] = math.exp(total[row, s] / n) if n > 0.0 else 1.0
        others_n = row_n - n
        has_prior = pooled and others_n > 0.0
        prior_mean, sd = 0.0, prior_sd
        if has_prior:
            prior_mean = (row_total - total[row, s]) / others_n
            if others_n >= 2.0:
                others_sq = (row_sq - total_sq[row, s]) / others_n
                sd = math.sqrt(max(others_sq - prior_mean * prior_mean, 0.0))
        if n >= 2.0:
            mine = total[row, s] / n
            sd = math.sqrt(max(total_sq[row, s] / n - mine * mine, 0.0))
        spread[row, s] = sd
        # The prior leans no further than the datasheet's (0) away from its bound's side.
        high, low = max(prior_mean, 0.0), min(prior_mean, 0.0)
        width = confidence * prior_sd
        if n > 0.0 and (prior_sd > 0.0 or not has_prior):
            # The prior is worth (sd / prior_sd)^2 observations (none without the pool).
            weight = (sd / prior_sd) ** 2 if has_prior else 0.0
            high = (total[row, s] + weight * high) / (n + weight)
            low = (total[row, s] + weight * low) / (n + weight)
            width = confidence * sd / math.sqrt(n + weight)
        if want_upper:
            upper[row, s] = math.exp(high + width)
        if want_lower:
            lower[row, s] = math.exp(low - width)


class LogRatioStats:
    """Per (row, server) statistics of ``l = ln(observed / estimated)`` and the confidence bounds
    they give, kept up to date on every update (step 2 of the module docstring):

    - ``upper = exp(m_hi + beta sd / sqrt(n + w))`` and ``lower = exp(m_lo - beta sd / sqrt(n +
      w))``, with ``m_hi = (sum + w max(mu, 0)) / (n + w)``, ``m_lo`` alike with ``min(mu, 0)``
      and ``sd`` the arm's own spread from two observations on, the others' before
      (``prior_sd`` until they have two). Where the row is ``pooled`` and the other servers
      have observations, their mean ``mu`` is the arm's prior: the true log-ratios of a row's
      servers are taken to scatter by ``tau = prior_sd`` about it, so (as in a normal model
      with a normal prior) the prior is worth ``w = sd^2 / tau^2`` observations, and before the
      arm's first observation the bounds are ``exp(max(mu, 0) + beta tau)`` and ``exp(min(mu,
      0) - beta tau)``. Otherwise ``w = 0`` and the bounds are ``exp(+-beta prior_sd)`` until
      the first observation;
    - ``own = exp(sum / n)``, the arm's own record (1, the datasheet, before any observation),
      kept with the upper bound;
    - ``spread = sd``, the spread of one observation's ``l`` about the mean.

    A bound not kept (``sides``) is ``nan``. A refresh costs ``O(servers)``: every arm of a
    pooled row borrows from the others.

    Rows are made by :meth:`group`: a group's ``variants`` rows follow each other. The totals
    are named ``VARIANT|SERVER|STAT|GROUP`` (``STAT`` one of ``count``, ``total``,
    ``total_sq``; the group last, so that it may hold any character)."""

    def __init__(
        self,
        n_servers: int,
        confidence: float,
        prior_sd: float,
        pooled: bool = False,
        sides: int = 3,
        variants: int = 1,
    ) -> None:
        self.n_servers = n_servers
        self.sides = sides  # which bounds are kept: 1 upper (and own), 2 lower, 3 both
        self.variants = variants
        self.confidence = confidence
        self.prior_sd = prior_sd
        self.pooled = pooled
        self.groups: dict[str, int] = {}  # name -> its first row
        self.count = np.zeros((0, n_servers))
        self.total = np.zeros((0, n_servers))
        self.total_sq = np.zeros((0, n_servers))
        self.upper = np.zeros((0, n_servers))
        self.lower = np.zeros((0, n_servers))
        self.own = np.zeros((0, n_servers))
        self.spread = np.zeros((0, n_servers))

    def group(self, name: str) -> int:
        """The first row of group ``name`` (its rows are made at its first use)."""
        row = self.groups.get(name)
        if row is None:
            row = self.groups[name] = len(self.groups) * self.variants
            self._grow(row + self.variants)
        return row

    def _grow(self, rows: int) -> None:
        missing = rows - self.count.shape[0]
        if missing > 0:
            pad = np.zeros((missing, self.n_servers))
            self.count = np.vstack([self.count, pad])
            self.total = np.vstack([self.total, pad])
            self.total_sq = np.vstack([self.total_sq, pad])
            width = self.confidence * self.prior_sd
            upper, lower = self.sides & UPPER, self.sides & LOWER
            self.upper = np.vstack([self.upper, pad + (math.exp(width) if upper else math.nan)])
            self.lower = np.vstack([self.lower, pad + (math.exp(-width) if lower else math.nan)])
            self.own = np.vstack([self.own, pad + (1.0 if upper else math.nan)])
            self.spread = np.vstack([self.spread, pad + self.prior_sd])

    def observe(self, key: tuple[int, int], value: float) -> None:
        """Add the observation ``value`` of ``(row, server)`` (none if it is not finite: one
        would spoil the row)."""
        row, server = key
        if row >= self.count.shape[0]:
            raise IndexError(f"row {row} of {self.count.shape[0]}: rows are made by group()")
        if not math.isfinite(value):
            return
        self._refresh(row, server, value)

    def bounds(self, key: tuple[int, int]) -> tuple[float, float]:
        """``(lower, upper)`` of ``(row, server)``'s correction factor (``nan`` if not kept)."""
        row, server = key
        return float(self.lower[row, server]), float(self.upper[row, server])

    def _refresh(self, row: int, server: int = -1, log_ratio: float = 0.0) -> None:
        _refresh(
            self.count,
            self.total,
            self.total_sq,
            self.upper,
            self.lower,
            self.own,
            self.spread,
            row,
            self.confidence,
            self.prior_sd,
            self.pooled,
            server,
            log_ratio,
            self.sides,
        )

    def totals(self) -> Totals:
        out: Totals = {}
        arrays = (self.count, self.total, self.total_sq)
        for name, first in self.groups.items():
            for stat, values in zip(_STATS, arrays, strict=True):
                block = values[first : first + self.variants]
                for variant, server in zip(*np.nonzero(block), strict=True):
                    out[f"{variant}|{server}|{stat}|{name}"] = float(block[variant, server])
        return out

    def merge(self, totals: Mapping[str, float]) -> None:
        self.adopt(add_totals(self.totals(), totals))

    def adopt(self, totals: Mapping[str, float], *, strict: bool = False) -> None:
        """Replace the totals by ``totals`` (see :class:`~perllm.policies.mergeable.Additive`;
        groups keep their rows, new ones come after) and refresh every bound."""
        found: list[tuple[str, int, int, int, float]] = []
        for name, value in totals.items():
            parts = name.split("|", 3)
            if len(parts) != 4 or parts[2] not in _STATS:
                refuse(strict, name, "not a name VARIANT|SERVER|STAT|GROUP")
                continue
            variant, server, stat, group = parts
            if not (variant.isdecimal() and int(variant) < self.variants):
                refuse(strict, name, f"not a variant below {self.variants}")
            elif not (server.isdecimal() and int(server) < self.n_servers):
                refuse(strict, name, f"not a server of {self.n_servers}")
            elif finite(strict, name, value):
                found.append((group, int(variant), int(server), _STATS.index(stat), value))
        for values in (self.count, self.total, self.total_sq):
            values[:] = 0.0
        for name, v, s, k, value in found:
            row = self.group(name) + v  # before the arrays are read: it may grow them
            (self.count, self.total, self.total_sq)[k][row, s] = value
        for row in range(self.count.shape[0]):
            self._refresh(row)
