"""Arrival processes: Poisson and gamma-renewal (bursty) request arrivals."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from perllm.errors import InputError
from perllm.workload.config import ArrivalConfig

__all__ = ["arrival_times", "inter_arrival_s"]

FloatArray = npt.NDArray[np.float64]


def inter_arrival_s(
    process: str, rate_rps: float, cv: float, n: int, rng: np.random.Generator
) -> FloatArray:
    """Draw ``n`` inter-arrival gaps in seconds.

    Parameters
    ----------
    process
        ``"poisson"`` (exponential gaps) or ``"gamma"`` (gaps ``Gamma(shape=1/cv**2,
        scale=cv**2/rate_rps)``: mean ``1/rate_rps``, coefficient of variation ``cv``).
    rate_rps
        Mean arrival rate, requests per second (``> 0``).
    cv
        Coefficient of variation of the gaps (gamma only; ``cv = 1`` is Poisson).
    n
        Number of gaps.
    rng
        The generator every draw comes from.

    Returns
    -------
    numpy.ndarray of float64
        Shape ``(n,)``, non-negative.
    """
    if process == "poisson":
        return rng.exponential(1.0 / rate_rps, n)
    if process == "gamma":
        shape = 1.0 / (cv * cv)
        return rng.gamma(shape, (cv * cv) / rate_rps, n)
    raise ValueError(f"unknown arrival process {process!r}")


def arrival_times(
    cfg: ArrivalConfig, n: int, rng: np.random.Generator, rate_rps: float | None = None
) -> FloatArray:
    """Arrival times of ``n`` requests, in seconds, the first at ``0.0``.

    Parameters
    ----------
    cfg
        The arrival process.
    n
        Number of arrivals (``>= 0``).
    rng
        The generator every draw comes from.
    rate_rps
        Overrides ``cfg.rate_rps`` when given (e.g. in a load sweep).

    Raises
    ------
    InputError
        If the rate is not positive.

    Returns
    -------
    numpy.ndarray of float64
        Shape ``(n,)``, non-decreasing; ``n - 1`` gaps follow the first arrival at 0.
    """
    rate = cfg.rate_rps if rate_rps is None else rate_rps
    if rate <= 0:
        raise InputError(f"field 'rate-rps': must be > 0, got {rate!r}")
    if n <= 0:
        return np.zeros(0, dtype=np.float64)
    times = np.zeros(n, dtype=np.float64)
    np.cumsum(inter_arrival_s(cfg.process, rate, cfg.cv, n - 1, rng), out=times[1:])
    return times
