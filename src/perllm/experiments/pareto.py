"""Pareto plots: deadline satisfaction against energy per request, one point per policy, and
the bound's frontier (no run lies below-right of it)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from perllm.experiments.plots import SUBJECT, _colors, _order
from perllm.experiments.yardstick import frontier_line

_MARKERS = ["o", "s", "D", "^", "v", "P", "X", "<", ">", "h", "p", "*"]


def pareto(
    rows: Sequence[dict[str, Any]],
    bounds: Sequence[dict[str, Any]],
    deployment: str,
    bandwidths: Sequence[str],
    path: Path,
) -> None:
    """One panel per bandwidth condition at nominal load; points are means over seeds."""
    mine = [r for r in rows if r["deployment"] == deployment and r["rate_factor"] == 1.0]
    policies = _order(sorted({r["policy"] for r in mine}))
    colors = _colors(policies)
    fig, axes = plt.subplots(
        1, len(bandwidths), figsize=(5.2 * len(bandwidths) + 2.2, 4.6), squeeze=False
    )
    for col, bandwidth in enumerate(bandwidths):
        ax = axes[0][col]
        line = frontier_line(bounds, deployment, bandwidth)
        if line:
            xs, ys = zip(*line, strict=True)
            ax.plot(xs, ys, color="black", linewidth=2, label="bound: least energy")
            ax.fill_between(xs, 0, ys, color="black", alpha=0.08, linewidth=0)
            ax.axvline(xs[-1], color="black", linestyle=":", linewidth=1.2, label="bound: most met")
        for k, policy in enumerate(policies):
            runs = [r for r in mine if r["bandwidth"] == bandwidth and r["policy"] == policy]
            if not runs:
                continue
            x = float(np.mean([r["deadline_satisfaction"] for r in runs]))
            y = float(np.mean([r["weighted_energy_j"] / r["requests"] for r in runs]))
            ax.scatter(
                x,
                y,
                color=colors[policy],
                marker=_MARKERS[k % len(_MARKERS)],
                s=70 if policy == SUBJECT else 45,
                edgecolors="black" if policy == SUBJECT else "none",
                label=policy,
                zorder=3,
            )
        ax.set_yscale("log")
        ax.set_xlim(0, 1.02)
        ax.set_xlabel("deadline satisfaction (met / requests)")
        ax.set_ylabel("weighted energy per request (J)")
        ax.set_title(f"{deployment}, {bandwidth} bandwidth, nominal load")
        ax.grid(alpha=0.3, which="both")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
