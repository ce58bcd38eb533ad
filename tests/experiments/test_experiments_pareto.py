"""The report's bar and Pareto figures: bars on a linear axis from 0, Pareto points that stay
visible where they coincide or sit at 0 met, and the bound's frontier through its points."""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.axes import Axes
from matplotlib.lines import Line2D

from perllm.bound.result import FrontierPoint
from perllm.experiments.analysis import PolicyStats
from perllm.experiments.intervals import estimate, positive, share
from perllm.experiments.pareto import pareto_figure
from perllm.experiments.plots import goodput_energy_figure
from perllm.experiments.rows import BoundRow, GridRow
from perllm.experiments.yardstick import frontier_line

REQUESTS = 1000
BANDWIDTHS = ("nominal", "constrained", "volatile")
# (policy, deadlines met, weighted J per request): cloud-only and greedy-energy coincide,
# edge-only meets none
POINTS = [
    ("cs-ucb", 0.93, 160.0),
    ("cloud-only", 0.76, 120.0),
    ("greedy-energy", 0.76, 120.0),
    ("edge-only", 0.0, 900.0),
    ("oracle", 1.0, 200.0),
]


def _row(**fields: Any) -> GridRow:
    return GridRow(**{**dict.fromkeys(GridRow.columns(), 0), **fields})


def _rows() -> list[GridRow]:
    return [
        _row(
            deployment="7b/13b",
            bandwidth=bandwidth,
            rate_factor=1.0,
            policy=policy,
            seed=seed,
            requests=REQUESTS,
            deadline_satisfaction=met,
            weighted_energy_j=energy * REQUESTS,
        )
        for bandwidth in BANDWIDTHS
        for policy, met, energy in POINTS
        for seed in (0, 1)
    ]


def _energy(bandwidth: str, fraction: float) -> float:
    """Per request: rising from 0.5 met (nominal), flat (constrained), flat to 99% (volatile)."""
    if bandwidth == "nominal":
        return 100.0 + 40.0 * fraction**4
    return 103.0 if bandwidth == "volatile" and fraction > 0.99 else 100.0


def _bounds() -> list[BoundRow]:
    bounds = []
    for bandwidth in BANDWIDTHS:
        for seed in (0, 1):
            frontier = tuple(
                FrontierPoint(f, f * REQUESTS, _energy(bandwidth, f) * REQUESTS, 0.0)
                for f in (0.5, 0.7, 0.9, 0.95, 0.99, 0.995)
            )
            bounds.append(
                BoundRow(
                    deployment="7b/13b",
                    bandwidth=bandwidth,
                    rate_rps=6.0,
                    seed=seed,
                    requests=REQUESTS,
                    met_upper_bound=995,
                    goodput_upper_bound_rps=6.0,
                    energy_lower_bound_j=frontier[-1].energy_lower_bound_j,
                    energy_floor_j=100.0 * REQUESTS,
                    frontier=frontier,
                )
            )
    return bounds


@pytest.fixture
def panels() -> Any:
    fig = pareto_figure(_rows(), _bounds(), "7b/13b", BANDWIDTHS)
    fig.canvas.draw()
    yield fig, fig.axes
    plt.close(fig)


def _points(ax: Axes) -> dict[str, Line2D]:
    names = {p for p, _, _ in POINTS}
    return {str(line.get_label()): line for line in ax.get_lines() if line.get_label() in names}


def test_coinciding_points_both_stay_visible(panels: Any) -> None:
    _, axes = panels
    for ax in axes:
        points = _points(ax)
        under, over = points["cloud-only"], points["greedy-energy"]
        assert under.get_xydata().tolist() == over.get_xydata().tolist()
        assert over.get_zorder() > under.get_zorder()
        # the one on top is hollow, of another shape and smaller: the one under shows round it
        assert over.get_markerfacecolor() == "none"
        assert over.get_marker() != under.get_marker()
        assert over.get_markersize() < under.get_markersize()


def test_points_at_the_edges_are_drawn_whole(panels: Any) -> None:
    fig, axes = panels
    for ax in axes:
        box = ax.get_window_extent()
        for line in _points(ax).values():
            x, y = ax.transData.transform(line.get_xydata()[0])
            radius = line.get_markersize() / 2 * fig.dpi / 72 + line.get_markeredgewidth()
            assert box.x0 <= x - radius and x + radius <= box.x1, line.get_label()
            assert box.y0 <= y - radius and y + radius <= box.y1, line.get_label()


def test_the_frontier_is_drawn_through_its_points(panels: Any) -> None:
    _, axes = panels
    notes = {
        "nominal": "no run below the frontier",
        "constrained": "no run below the frontier\nflat at the energy floor, 100 J, up to 99.5% "
        "met",
        "volatile": "no run below the frontier\nflat at the energy floor, 100 J, up to 99.0% met,"
        "\nthen 103 J at 99.5%",
    }
    for ax, bandwidth in zip(axes, BANDWIDTHS, strict=True):
        (line,) = [x for x in ax.get_lines() if str(x.get_label()).startswith("bound: least")]
        expected = frontier_line(_bounds(), "7b/13b", bandwidth)
        assert np.allclose(line.get_xydata(), np.array(expected))
        if bandwidth == "nominal":
            ys = np.asarray(line.get_ydata())
            assert ys[-1] > ys[0] * 1.3  # it rises: not a flat line
        assert [t.get_text() for t in ax.texts] == [notes[bandwidth]]


def test_energy_bars_start_at_zero_on_a_linear_axis() -> None:
    def entry(goodput: float, met: float, energy: float) -> PolicyStats:
        return PolicyStats(
            goodput_rps=positive([goodput, goodput * 1.1]),
            deadline_satisfaction=share([met, met]),
            energy_per_request_j=positive([energy, energy]),
            capacity_rps=estimate(goodput),
            lowest_rate_rps=1.0,
            energy_parts_j={},
        )

    tables = {("7b/13b", "nominal"): {"cs-ucb": entry(5.0, 0.9, 240.0), "x": entry(4, 0.8, 157)}}
    fig = goodput_energy_figure(tables, "nominal")
    (ax,) = [a for a in fig.axes if "energy per request" in a.get_title()]
    assert ax.get_yscale() == "linear" and ax.get_ylim()[0] == 0
    heights = [bar.get_height() for bar in ax.patches]
    assert heights == [240.0, 157.0]
    # a bar's drawn length is in proportion to its value
    bottom = ax.transData.transform((0, 0))[1]
    drawn = [ax.transData.transform((0, h))[1] - bottom for h in heights]
    assert drawn[0] / drawn[1] == pytest.approx(240 / 157)
    plt.close(fig)
