"""The report's figures (matplotlib, written as PNG files)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from perllm.experiments.analysis import SATISFACTION_TARGET, Cell

SUBJECT = "cs-ucb"


# tab10 without its red (CS-UCB's) and grey (near the oracle's black), then light variants.
_PALETTE = [plt.get_cmap("tab10")(i) for i in (0, 1, 2, 4, 5, 6, 8, 9)] + [
    plt.get_cmap("tab20")(i) for i in (1, 3, 5, 9, 11)
]


def _colors(policies: Sequence[str]) -> dict[str, Any]:
    others = [p for p in sorted(set(policies)) if p not in (SUBJECT, "oracle")]
    colors: dict[str, Any] = {p: _PALETTE[i % len(_PALETTE)] for i, p in enumerate(others)}
    colors[SUBJECT] = "#d62728"
    colors["oracle"] = "#222222"
    return colors


def _order(policies: Sequence[str]) -> list[str]:
    rest = sorted(p for p in policies if p not in (SUBJECT, "oracle"))
    return [p for p in (SUBJECT, "oracle") if p in policies] + rest


def _bars(ax: Any, table: dict[str, dict[str, Any]], metric: str, colors: dict[str, Any]) -> None:
    policies = _order(list(table))
    means = np.array([table[p][metric]["mean"] for p in policies])
    low = np.array([table[p][metric]["ci_low"] for p in policies])
    high = np.array([table[p][metric]["ci_high"] for p in policies])
    err = np.nan_to_num(np.vstack([means - low, high - means]), nan=0.0)
    x = np.arange(len(policies))
    ax.bar(x, means, yerr=err, capsize=3, color=[colors[p] for p in policies])
    ax.set_xticks(x, policies, rotation=60, ha="right", fontsize=8)
    ax.grid(axis="y", alpha=0.3)


def goodput_energy(
    tables: dict[Cell, dict[str, dict[str, Any]]], bandwidth: str, path: Path
) -> None:
    """Goodput and energy per request by policy, one column per deployment (95% CI bars)."""
    cells = sorted(c for c in tables if c[1] == bandwidth)
    colors = _colors([p for c in cells for p in tables[c]])
    fig, axes = plt.subplots(2, len(cells), figsize=(5 * len(cells), 7.5), squeeze=False)
    for col, cell in enumerate(cells):
        _bars(axes[0][col], tables[cell], "goodput_rps", colors)
        axes[0][col].set_title(f"{cell[0]} - goodput at nominal load")
        axes[0][col].set_ylabel("deadline-met requests / s")
        _bars(axes[1][col], tables[cell], "energy_per_request_j", colors)
        axes[1][col].set_title(f"{cell[0]} - energy per request")
        axes[1][col].set_ylabel("J / request")
        axes[1][col].set_yscale("log")
    fig.suptitle(f"Bandwidth: {bandwidth} (bars: mean over seeds, whiskers: 95% CI)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def energy_split(tables: dict[Cell, dict[str, dict[str, Any]]], path: Path) -> None:
    """Energy per request split into transmission / inference / idle (nominal bandwidth)."""
    cells = sorted(c for c in tables if c[1] == "nominal")
    fig, axes = plt.subplots(1, len(cells), figsize=(5 * len(cells), 4.5), squeeze=False)
    parts = ("inference", "idle", "transmission")
    shades = {"inference": "#1f77b4", "idle": "#bbbbbb", "transmission": "#ff7f0e"}
    for col, cell in enumerate(cells):
        ax = axes[0][col]
        policies = _order(list(tables[cell]))
        x = np.arange(len(policies))
        bottom = np.zeros(len(policies))
        for part in parts:
            values = np.array([tables[cell][p]["energy_parts_j"][part] for p in policies])
            ax.bar(x, values, bottom=bottom, color=shades[part], label=part)
            bottom += values
        ax.set_xticks(x, policies, rotation=60, ha="right", fontsize=8)
        ax.set_title(f"{cell[0]} - energy per request by part")
        ax.set_ylabel("J / request")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def satisfaction_vs_rate(rows: Sequence[dict[str, Any]], bandwidth: str, path: Path) -> None:
    """Deadline satisfaction against arrival rate, one panel per deployment."""
    deployments = sorted({r["deployment"] for r in rows if r["bandwidth"] == bandwidth})
    policies = sorted({r["policy"] for r in rows})
    colors = _colors(policies)
    fig, axes = plt.subplots(
        1, len(deployments), figsize=(5 * len(deployments), 4.5), squeeze=False
    )
    for col, dep in enumerate(deployments):
        ax = axes[0][col]
        for policy in _order(policies):
            mine = [
                r
                for r in rows
                if (r["deployment"], r["bandwidth"], r["policy"]) == (dep, bandwidth, policy)
            ]
            rates = sorted({r["rate_rps"] for r in mine})
            means = [
                np.mean([r["deadline_satisfaction"] for r in mine if r["rate_rps"] == x])
                for x in rates
            ]
            ax.plot(
                rates,
                means,
                marker="o",
                color=colors[policy],
                label=policy,
                linewidth=2.5 if policy == SUBJECT else 1.2,
                linestyle="--" if policy == "oracle" else "-",
            )
        ax.axhline(SATISFACTION_TARGET, color="grey", linestyle=":", linewidth=1)
        ax.set_title(f"{dep} - {bandwidth} bandwidth")
        ax.set_xlabel("arrival rate (requests / s)")
        ax.set_ylabel("deadline satisfaction")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def regret(curves: Sequence[dict[str, Any]], path: Path) -> None:
    """Cumulative regret against the oracle over simulated time."""
    deployments = sorted({c["deployment"] for c in curves})
    fig, axes = plt.subplots(1, len(deployments), figsize=(5 * len(deployments), 4), squeeze=False)
    colors = _colors([c["policy"] for c in curves])
    for col, dep in enumerate(deployments):
        ax = axes[0][col]
        for curve in (c for c in curves if c["deployment"] == dep):
            ax.plot(
                curve["time_s"],
                curve["regret"],
                color=colors[curve["policy"]],
                label=curve["policy"],
                linewidth=2 if curve["policy"] == SUBJECT else 1.2,
            )
        ax.axhline(0, color="grey", linewidth=0.8)
        ax.set_title(f"{dep} - regret vs one-step oracle")
        ax.set_xlabel("simulated time (s)")
        ax.set_ylabel("cumulative regret")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
