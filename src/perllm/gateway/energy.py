"""A backend's measured energy, split among the requests it ran by their share of its busy time.

Between two readings of the backend's ``power-source`` (times ``t0 < t1``, ``E`` joules), the
backend ran ``R + o * (t1 - t0)`` request-seconds: ``R`` of this gateway's own calls, counted
exactly as they begin and end, and ``o`` requests that others had there at the latest scrape
of its engine (:mod:`perllm.gateway.scrape`; ``o`` is 0 without one). Every running request
draws the same power, the split the simulator makes (:func:`perllm.physics.batch_share_j`,
``P * t / batch``): the interval's rate is ``r = E / (R + o * (t1 - t0))`` joules per
request-second, and a call's measured energy is the integral of ``r`` over its life. Others'
share is theirs; an interval in which nothing ran is idle. So, exactly, the measured energy is
``own_j + others_j + idle_j``.

An interval's energy goes to the requests that ran in it, its idle moments included: readings
a few times a second keep that part small.

A call's energy is *settled* once a reading after its end has arrived; until then it is
*provisional*: settled up to the latest reading, and at the latest busy interval's rate since.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["EnergyAccounts", "EnergyLedger", "Spend"]

HISTORY = 100_000  # readings kept (a day at one a second): older calls are settled from the oldest


@dataclass(slots=True)
class EnergyLedger:
    """The split of one backend's measured energy (module docstring). Times are seconds."""

    start_s: float
    own_j: float = 0.0
    others_j: float = 0.0
    idle_j: float = 0.0
    read_j: float = 0.0  # every reading's joules: own_j + others_j + idle_j
    _times: list[float] = field(default_factory=list)
    _integral: list[float] = field(default_factory=list)  # joules per request, cumulative
    _busy_rate: float | None = None  # of the latest interval in which something ran
    _count: int = 0  # own calls running now
    _area: float = 0.0  # own request-seconds so far
    _area_at: float = 0.0
    _area_read: float = 0.0  # ``_area`` at the latest reading
    _pending: list[tuple[float, float, Callable[[float], None]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._times = [self.start_s]
        self._integral = [0.0]
        self._area_at = self.start_s

    @property
    def measured(self) -> bool:
        """Whether a busy interval has been measured (a provisional figure exists)."""
        return self._busy_rate is not None

    def _advance(self, now: float) -> None:
        self._area += self._count * max(now - self._area_at, 0.0)
        self._area_at = max(now, self._area_at)

    def begin(self, now: float) -> None:
        """One of this gateway's calls starts running on the backend."""
        self._advance(now)
        self._count += 1

    def end(self, now: float) -> None:
        """One of this gateway's calls ends there."""
        self._advance(now)
        self._count = max(self._count - 1, 0)

    def reading(self, now: float, joules: float, others: float) -> None:
        """``joules`` since the previous reading, with ``others`` requests of others running;
        settles the calls that ended before ``now``."""
        self._advance(now)
        self.read_j += joules
        span = max(now - self._times[-1], 0.0)
        own = self._area - self._area_read
        self._area_read = self._area
        busy = own + max(others, 0.0) * span
        rate = 0.0
        if busy > 1e-12:
            rate = joules / busy
            self._busy_rate = rate
            theirs = rate * max(others, 0.0) * span
            self.own_j += joules - theirs
            self.others_j += theirs
        else:
            self.idle_j += joules
        self._times.append(now)
        self._integral.append(self._integral[-1] + rate * span)
        if len(self._times) > 2 * HISTORY:
            del self._times[:HISTORY], self._integral[:HISTORY]
        due = [p for p in self._pending if p[0] <= now]
        if due:
            self._pending = [p for p in self._pending if p[0] > now]
            for end, start, settled in due:
                settled(self.between(start, end))

    def _at(self, t: float) -> float:
        """The cumulative joules per request at time ``t`` (provisional past the latest
        reading)."""
        times, integral = self._times, self._integral
        if t >= times[-1]:
            return integral[-1] + (self._busy_rate or 0.0) * (t - times[-1])
        i = bisect.bisect_right(times, t) - 1
        if i < 0:
            return integral[0]
        t0, t1 = times[i], times[i + 1]
        return integral[i] + (integral[i + 1] - integral[i]) * (t - t0) / (t1 - t0)

    def between(self, start: float, end: float) -> float:
        """The energy of one call that ran from ``start`` to ``end`` (provisional where ``end``
        is past the latest reading)."""
        return max(self._at(end) - self._at(start), 0.0)

    def settle(self, start: float, end: float, settled: Callable[[float], None]) -> None:
        """Hand a call's settled energy to ``settled`` once a reading covers its ``end``
        (at once if one does)."""
        if end <= self._times[-1]:
            settled(self.between(start, end))
        else:
            self._pending.append((end, start, settled))


Spend = Callable[[str, str, str, str, float], None]  # backend, class, part, source, joules


class EnergyAccounts:
    """Every backend's energy accounts: a ledger where it has a ``power-source``, and the
    ``spend`` callback that counts energy by backend, service class, part and source
    (``measured`` or ``modelled``; the gateway's ``perllm_energy_joules_total``)."""

    def __init__(
        self, names: list[str], measured: list[bool], spend: Spend, now: float = 0.0
    ) -> None:
        self.names = names
        self.spend = spend
        self.ledgers = [EnergyLedger(now) if m else None for m in measured]

    def begin(self, server: int, now: float) -> None:
        ledger = self.ledgers[server]
        if ledger is not None:
            ledger.begin(now)

    def end(self, server: int, start: float, end: float, service_class: str) -> None:
        """A call ran on ``server`` from ``start`` to ``end``: its measured inference energy is
        counted once settled."""
        ledger = self.ledgers[server]
        if ledger is None:
            return
        ledger.end(end)
        name = self.names[server]
        ledger.settle(
            start, end, lambda j: self.spend(name, service_class, "inference", "measured", j)
        )

    def provisional_j(self, server: int, start: float, end: float) -> float | None:
        """A call's measured inference energy so far, or ``None`` where none is measured."""
        ledger = self.ledgers[server]
        if ledger is None or not ledger.measured:
            return None
        return ledger.between(start, end)

    def reading(self, server: int, now: float, joules: float, others: float) -> None:
        """A reading of ``server``'s power source (see :meth:`EnergyLedger.reading`); its idle
        energy is counted under the class ``none``."""
        ledger = self.ledgers[server]
        assert ledger is not None
        idle = ledger.idle_j
        ledger.reading(now, joules, others)
        if ledger.idle_j > idle:
            self.spend(self.names[server], "none", "idle", "measured", ledger.idle_j - idle)
