"""RAPL energy: counter differences with wraparound, and the estimate fallback."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from perllm.domain import PowerSpec
from perllm.perf.energy import (
    ESTIMATED,
    MEASURED,
    UNAVAILABLE,
    RaplMeter,
    estimate_energy_j,
    wrapped_delta_uj,
)


def _zone(tmp_path: Path, energy_uj: int, max_uj: int = 1000) -> Path:
    (tmp_path / "energy_uj").write_text(f"{energy_uj}\n")
    (tmp_path / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return tmp_path


def test_wrapped_delta() -> None:
    assert wrapped_delta_uj(100, 350, 1000) == 250
    assert wrapped_delta_uj(900, 50, 1000) == 150


def test_meter_measures_across_a_wrap(tmp_path: Path) -> None:
    meter = RaplMeter(_zone(tmp_path, 900_000, max_uj=1_000_000))
    assert meter.available
    meter.start()
    _zone(tmp_path, 400_000, max_uj=1_000_000)
    reading = meter.stop(estimate_j=99.0)
    assert reading.source == MEASURED
    assert reading.energy_j == pytest.approx(0.5)
    assert "measured (RAPL)" in reading.describe()


def test_meter_falls_back_to_the_estimate(tmp_path: Path) -> None:
    meter = RaplMeter(tmp_path / "missing")
    assert not meter.available
    meter.start()
    assert meter.stop(estimate_j=12.0).source == ESTIMATED
    unavailable = meter.stop()
    assert unavailable.source == UNAVAILABLE and math.isnan(unavailable.energy_j)
    assert "unavailable" in unavailable.describe()


def test_estimate_is_busy_power_times_time_plus_idle() -> None:
    power = PowerSpec(idle_w=10.0, max_w=110.0, batch1_fraction=0.5, log2_slope=0.0)
    assert estimate_energy_j(power, [(1, 2.0), (4, 1.0)], idle_s=3.0) == pytest.approx(
        60.0 * 2.0 + 60.0 * 1.0 + 30.0
    )
