"""The real-trace block of ``perllm reproduce``: policies on the shipped production traces.

Each trace scenario (``docs/traces.md``) is replayed at the trace's own times by each policy of
:data:`POLICIES`: the whole trace, or its first :data:`QUICK_REQUESTS` requests with
``--quick``. A run gives one :class:`TraceRow`; the block writes them to ``traces.csv``, a
table per trace in the report, and ``traces.png`` (deadlines met against energy per met
request, one panel per trace). These figures stand apart from the synthetic grid's: the
workloads, clusters and deadlines differ.

Attribution: Azure LLM inference trace 2023 (CC BY 4.0), Patel et al., "Splitwise", ISCA 2024;
Mooncake trace (Apache 2.0), Qin et al., "Mooncake", USENIX FAST 2025 (``NOTICE``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from perllm.cluster import scenario
from perllm.experiments.plots import styles
from perllm.experiments.rows import Row, write_csv
from perllm.sim.runner import run_once

SCENARIOS = ("azure-conv-gpu-edge", "azure-code-gpu-edge", "mooncake-gpu-edge", "mooncake-cloud")
POLICIES = (
    "cs-ucb",
    "prefix-affinity",
    "least-loaded",
    "cloud-only",
    "greedy-latency",
    "feasible-energy",
    "feasible-latency",
)
QUICK_REQUESTS = 3000
ATTRIBUTION = (
    "Traces: Azure LLM inference 2023 (CC BY 4.0; Patel et al., Splitwise, ISCA 2024) and "
    "Mooncake's conversation trace (Apache 2.0; Qin et al., Mooncake, FAST 2025)."
)


@dataclass(frozen=True, slots=True)
class TraceTask:
    """One replay: a trace scenario, a policy, the first ``requests`` requests (``None``: the
    whole trace) and a seed."""

    scenario: str
    policy: str
    requests: int | None
    seed: int = 0

    @property
    def key(self) -> tuple[str, str, int | None, int]:
        return (self.scenario, self.policy, self.requests, self.seed)


@dataclass(frozen=True, slots=True)
class TraceRow(Row):
    """One replay's figures. ``refused``: requests too long for every server they could go to
    (counted as missed); ``prefill_saved``: the share of the served prompt tokens that the
    servers' prefix caches spared from prefill."""

    scenario: str
    policy: str
    seed: int
    requests: int
    met: int
    deadline_satisfaction: float
    goodput_rps: float
    weighted_energy_j: float
    j_per_met: float
    refused: int
    prefill_saved: float


def run_trace(task: TraceTask) -> TraceRow:
    """One replay -> one row (runs in a worker process)."""
    cluster = scenario.load(task.scenario)
    result = run_once(cluster, task.policy, requests=task.requests, seed=task.seed)
    summary = result.summary
    cached, prompt = result.recorder.prefill_saved()
    return TraceRow(
        scenario=task.scenario,
        policy=task.policy,
        seed=task.seed,
        requests=summary.requests,
        met=summary.met,
        deadline_satisfaction=summary.deadline_satisfaction,
        goodput_rps=summary.goodput_rps,
        weighted_energy_j=summary.weighted_energy_j,
        j_per_met=summary.weighted_energy_j / summary.met if summary.met else math.inf,
        refused=len(result.recorder.reasons),
        prefill_saved=cached / prompt if prompt else 0.0,
    )


def write_rows(rows: Sequence[TraceRow], path: Path) -> None:
    write_csv(rows, TraceRow.columns(), path)


def report_lines(rows: Sequence[TraceRow], figure: str) -> list[str]:
    """The report's section: one table per trace, in the order the rows came."""
    lines = [
        "## Real traces",
        "",
        "Each trace replayed at its own times (deadline: TTFT + TPOT SLOs, `docs/traces.md`); "
        "not comparable with the synthetic grid. " + ATTRIBUTION,
        "",
    ]
    for name in dict.fromkeys(row.scenario for row in rows):
        mine = [row for row in rows if row.scenario == name]
        lines += [
            f"### {name} ({mine[0].requests:,} requests)",
            "",
            "| policy | met % | goodput/s | J per met | refused | prefill saved |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {row.policy} | {100 * row.deadline_satisfaction:.1f} | {row.goodput_rps:.2f} "
            f"| {row.j_per_met:.0f} | {row.refused:,} | {100 * row.prefill_saved:.1f}% |"
            for row in mine
        ]
        lines.append("")
    lines += [f"![{figure}]({figure})", ""]
    return lines


def plot(rows: Sequence[TraceRow], path: Path) -> None:
    """Deadlines met against weighted energy per met request, a panel per trace."""
    names = list(dict.fromkeys(row.scenario for row in rows))
    looks = styles([row.policy for row in rows])
    fig, axes = plt.subplots(
        1, len(names), figsize=(4.2 * len(names), 3.8), squeeze=False, layout="constrained"
    )
    for ax, name in zip(axes[0], names, strict=True):
        for row in (r for r in rows if r.scenario == name):
            look = looks[row.policy].kwargs() | {"linestyle": "none"}
            ax.plot(row.j_per_met, 100 * row.deadline_satisfaction, label=row.policy, **look)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("weighted J per met request")
        ax.set_ylabel("deadlines met (%)")
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", fontsize=8, frameon=False)
    fig.savefig(path, dpi=110)
    plt.close(fig)
