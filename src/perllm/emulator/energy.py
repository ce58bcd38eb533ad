"""The emulated server's power and energy, integrated event by event.

The emulated power is piecewise constant: ``PowerSpec.busy_w(batch)`` while a batch of
``batch >= 1`` requests runs, ``idle_w`` while none does, and 0 W for a server without a power
profile (``instant``). :class:`EnergyMeter` integrates it exactly, without sampling: each change
of batch closes the interval since the previous change at the power of the batch held over it,
and each reading closes the interval up to the time of the reading. Its times are whatever clock
the caller passes (the emulator passes its emulated seconds,
:meth:`perllm.emulator.engine.BatchEngine.emulated_s`).
"""

from __future__ import annotations

from perllm.domain import PowerSpec

__all__ = ["EnergyMeter", "power_w"]


def power_w(power: PowerSpec | None, batch: int) -> float:
    """Power drawn by a server running ``batch`` requests (0 W without a power profile)."""
    if power is None:
        return 0.0
    return power.busy_w(batch) if batch > 0 else power.idle_w


class EnergyMeter:
    """The integral of :func:`power_w` over a clock, closed at each change of batch.

    Parameters
    ----------
    power
        The server's power profile (``None``: 0 W, so the energy stays 0).
    start_s
        The clock's reading when the meter starts (at batch 0).

    Examples
    --------
    >>> meter = EnergyMeter(PowerSpec(idle_w=10.0, max_w=110.0, batch1_fraction=0.5,
    ...                               log2_slope=0.0))
    >>> meter.update(1, 2.0)  # idle for 2 s: 20 J
    >>> meter.energy_j(3.0)  # then batch 1 (60 W) for 1 s
    80.0
    """

    def __init__(self, power: PowerSpec | None, start_s: float = 0.0) -> None:
        self.power = power
        self.batch = 0
        self._at_s = start_s
        self._joules = 0.0

    def _close(self, now_s: float) -> None:
        """Add the energy of the batch held from the last event to ``now_s`` (a time earlier
        than the last event adds nothing: the integral never decreases)."""
        if now_s > self._at_s:
            self._joules += power_w(self.power, self.batch) * (now_s - self._at_s)
            self._at_s = now_s

    def update(self, batch: int, now_s: float) -> None:
        """Record that the server runs ``batch`` requests from ``now_s`` on."""
        self._close(now_s)
        self.batch = batch

    def energy_j(self, now_s: float) -> float:
        """Joules drawn from the start to ``now_s``."""
        self._close(now_s)
        return self._joules
