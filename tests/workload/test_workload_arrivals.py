"""Arrival processes: rate, burstiness (coefficient of variation), rate override."""

from __future__ import annotations

import numpy as np
import pytest

from perllm.errors import InputError
from perllm.workload.arrivals import arrival_times
from perllm.workload.config import ArrivalConfig

N = 200_000


def _rate_and_cv(times: np.ndarray) -> tuple[float, float]:
    gaps = np.diff(times)
    return 1.0 / float(gaps.mean()), float(gaps.std() / gaps.mean())


def test_gamma_rate_and_cv() -> None:
    cfg = ArrivalConfig(process="gamma", rate_rps=20.0, cv=3.0)
    times = arrival_times(cfg, N, np.random.default_rng(11))
    rate, cv = _rate_and_cv(times)
    assert rate == pytest.approx(20.0, rel=0.03)
    assert cv == pytest.approx(3.0, rel=0.10)


def test_poisson_rate_and_cv_one() -> None:
    times = arrival_times(ArrivalConfig(rate_rps=5.0), N, np.random.default_rng(12))
    rate, cv = _rate_and_cv(times)
    assert rate == pytest.approx(5.0, rel=0.03)
    assert cv == pytest.approx(1.0, rel=0.05)


def test_gamma_with_cv_one_is_poisson_like() -> None:
    cfg = ArrivalConfig(process="gamma", rate_rps=5.0, cv=1.0)
    _, cv = _rate_and_cv(arrival_times(cfg, N, np.random.default_rng(13)))
    assert cv == pytest.approx(1.0, rel=0.05)


def test_times_start_at_zero_and_never_decrease() -> None:
    cfg = ArrivalConfig(process="gamma", rate_rps=1.0, cv=13.0)
    times = arrival_times(cfg, 10_000, np.random.default_rng(14))
    assert times.dtype == np.float64
    assert times[0] == 0.0
    assert np.all(np.diff(times) >= 0)


def test_rate_override() -> None:
    cfg = ArrivalConfig(rate_rps=1.0)
    times = arrival_times(cfg, N, np.random.default_rng(15), rate_rps=50.0)
    rate, _ = _rate_and_cv(times)
    assert rate == pytest.approx(50.0, rel=0.03)


def test_small_counts_and_bad_override() -> None:
    cfg = ArrivalConfig(rate_rps=1.0)
    assert arrival_times(cfg, 0, np.random.default_rng(0)).size == 0
    assert arrival_times(cfg, 1, np.random.default_rng(0)).tolist() == [0.0]
    with pytest.raises(InputError, match="rate-rps"):
        arrival_times(cfg, 5, np.random.default_rng(0), rate_rps=0.0)
