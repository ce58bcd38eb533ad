"""The bound's result: what no schedule of the trace can beat, as numbers, JSON and a table."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class FrontierPoint:
    """Any run meeting at least ``met`` deadlines (``met_fraction`` of all requests) spends at
    least ``energy_lower_bound_j`` of weighted energy; ``slope_j_per_met`` is the LP's marginal
    energy of one more met request there."""

    met_fraction: float
    met: float
    energy_lower_bound_j: float
    slope_j_per_met: float


def least_energy_at(met: float, floor_j: float, frontier: Iterable[FrontierPoint]) -> float:
    """Least weighted energy of any run meeting at least ``met`` deadlines, from the energy
    floor ``floor_j`` of any run and the ``frontier``.

    The LP's least energy ``E(m)`` is convex and non-decreasing in ``m``, so it is at least
    every frontier point's tangent ``E_k + slope_k (m - m_k)``, and at least ``E_k`` when
    ``m >= m_k``.
    """
    best = floor_j
    for point in frontier:
        tangent = point.energy_lower_bound_j + point.slope_j_per_met * (met - point.met)
        best = max(best, tangent)
        if met >= point.met:
            best = max(best, point.energy_lower_bound_j)
    return best


@dataclass(frozen=True, slots=True)
class BoundResult:
    """Bounds for one trace: no schedule the simulator can run does better.

    ``met_upper_bound`` and ``goodput_upper_bound_rps`` bound deadlines met and goodput (met
    completions inside the arrival window over the window, as :mod:`perllm.metrics.summary`
    counts them); ``energy_lower_bound_j`` bounds the weighted energy of any run that meets
    ``met_upper_bound`` deadlines, ``energy_floor_j`` that of any run at all, and ``frontier``
    that of runs meeting a given fraction. ``pair_*`` give the LP's solution: the fraction of
    request ``pair_request[k]`` met on server ``pair_server[k]``.
    """

    requests: int
    met_upper_bound: int
    met_lp: float
    window_s: float
    goodput_met_upper_bound: int
    goodput_upper_bound_rps: float
    energy_lower_bound_j: float
    energy_floor_j: float
    frontier: tuple[FrontierPoint, ...]
    model: dict[str, int] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)
    pair_request: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    pair_server: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    pair_met: FloatArray = field(default_factory=lambda: np.zeros(0))

    def energy_lower_bound_at(self, met: float) -> float:
        """Least weighted energy of any run meeting at least ``met`` deadlines
        (:func:`least_energy_at`)."""
        return least_energy_at(met, self.energy_floor_j, self.frontier)

    def to_json(self) -> dict[str, object]:
        """The JSON-ready bounds (no timings: the same trace gives the same bytes)."""
        return {
            "requests": self.requests,
            "met_upper_bound": self.met_upper_bound,
            "met_upper_bound_fraction": self.met_upper_bound / self.requests
            if self.requests
            else 0.0,
            "met_lp": self.met_lp,
            "window_s": self.window_s,
            "goodput_met_upper_bound": self.goodput_met_upper_bound,
            "goodput_upper_bound_rps": self.goodput_upper_bound_rps,
            "energy_lower_bound_j": self.energy_lower_bound_j,
            "energy_floor_j": self.energy_floor_j,
            "frontier": [
                {
                    "met_fraction": p.met_fraction,
                    "met": p.met,
                    "energy_lower_bound_j": p.energy_lower_bound_j,
                    "slope_j_per_met": p.slope_j_per_met,
                }
                for p in self.frontier
            ],
            "model": dict(self.model),
        }


def print_table(result: BoundResult, title: str) -> None:
    """The bounds as a readable table on stdout."""
    from rich.console import Console
    from rich.table import Table

    n = max(result.requests, 1)
    table = Table(title=title)
    table.add_column("bound")
    table.add_column("value", justify="right")
    table.add_row(
        "deadlines met <=",
        f"{result.met_upper_bound} of {result.requests} ({result.met_upper_bound / n:.1%})",
    )
    table.add_row("goodput <=", f"{result.goodput_upper_bound_rps:.3f} req/s")
    table.add_row("weighted energy at the most met >=", f"{result.energy_lower_bound_j:,.0f} J")
    table.add_row("weighted energy of any run >=", f"{result.energy_floor_j:,.0f} J")
    for point in result.frontier:
        table.add_row(
            f"  energy with >= {point.met_fraction:.1%} met >=",
            f"{point.energy_lower_bound_j:,.0f} J",
        )
    model = result.model
    size = f"{model.get('variables', 0):,} variables, {model.get('rows', 0):,} rows"
    table.add_row("LP", f"{size}, {result.timings_s.get('total', 0.0):.1f} s")
    Console(width=max(Console().width, 100)).print(table)
