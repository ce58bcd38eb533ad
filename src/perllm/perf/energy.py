"""CPU package energy: measured from Intel RAPL where readable, else estimated from a power model.

RAPL exposes a monotonically increasing counter of microjoules,
``/sys/class/powercap/intel-rapl:0/energy_uj``, that wraps to zero after
``max_energy_range_uj``. The energy between two readings ``a`` and ``b`` is ``b - a`` or, after a
wrap, ``b - a + max_energy_range_uj``. Where the counter cannot be read (virtual machines,
non-Intel CPUs, no permission), energy is estimated as ``sum(power.busy_w(b) * t)`` over the
busy intervals, and every report names which of the two it is.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from perllm.domain import PowerSpec

RAPL_DIR = Path("/sys/class/powercap/intel-rapl:0")
MEASURED = "measured (RAPL)"
ESTIMATED = "estimated"
UNAVAILABLE = "unavailable"

__all__ = [
    "ESTIMATED",
    "MEASURED",
    "UNAVAILABLE",
    "EnergyReading",
    "RaplMeter",
    "estimate_energy_j",
    "wrapped_delta_uj",
]


@dataclass(frozen=True, slots=True)
class EnergyReading:
    """Energy over an interval and where the figure comes from (``MEASURED``, ``ESTIMATED``
    or ``UNAVAILABLE``; ``energy_j`` is ``nan`` when unavailable)."""

    energy_j: float
    seconds: float
    source: str

    @property
    def mean_w(self) -> float:
        """Mean power over the interval (``nan`` for an empty interval)."""
        return self.energy_j / self.seconds if self.seconds > 0 else float("nan")

    def describe(self) -> str:
        """One line such as ``12.3 J over 4.0 s (3.1 W), measured (RAPL)``."""
        if self.source == UNAVAILABLE:
            return f"energy unavailable over {self.seconds:.1f} s (no RAPL, no power model)"
        return (
            f"{self.energy_j:.1f} J over {self.seconds:.1f} s ({self.mean_w:.1f} W), {self.source}"
        )


def wrapped_delta_uj(start_uj: int, end_uj: int, max_range_uj: int) -> int:
    """Counter difference ``end - start``, allowing for one wrap at ``max_range_uj``."""
    if end_uj >= start_uj:
        return end_uj - start_uj
    return end_uj + max_range_uj - start_uj


def estimate_energy_j(power: PowerSpec, busy: list[tuple[int, float]], idle_s: float) -> float:
    """Power-model energy of ``(batch, seconds)`` busy intervals plus ``idle_s`` idle seconds."""
    return sum(power.busy_w(batch) * seconds for batch, seconds in busy) + power.idle_w * idle_s


class RaplMeter:
    """Reads the RAPL package counter before and after an interval.

    Parameters
    ----------
    root
        The RAPL zone directory (``intel-rapl:0`` by default; a test may point elsewhere).

    Examples
    --------
    >>> meter = RaplMeter()
    >>> if meter.available:
    ...     meter.start(); ...; reading = meter.stop()
    """

    def __init__(self, root: Path = RAPL_DIR) -> None:
        self.root = root
        self._start_uj: int | None = None
        self._start_s = 0.0
        self.available = self._read(root / "energy_uj") is not None
        max_range = self._read(root / "max_energy_range_uj")
        self.max_range_uj = max_range if max_range is not None else 2**32

    @staticmethod
    def _read(path: Path) -> int | None:
        try:
            return int(path.read_text().strip())
        except (OSError, ValueError):
            return None

    def start(self) -> None:
        """Take the opening reading (and the opening time)."""
        self._start_s = time.monotonic()
        self._start_uj = self._read(self.root / "energy_uj") if self.available else None

    def stop(self, estimate_j: float | None = None) -> EnergyReading:
        """Energy since :meth:`start`: measured, else ``estimate_j`` if given, else unavailable."""
        seconds = time.monotonic() - self._start_s
        end_uj = self._read(self.root / "energy_uj") if self.available else None
        if self._start_uj is not None and end_uj is not None:
            delta = wrapped_delta_uj(self._start_uj, end_uj, self.max_range_uj)
            return EnergyReading(delta / 1e6, seconds, MEASURED)
        if estimate_j is not None:
            return EnergyReading(estimate_j, seconds, ESTIMATED)
        return EnergyReading(float("nan"), seconds, UNAVAILABLE)
