"""A learned correction: per (row, server) statistics of ``l = ln(observed / estimated)`` and the
confidence bounds they give (CS-UCB's step 2, :mod:`perllm.policies.cs_ucb`).

Every arm keeps additive totals (count, sum, sum of squares), so replicas can merge them
(:mod:`perllm.policies.mergeable`); the bounds are derived from them and refreshed on every
update."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt
from numba import njit

Array = npt.NDArray[np.float64]

# Which bounds a LogRatioStats keeps up to date.
UPPER, LOWER = 1, 2


@njit(cache=True)
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
    pool_weight: float,
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
        # The other servers: what they showed is worth ``pool_weight`` observations.
        others_n = row_n - n
        prior_n, prior_mean, prior_spread = 0.0, 0.0, prior_sd
        if pool_weight > 0.0 and others_n > 0.0:
            prior_n = pool_weight
            prior_mean = (row_total - total[row, s]) / others_n
            if others_n >= 2.0:
                others_sq = (row_sq - total_sq[row, s]) / others_n
                prior_spread = math.sqrt(max(others_sq - prior_mean * prior_mean, 0.0))
        if n + prior_n <= 0.0:
            spread[row, s] = prior_sd
            if want_upper:
                upper[row, s] = math.exp(confidence * prior_sd)
            if want_lower:
                lower[row, s] = math.exp(-confidence * prior_sd)
            continue
        # The prior leans no further than the datasheet's (0) away from its bound's side.
        high = (total[row, s] + prior_n * max(prior_mean, 0.0)) / (n + prior_n)
        low = (total[row, s] + prior_n * min(prior_mean, 0.0)) / (n + prior_n)
        if n >= 2.0:
            mine = total[row, s] / n
            sd = math.sqrt(max(total_sq[row, s] / n - mine * mine, 0.0))
        else:
            sd = prior_spread
        spread[row, s] = sd
        width = confidence * sd / math.sqrt(n + prior_n)
        if want_upper:
            upper[row, s] = math.exp(high + width)
        if want_lower:
            lower[row, s] = math.exp(low - width)


class LogRatioStats:
    """Per (row, server) statistics of ``l = ln(observed / estimated)`` and the confidence bounds
    they give, kept up to date on every update (step 2 of the module docstring):

    - ``upper = exp(m_hi + beta sd / sqrt(n + w))`` and ``lower = exp(m_lo - beta sd / sqrt(n +
      w))``, with ``m_hi = (sum + w max(mu, 0)) / (n + w)``, ``m_lo`` alike with ``min(mu, 0)``,
      ``mu`` the mean of the *other* servers of the row, ``w`` the ``pool_weight`` (0 when they
      have no observation), ``sd`` the arm's own from two observations on, the others' before
      (``prior_sd`` until they have two); ``exp(+-beta prior_sd)`` while ``n + w = 0``;
    - ``own = exp(sum / n)``, the arm's own record (1, the datasheet, before any observation);
    - ``spread = sd``, the spread of one observation's ``l`` about the mean (``prior_sd`` while
      ``n + w = 0``).

    With ``pool_weight`` 0 every arm stands alone. A refresh costs ``O(servers)``: every arm of
    the row borrows from the others."""

    def __init__(
        self,
        n_servers: int,
        confidence: float,
        prior_sd: float,
        pool_weight: float = 0.0,
        sides: int = 3,
    ) -> None:
        self.n_servers = n_servers
        self.sides = sides  # which bounds are kept: 1 upper (and own), 2 lower, 3 both
        self.confidence = confidence
        self.prior_sd = prior_sd
        self.pool_weight = pool_weight
        self.count = np.zeros((0, n_servers))
        self.total = np.zeros((0, n_servers))
        self.total_sq = np.zeros((0, n_servers))
        self.upper = np.zeros((0, n_servers))
        self.lower = np.zeros((0, n_servers))
        self.own = np.zeros((0, n_servers))
        self.spread = np.zeros((0, n_servers))

    def ensure_rows(self, rows: int) -> None:
        missing = rows - self.count.shape[0]
        if missing > 0:
            pad = np.zeros((missing, self.n_servers))
            self.count = np.vstack([self.count, pad])
            self.total = np.vstack([self.total, pad])
            self.total_sq = np.vstack([self.total_sq, pad])
            width = self.confidence * self.prior_sd
            self.upper = np.vstack([self.upper, pad + math.exp(width)])
            self.lower = np.vstack([self.lower, pad + math.exp(-width)])
            self.own = np.vstack([self.own, pad + 1.0])
            self.spread = np.vstack([self.spread, pad + self.prior_sd])

    def observe(self, row: int, server: int, log_ratio: float) -> None:
        """Add an observation (none if ``log_ratio`` is not finite: one would spoil the row)."""
        self.ensure_rows(row + 1)
        if not math.isfinite(log_ratio):
            return
        self._refresh(row, server, log_ratio)

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
            self.pool_weight,
            server,
            log_ratio,
            self.sides,
        )

    def state(self) -> dict[str, Any]:
        return {
            "count": self.count.tolist(),
            "total": self.total.tolist(),
            "total_sq": self.total_sq.tolist(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        n = self.n_servers
        self.count = np.array(state["count"], dtype=float).reshape(-1, n)
        self.total = np.array(state["total"], dtype=float).reshape(-1, n)
        self.total_sq = np.array(state["total_sq"], dtype=float).reshape(-1, n)
        rows = self.count.shape[0]
        self.upper = np.zeros((rows, n))
        self.lower = np.zeros((rows, n))
        self.own = np.zeros((rows, n))
        self.spread = np.zeros((rows, n))
        for row in range(rows):
            self._refresh(row)
