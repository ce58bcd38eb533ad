"""Each server's recent drift: how much slower of late it is than its learned records say.

A record is a mean over the whole run, so a server that slows down mid-run (throttling, a noisy
neighbour) would take as many observations as it had to move it. The drift ``d_s`` is an
exponentially weighted mean of the server's latest errors against its arms' own records,
``d <- d + a (l - m_own - d)`` (``a`` the rate, ``m_own`` the arm's mean log-ratio, 0 before its
first observation), faded by its age, ``d exp(-age / memory_s)``. Late answers in flight
(:class:`~perllm.policies.outstanding.LateAnswers`) can raise it before any slow answer comes
back. Pessimism on time multiplies a server's bound by ``exp(max(d_s, 0))``: a server faster of
late is left to its records, and one left for being slow is tried again once its drift has faded,
since nothing else would show that it recovered. The drift is about the recent past and a
replica's own: it is neither saved nor shared."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]


class Drift:
    """Row 0 of :attr:`values` holds each server's drift, row 1 when it was last moved (the
    compiled decision fades it by the same rule as :meth:`faded`)."""

    def __init__(self, n_servers: int, rate: float, memory_s: float) -> None:
        self.rate = rate
        self.memory_s = memory_s
        self.values: Array = np.zeros((2, n_servers))

    def faded(self, server: int, now: float) -> float:
        """``server``'s drift faded to ``now``."""
        age = max(now - float(self.values[1, server]), 0.0)
        return float(self.values[0, server]) * math.exp(-age / self.memory_s)

    def move(self, server: int, error: float, now: float) -> None:
        """Move ``server``'s faded drift toward ``error`` (an observation's log-ratio less its
        arm's mean)."""
        if self.rate <= 0.0 or not math.isfinite(error):
            return
        faded = self.faded(server, now)
        self._set(server, faded + self.rate * (error - faded), now)

    def raise_to(self, server: int, log_f: float, now: float) -> None:
        """Raise ``server``'s drift to ``log_f`` where its faded drift is lower."""
        if log_f > self.faded(server, now):
            self._set(server, log_f, now)

    def _set(self, server: int, value: float, now: float) -> None:
        self.values[0, server] = value
        self.values[1, server] = max(now, float(self.values[1, server]))
