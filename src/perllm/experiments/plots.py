"""The report's figures (matplotlib, written as PNG files).

Every policy keeps one look across the figures (:func:`styles`): a colour, a marker and a line
style, so that two policies whose curves coincide exactly (cloud-only under greedy-energy, say)
both stay visible: the markers are hollow, of different shapes and shrinking in drawing order,
and the dashes of the later line let the earlier one show through. Legends are figure-level,
outside the axes, so they never cover data.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.artist import Artist
from matplotlib.figure import Figure

from perllm.experiments.analysis import SATISFACTION_TARGET, Cell, PolicyStats
from perllm.experiments.intervals import Estimate
from perllm.experiments.rows import GridRow, RegretCurve

SUBJECT = "cs-ucb"


Color = str | tuple[float, float, float, float]
"""A matplotlib colour: a name or hex string, or RGBA."""

# tab10 without its red (CS-UCB's) and grey (near the oracle's black), then light variants.
_PALETTE: Sequence[Color] = [plt.get_cmap("tab10")(i) for i in (0, 1, 2, 4, 5, 6, 8, 9)] + [
    plt.get_cmap("tab20")(i) for i in (1, 3, 5, 9, 11)
]
# Distinct shapes, and dash patterns only: a curve drawn over another lets it show through its
# gaps, as long as the two dash patterns differ. Policies that share a pattern get it at
# different phases (steps of the golden ratio of its period, never the same twice).
_MARKERS = ("s", "D", "^", "v", "P", "X", "<", ">", "h", "p", "*", "d", "H")
_DASHES: tuple[tuple[float, ...], ...] = (
    (6, 2),
    (3, 1.5, 1, 1.5),
    (1, 1.5),
    (8, 2, 2, 2),
    (4, 1.5, 1, 1.5, 1, 1.5),
)
_GOLDEN = (5**0.5 - 1) / 2


def _dashes(k: int) -> tuple[float, tuple[float, ...]]:
    """The ``k``-th dash pattern: each pattern in turn, each round at another phase."""
    pattern = _DASHES[k % len(_DASHES)]
    phase = (k // len(_DASHES)) * _GOLDEN % 1.0
    return (round(phase * sum(pattern), 6), pattern)


def _colors(policies: Sequence[str]) -> dict[str, Color]:
    others = [p for p in sorted(set(policies)) if p not in (SUBJECT, "oracle")]
    colors: dict[str, Color] = {p: _PALETTE[i % len(_PALETTE)] for i, p in enumerate(others)}
    colors[SUBJECT] = "#d62728"
    colors["oracle"] = "#222222"
    return colors


def _order(policies: Sequence[str]) -> list[str]:
    rest = sorted(p for p in policies if p not in (SUBJECT, "oracle"))
    return [p for p in (SUBJECT, "oracle") if p in policies] + rest


@dataclass(frozen=True)
class LineStyle:
    """How one policy's curve is drawn (keyword arguments of ``Axes.plot``)."""

    color: Color
    marker: str
    linestyle: Any
    linewidth: float
    markersize: float
    filled: bool
    zorder: float

    def kwargs(self) -> dict[str, object]:
        return {
            "color": self.color,
            "marker": self.marker,
            "linestyle": self.linestyle,
            "linewidth": self.linewidth,
            "markersize": self.markersize,
            "markerfacecolor": self.color if self.filled else "none",
            "markeredgewidth": 1.3,
            "zorder": self.zorder,
        }


