"""The true bandwidth of every link over a run, as the simulator will draw it.

The world changes a link's bandwidth at events of priority ``PRIORITY_ENVIRONMENT``:

- ``fixed``: never (the nominal bandwidth throughout);
- ``series``: at each point's time (clamped to 0), to the value of the last point at or
  before that time; the nominal bandwidth before the first point;
- ``fluctuate``: every ``period_s`` (times accumulated as ``t + period_s``, as the event loop
  does), to ``nominal * U(1 - amplitude, 1 + amplitude)``, drawn from the world's one
  ``numpy.random.default_rng(world_seed)`` in event order. Events of equal time run in the
  order they were scheduled, so a replay that keeps a heap of ``(time, seq)`` over the
  fluctuating links draws the same numbers in the same order (no other world event draws).

:func:`true_links` replays these changes up to a time, so the bound sees the exact series a
run will see with the same seed. A transfer of ``b`` bits alone on a direction of a link
whose bandwidth is ``B(t)`` takes the least time possible: with ``C(t) = ∫_0^t B``, a transfer
started at ``t`` ends no earlier than ``C^{-1}(C(t) + b)``, and one that must end by ``T``
starts no later than ``C^{-1}(C(T) - b)``.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from perllm.cluster.scenario import Cluster

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class LinkCapacity:
    """A piecewise-constant bandwidth: ``bps[k]`` from ``times_s[k]`` until ``times_s[k + 1]``
    (the last value holds for ever); ``cumulative_bits[k] = C(times_s[k])``."""

    times_s: FloatArray
    bps: FloatArray
    cumulative_bits: FloatArray

    @classmethod
    def from_steps(cls, times_s: FloatArray, bps: FloatArray) -> LinkCapacity:
        widths = np.diff(times_s) * bps[:-1]
        cumulative = np.concatenate(([0.0], np.cumsum(widths)))
        return cls(times_s, bps, cumulative)

    @property
    def max_bps(self) -> float:
        return float(self.bps.max())

    def bits_at(self, t: FloatArray) -> FloatArray:
        """``C(t)``: bits the link can carry from time 0 to ``t`` (vectorised)."""
        k = np.clip(np.searchsorted(self.times_s, t, side="right") - 1, 0, None)
        return self.cumulative_bits[k] + self.bps[k] * (t - self.times_s[k])

    def time_at(self, bits: FloatArray) -> FloatArray:
        """``C^{-1}``: the time at which the link has carried ``bits`` since time 0."""
        k = np.clip(np.searchsorted(self.cumulative_bits, bits, side="right") - 1, 0, None)
        return self.times_s[k] + (bits - self.cumulative_bits[k]) / self.bps[k]

    def earliest_end(self, start_s: FloatArray, bits: FloatArray) -> FloatArray:
        """End of transfers of ``bits`` started at ``start_s`` with the whole link to each."""
        return self.time_at(self.bits_at(start_s) + bits)

    def latest_start(self, end_s: FloatArray, bits: FloatArray) -> FloatArray:
        """Latest start of transfers of ``bits`` that must end by ``end_s`` (may be < 0)."""
        room = self.bits_at(end_s) - bits
        return np.where(room < 0.0, -np.inf, self.time_at(np.maximum(room, 0.0)))

    def bits_between(self, start_s: FloatArray, end_s: FloatArray) -> FloatArray:
        """Bits the link can carry in ``[start_s, end_s]``."""
        return self.bits_at(end_s) - self.bits_at(start_s)


def _series_steps(
    nominal_mbps: float, points: tuple[tuple[float, float], ...]
) -> tuple[list[float], list[float]]:
    times = [0.0]
    values = [nominal_mbps]
    for time_s, _ in points:
        now = max(time_s, 0.0)
        value = next(v for t, v in reversed(points) if t <= now)
        if now == times[-1]:
            values[-1] = value
        else:
            times.append(now)
            values.append(value)
    return times, values


def true_links(cluster: Cluster, world_seed: int, until_s: float) -> dict[str, LinkCapacity]:
    """Every link's true bandwidth from time 0 to at least ``until_s`` (then held).

    Parameters
    ----------
    cluster
        The scenario.
    world_seed
        The world's seed (``seeds_for(seed)[2]`` in :mod:`perllm.sim.runner`).
    until_s
        Replay the changes up to this time.
    """
    steps: dict[str, tuple[list[float], list[float]]] = {}
    heap: list[tuple[float, int, str]] = []
    seq = 0
    for name, spec in cluster.links.items():
        dyn = cluster.dynamics[name]
        steps[name] = ([0.0], [spec.bandwidth_mbps])
        if dyn.kind == "fluctuate":
            heap.append((0.0 + dyn.period_s, seq, name))
            seq += 1
        elif dyn.kind == "series":
            steps[name] = _series_steps(spec.bandwidth_mbps, dyn.points)
    heapq.heapify(heap)
    rng = np.random.default_rng(world_seed)
    while heap and heap[0][0] <= until_s:
        now, _, name = heapq.heappop(heap)
        dyn = cluster.dynamics[name]
        factor = rng.uniform(1.0 - dyn.amplitude, 1.0 + dyn.amplitude)
        times, values = steps[name]
        times.append(now)
        values.append(cluster.links[name].bandwidth_mbps * factor)
        heapq.heappush(heap, (now + dyn.period_s, seq, name))
        seq += 1
    return {
        name: LinkCapacity.from_steps(np.array(times), np.array(values) * 1e6)
        for name, (times, values) in steps.items()
    }
