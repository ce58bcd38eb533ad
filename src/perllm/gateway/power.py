"""Measured energy of a backend's node: successive readings of its ``power-source``, as joules.

Each reading gives the energy since the previous one:

- an energy counter (a ``metric`` whose unit is ``uJ``, ``mJ``, ``J``, ``kJ``, ``Wh`` or
  ``kWh``: DCGM's ``DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION`` in mJ, node_exporter's
  ``node_rapl_package_joules_total`` in J) is taken in differences; a counter that went down
  was reset (its exporter restarted), and that interval is skipped;
- a power gauge (unit ``mW``, ``W`` or ``kW``: DCGM's ``DCGM_FI_DEV_POWER_USAGE``) is
  integrated between readings by the trapezoid rule;
- ``local: nvml`` reads GPU ``gpu``'s energy counter through nvidia-ml-py (mJ), and
  ``local: rapl`` the CPU package's RAPL counter (µJ, which wraps at its range).

The first reading only sets the origin. Samples are summed over the metric's label sets that
include the configured ``labels`` (several GPUs of one node, for instance).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from perllm.gateway.config import PowerSourceConfig
from perllm.gateway.exposition import samples
from perllm.perf.energy import RAPL_DIR, RaplMeter, wrapped_delta_uj

__all__ = ["JOULES_PER", "EnergyReader", "parse_metric", "reader_for"]

# Joules per unit of an energy counter, or per second of a power gauge (watts per unit).
JOULES_PER = {
    "uJ": 1e-6,
    "mJ": 1e-3,
    "J": 1.0,
    "kJ": 1e3,
    "Wh": 3600.0,
    "kWh": 3.6e6,
    "mW": 1e-3,
    "W": 1.0,
    "kW": 1e3,
}
GAUGE_UNITS = ("mW", "W", "kW")


def parse_metric(text: str, name: str, labels: dict[str, str]) -> float:
    """The sum of ``name``'s samples whose labels include ``labels`` (``ValueError`` if
    none, or if a value is not finite and non-negative). A counter's samples are read under
    the name with or without ``_total``."""
    found = False
    total = 0.0
    for _, sample_labels, value in samples(text, (name, name + "_total")):
        if any(sample_labels.get(k) != v for k, v in labels.items()):
            continue
        if not 0.0 <= value < math.inf:
            raise ValueError(f"{name} is {value:g}")
        total += value
        found = True
    if not found:
        where = f" with labels {labels}" if labels else ""
        raise ValueError(f"no {name} sample{where}")
    return total


@dataclass(slots=True)
class EnergyReader:
    """Turns successive readings (time, value) into joules per interval (module docstring)."""

    unit: str
    wrap: float = math.inf  # a counter's range, where it wraps (RAPL) rather than resets
    _last: tuple[float, float] | None = None

    def joules(self, now: float, value: float) -> float | None:
        """Energy since the previous reading (``None`` for the first, or after a reset)."""
        last, self._last = self._last, (now, value)
        if last is None:
            return None
        then, before = last
        if self.unit in GAUGE_UNITS:
            return max(now - then, 0.0) * (before + value) / 2.0 * JOULES_PER[self.unit]
        if value < before:
            if math.isinf(self.wrap):
                return None  # the counter was reset
            return wrapped_delta_uj(int(before), int(value), int(self.wrap)) * JOULES_PER[self.unit]
        return (value - before) * JOULES_PER[self.unit]


def reader_for(source: PowerSourceConfig) -> tuple[EnergyReader, Callable[[], float] | None]:
    """The reader of ``source``, and for a local source the function that reads its counter
    (``RuntimeError`` with the reason when the local counter cannot be read here)."""
    if source.local == "rapl":
        meter = RaplMeter(RAPL_DIR)
        if not meter.available:
            raise RuntimeError(f"power-source local rapl: {RAPL_DIR / 'energy_uj'} is not readable")
        path = RAPL_DIR / "energy_uj"
        return EnergyReader("uJ", float(meter.max_range_uj)), lambda: float(path.read_text())
    if source.local == "nvml":
        return EnergyReader("mJ"), _nvml_counter(source.gpu)
    assert source.unit is not None
    return EnergyReader(source.unit), None


def _nvml_counter(gpu: int) -> Callable[[], float]:
    try:
        import pynvml  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        raise RuntimeError(
            "power-source local nvml needs nvidia-ml-py: pip install nvidia-ml-py"
        ) from None
    try:
        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(gpu)
    except pynvml.NVMLError as err:
        raise RuntimeError(f"power-source local nvml: GPU {gpu}: {err}") from None

    def read() -> float:
        return float(pynvml.nvmlDeviceGetTotalEnergyConsumption(handle))

    return read