def styles(policies: Sequence[str]) -> dict[str, LineStyle]:
    """One look per policy, drawn in :func:`_order` (CS-UCB first, at the bottom).

    CS-UCB: a thick red solid line with filled circles; the oracle: black dashes with hollow
    circles. The others take hollow markers of distinct shapes, dashes of their own (pattern
    and phase), and markers that shrink in drawing order, so that a curve drawn exactly over
    another leaves it visible (its line through the gaps, its marker around the smaller one).
    """
    colors = _colors(policies)
    ordered = _order(sorted(set(policies)))
    looks: dict[str, LineStyle] = {}
    rest = [p for p in ordered if p not in (SUBJECT, "oracle")]
    if SUBJECT in ordered:
        looks[SUBJECT] = LineStyle(colors[SUBJECT], "o", "-", 2.8, 8.0, True, 2.0)
    if "oracle" in ordered:
        looks["oracle"] = LineStyle(colors["oracle"], "o", (0, (5, 2)), 1.5, 6.0, False, 2.1)
    for k, policy in enumerate(rest):
        marker = _MARKERS[k % len(_MARKERS)]
        linestyle = _dashes(k)
        size = max(4.0, 9.0 - 0.35 * k)
        looks[policy] = LineStyle(
            colors[policy], marker, linestyle, 1.3, size, False, 2.2 + k / 100
        )
    return looks


def _figure_legend(fig: Figure, axes: Any) -> None:
    """One legend for the whole figure, right of the panels (needs the constrained layout)."""
    by_label: dict[str, Artist] = {}
    for ax in np.ravel(axes):
        handles, labels = ax.get_legend_handles_labels()
        for handle, label in zip(handles, labels, strict=True):
            by_label.setdefault(label, handle)
    fig.legend(
        list(by_label.values()),
        list(by_label),
        loc="outside right center",
        fontsize=8,
        handlelength=3.2,
        frameon=False,
    )


Tables = dict[Cell, dict[str, PolicyStats]]


def _bars(
    ax: Any,
    table: dict[str, PolicyStats],
    metric: Callable[[PolicyStats], Estimate],
    colors: dict[str, Color],
) -> None:
    """Bars of ``metric``'s estimate per policy on a linear axis from 0 (bar heights compare
    as ratios), whiskers its 95% interval (none where there is no interval)."""
    policies = _order(list(table))
    means = np.array([metric(table[p])["mean"] for p in policies])
    low = np.array([metric(table[p])["ci_low"] for p in policies])
    high = np.array([metric(table[p])["ci_high"] for p in policies])
    err = np.nan_to_num(np.vstack([means - low, high - means]), nan=0.0)
    x = np.arange(len(policies))
    ax.bar(x, means, yerr=err, capsize=3, color=[colors[p] for p in policies])
    ax.set_xticks(x, policies, rotation=60, ha="right", fontsize=8)
    ax.set_ylim(bottom=0)
    ax.grid(axis="y", alpha=0.3)


def goodput_energy_figure(tables: Tables, bandwidth: str) -> Figure:
    """Goodput and energy per request by policy, one column per deployment (95% CI whiskers),
    both on linear axes from 0."""
    cells = sorted(c for c in tables if c[1] == bandwidth)
    colors = _colors([p for c in cells for p in tables[c]])
    fig, axes = plt.subplots(2, len(cells), figsize=(5 * len(cells), 7.5), squeeze=False)
    for col, cell in enumerate(cells):
        _bars(axes[0][col], tables[cell], lambda stats: stats.goodput_rps, colors)
        axes[0][col].set_title(f"{cell[0]} - goodput at nominal load")
        axes[0][col].set_ylabel("deadline-met requests / s")
        _bars(axes[1][col], tables[cell], lambda stats: stats.energy_per_request_j, colors)
        axes[1][col].set_title(f"{cell[0]} - energy per request")
        axes[1][col].set_ylabel("J / request")
    fig.suptitle(f"Bandwidth: {bandwidth} (bars: mean over seeds, whiskers: 95% CI)")
    fig.tight_layout()
    return fig


