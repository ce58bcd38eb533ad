"""Pareto plots: deadline satisfaction against weighted energy per request, one point per
policy, and the bound's frontier (no run lies below-right of it).

The frontier is drawn through its points (the least weighted energy of any run meeting 50, 70,
90, 95 and 99% of deadlines and the most, :func:`perllm.experiments.yardstick.frontier_line`),
from the energy floor at 0 met; where it stays at the floor (the LP meets that many deadlines
at no energy above its floor) the panel says up to which share met. Points keep the looks of
:func:`perllm.experiments.plots.styles` (hollow markers of distinct shapes, shrinking in
drawing order), so points that coincide stay visible; the axes are padded so that points at
0 or 1 met are drawn whole.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from perllm.experiments.plots import _figure_legend, _order, styles
from perllm.experiments.rows import BoundRow, GridRow
from perllm.experiments.yardstick import frontier_line

X_LIMITS = (-0.04, 1.04)
FLAT = 1e-6  # relative rise under which the frontier counts as flat


def _percent(fraction: float) -> str:
    return f"{math.floor(fraction * 1000) / 10:.1f}%"  # never rounded up to 100%


def _flat_note(xs: Sequence[float], ys: Sequence[float]) -> str:
    """Where the frontier stays at the energy floor: up to which share met, and what follows."""
    flat = [x for x, y in zip(xs, ys, strict=True) if y <= ys[0] * (1 + FLAT)]
    if len(flat) < 2:
        return ""
    note = f"\nflat at the energy floor, {ys[0]:.0f} J, up to {_percent(flat[-1])} met"
    if flat[-1] < xs[-1]:
        note += f",\nthen {ys[-1]:.0f} J at {_percent(xs[-1])}"
    return note


def _frontier(ax: Any, line: Sequence[tuple[float, float]]) -> None:
    """The frontier through its points, and the most met."""
    xs, ys = zip(*line, strict=True)
    label = "bound: least energy (frontier)"
    ax.plot(xs, ys, color="black", linewidth=1.8, marker=".", markersize=7, label=label)
    ax.axvline(xs[-1], color="black", linestyle=":", linewidth=1.2, label="bound: most met")


def _shade(ax: Any, line: Sequence[tuple[float, float]]) -> None:
    """Shade what no run reaches (below the frontier), with room under it for a note that says
    so, and where the frontier is flat, that it is (log axis: set after the points)."""
    xs, ys = zip(*line, strict=True)
    bottom, top = min(ys) / 2.5, ax.get_ylim()[1]
    ax.fill_between(xs, bottom, ys, color="black", alpha=0.08, linewidth=0)
    ax.set_ylim(bottom, top)
    note = "no run below the frontier" + _flat_note(xs, ys)
    ax.text(0.01, (bottom * ys[0]) ** 0.5, note, fontsize=7.5, va="center", linespacing=1.1)


def pareto_figure(
    rows: Sequence[GridRow],
    bounds: Sequence[BoundRow],
    deployment: str,
    bandwidths: Sequence[str],
) -> Figure:
    """One panel per bandwidth condition at nominal load; points are means over seeds."""
    mine = [r for r in rows if r.deployment == deployment and r.rate_factor == 1.0]
    policies = _order(sorted({r.policy for r in mine}))
    looks = styles(policies)
    fig, axes = plt.subplots(
        1,
        len(bandwidths),
        figsize=(5.2 * len(bandwidths) + 2.2, 4.6),
        squeeze=False,
        layout="constrained",
    )
    for col, bandwidth in enumerate(bandwidths):
        ax = axes[0][col]
        line = frontier_line(bounds, deployment, bandwidth)
        if line:
            _frontier(ax, line)
        for policy in policies:
            runs = [r for r in mine if r.bandwidth == bandwidth and r.policy == policy]
            if not runs:
                continue
            x = float(np.mean([r.deadline_satisfaction for r in runs]))
            y = float(np.mean([r.weighted_energy_j / r.requests for r in runs]))
            look = looks[policy].kwargs() | {"linestyle": "none", "alpha": 0.85}
            ax.plot([x], [y], label=policy, **look)
        ax.set_yscale("log")
        ax.set_xlim(*X_LIMITS)
        if line:
            _shade(ax, line)
        ax.set_xlabel("deadline satisfaction (met / requests)")
        ax.set_ylabel("weighted energy per request (J)")
        ax.set_title(f"{deployment}, {bandwidth} bandwidth, nominal load")
        ax.grid(alpha=0.3, which="both")
    _figure_legend(fig, axes)
    return fig


def pareto(
    rows: Sequence[GridRow],
    bounds: Sequence[BoundRow],
    deployment: str,
    bandwidths: Sequence[str],
    path: Path,
) -> None:
    """Write :func:`pareto_figure` to ``path``."""
    fig = pareto_figure(rows, bounds, deployment, bandwidths)
    fig.savefig(path, dpi=110)
    plt.close(fig)