def goodput_energy(tables: Tables, bandwidth: str, path: Path) -> None:
    """Write :func:`goodput_energy_figure` to ``path``."""
    fig = goodput_energy_figure(tables, bandwidth)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def energy_split(tables: Tables, path: Path) -> None:
    """Energy per request split into transmission / inference / idle (nominal bandwidth)."""
    cells = sorted(c for c in tables if c[1] == "nominal")
    fig, axes = plt.subplots(
        1, len(cells), figsize=(5 * len(cells) + 1.2, 4.5), squeeze=False, layout="constrained"
    )
    parts = ("inference", "idle", "transmission")
    shades = {"inference": "#1f77b4", "idle": "#bbbbbb", "transmission": "#ff7f0e"}
    for col, cell in enumerate(cells):
        ax = axes[0][col]
        policies = _order(list(tables[cell]))
        x = np.arange(len(policies))
        bottom = np.zeros(len(policies))
        for part in parts:
            values = np.array([tables[cell][p].energy_parts_j[part] for p in policies])
            ax.bar(x, values, bottom=bottom, color=shades[part], label=part)
            bottom += values
        ax.set_xticks(x, policies, rotation=60, ha="right", fontsize=8)
        ax.set_title(f"{cell[0]} - energy per request by part")
        ax.set_ylabel("J / request")
        ax.grid(axis="y", alpha=0.3)
    _figure_legend(fig, axes)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def satisfaction_vs_rate_figure(rows: Sequence[GridRow], bandwidth: str) -> Figure:
    """Deadline satisfaction against arrival rate, one panel per deployment (mean over seeds)."""
    deployments = sorted({r.deployment for r in rows if r.bandwidth == bandwidth})
    policies = sorted({r.policy for r in rows})
    looks = styles(policies)
    fig, axes = plt.subplots(
        1,
        len(deployments),
        figsize=(5 * len(deployments) + 1.6, 4.5),
        squeeze=False,
        layout="constrained",
    )
    for col, dep in enumerate(deployments):
        ax = axes[0][col]
        for policy in _order(policies):
            mine = [
                r for r in rows if (r.deployment, r.bandwidth, r.policy) == (dep, bandwidth, policy)
            ]
            rates = sorted({float(r.rate_rps) for r in mine})
            means = [
                np.mean([float(r.deadline_satisfaction) for r in mine if float(r.rate_rps) == x])
                for x in rates
            ]
            ax.plot(rates, means, label=policy, **looks[policy].kwargs())
        ax.axhline(SATISFACTION_TARGET, color="grey", linestyle=":", linewidth=1, zorder=1)
        ax.set_title(f"{dep} - {bandwidth} bandwidth")
        ax.set_xlabel("arrival rate (requests / s)")
        ax.set_ylabel("deadline satisfaction")
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
    _figure_legend(fig, axes)
    return fig


def satisfaction_vs_rate(rows: Sequence[GridRow], bandwidth: str, path: Path) -> None:
    """Write :func:`satisfaction_vs_rate_figure` to ``path``."""
    fig = satisfaction_vs_rate_figure(rows, bandwidth)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def regret_figure(curves: Sequence[RegretCurve]) -> Figure:
    """Cumulative regret against the oracle over simulated time, one panel per deployment."""
    deployments = sorted({c.deployment for c in curves})
    fig, axes = plt.subplots(
        1,
        len(deployments),
        figsize=(5 * len(deployments) + 1.6, 4),
        squeeze=False,
        layout="constrained",
    )
    looks = styles([c.policy for c in curves])
    for col, dep in enumerate(deployments):
        ax = axes[0][col]
        for curve in (c for c in curves if c.deployment == dep):
            ax.plot(
                curve.time_s,
                curve.regret,
                label=curve.policy,
                markevery=0.1,
                **looks[curve.policy].kwargs(),
            )
        ax.axhline(0, color="grey", linewidth=0.8, zorder=1)
        ax.set_title(f"{dep} - regret vs one-step oracle")
        ax.set_xlabel("simulated time (s)")
        ax.set_ylabel("cumulative regret")
        ax.grid(alpha=0.3)
    _figure_legend(fig, axes)
    return fig


def regret(curves: Sequence[RegretCurve], path: Path) -> None:
    """Write :func:`regret_figure` to ``path``."""
    fig = regret_figure(curves)
    fig.savefig(path, dpi=110)
    plt.close(fig)
