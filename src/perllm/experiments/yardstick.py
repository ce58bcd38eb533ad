"""The grid's yardstick: the bound of each cell's trace, and every policy measured against it.

For each deployment, bandwidth condition and seed, the bound (:mod:`perllm.bound`) is computed
once, at nominal load, on the very trace the policies ran (same seed). Per policy and cell:

- **goodput fraction** = the policy's goodput / the bound on goodput (paired by seed; at most 1);
- **energy multiple** = the policy's weighted energy / the least weighted energy of any run
  that meets as many deadlines (the bound's frontier at the policy's met count). It is also
  the ratio of energies *per met request* at that count, and at least 1.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perllm.bound import bound_for_run
from perllm.bound.result import BoundResult, FrontierPoint
from perllm.experiments.analysis import Cell
from perllm.experiments.grid import cluster_for, nominal_rate
from perllm.experiments.intervals import fmt, positive, share

Row = dict[str, Any]
BOUND_FIELDS: tuple[str, ...] = (
    "deployment",
    "bandwidth",
    "rate_rps",
    "seed",
    "requests",
    "met_upper_bound",
    "goodput_upper_bound_rps",
    "energy_lower_bound_j",
    "energy_floor_j",
)


@dataclass(frozen=True, slots=True)
class BoundTask:
    deployment: str
    bandwidth: str
    seed: int
    requests: int

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.deployment, self.bandwidth, self.seed)


def bound_tasks(
    deployments: Sequence[str], bandwidths: Sequence[str], seeds: int, requests: int
) -> list[BoundTask]:
    """One bound per deployment, bandwidth condition and seed, in a fixed order."""
    return [
        BoundTask(d, b, seed, requests)
        for d in deployments
        for b in bandwidths
        for seed in range(seeds)
    ]


def run_bound(task: BoundTask) -> Row:
    """The bound of one cell's nominal-load trace (runs in a worker process)."""
    cluster = cluster_for(task.deployment, task.bandwidth)
    rate = round(nominal_rate(task.deployment) * 1.0, 6)
    result = bound_for_run(cluster, requests=task.requests, rate_rps=rate, seed=task.seed)
    return {
        "deployment": task.deployment,
        "bandwidth": task.bandwidth,
        "rate_rps": rate,
        "seed": task.seed,
        "requests": result.requests,
        "met_upper_bound": result.met_upper_bound,
        "goodput_upper_bound_rps": result.goodput_upper_bound_rps,
        "energy_lower_bound_j": result.energy_lower_bound_j,
        "energy_floor_j": result.energy_floor_j,
        "frontier": [
            [p.met_fraction, p.met, p.energy_lower_bound_j, p.slope_j_per_met]
            for p in result.frontier
        ],
    }


def write_bounds_csv(bounds: Sequence[Row], path: Path) -> None:
    """One row per bound (the frontier is in ``results.json``)."""
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=BOUND_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(bounds)


def _result(row: Row) -> BoundResult:
    """Enough of a :class:`BoundResult` to evaluate its frontier."""
    frontier = tuple(FrontierPoint(*point) for point in row["frontier"])
    return BoundResult(
        requests=row["requests"],
        met_upper_bound=row["met_upper_bound"],
        met_lp=float(row["met_upper_bound"]),
        window_s=0.0,
        goodput_met_upper_bound=0,
        goodput_upper_bound_rps=row["goodput_upper_bound_rps"],
        energy_lower_bound_j=row["energy_lower_bound_j"],
        energy_floor_j=row["energy_floor_j"],
        frontier=frontier,
    )


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else float("nan")


def against_bound(rows: Sequence[Row], bounds: Sequence[Row]) -> dict[Cell, dict[str, Any]]:
    """Per cell: the bound's own figures and, per policy, its goodput fraction and energy
    multiple (mean and 95% interval over seeds, :mod:`perllm.experiments.intervals`)."""
    by_key = {(b["deployment"], b["bandwidth"], b["seed"]): b for b in bounds}
    out: dict[Cell, dict[str, Any]] = {}
    for dep, bw in sorted({(b["deployment"], b["bandwidth"]) for b in bounds}):
        mine = [b for b in bounds if (b["deployment"], b["bandwidth"]) == (dep, bw)]
        cell: dict[str, Any] = {
            "met_upper_bound_fraction": share([b["met_upper_bound"] / b["requests"] for b in mine]),
            "goodput_upper_bound_rps": positive([b["goodput_upper_bound_rps"] for b in mine]),
            "energy_lower_bound_per_request_j": positive(
                [b["energy_lower_bound_j"] / b["requests"] for b in mine]
            ),
            "policies": {},
        }
        nominal = [
            r for r in rows if (r["deployment"], r["bandwidth"], r["rate_factor"]) == (dep, bw, 1.0)
        ]
        for policy in sorted({r["policy"] for r in nominal}):
            fractions, multiples = [], []
            for r in (r for r in nominal if r["policy"] == policy):
                bound = by_key.get((dep, bw, r["seed"]))
                if bound is None:
                    continue
                met = round(r["deadline_satisfaction"] * r["requests"])
                fractions.append(_ratio(r["goodput_rps"], bound["goodput_upper_bound_rps"]))
                multiples.append(
                    _ratio(r["weighted_energy_j"], _result(bound).energy_lower_bound_at(met))
                )
            cell["policies"][policy] = {
                "goodput_fraction": share(fractions),
                "energy_multiple": positive(multiples, floor=1.0),
            }
        out[(dep, bw)] = cell
    return out


def frontier_line(
    bounds: Sequence[Row], deployment: str, bandwidth: str
) -> list[tuple[float, float]]:
    """The bound's frontier averaged over seeds: (met fraction, weighted J per request) at 0
    (the floor), at each fraction every seed has, then at the most met."""
    mine = [b for b in bounds if (b["deployment"], b["bandwidth"]) == (deployment, bandwidth)]
    if not mine:
        return []
    common = set.intersection(*({p[0] for p in b["frontier"][:-1]} for b in mine))
    line = [(0.0, sum(b["energy_floor_j"] / b["requests"] for b in mine) / len(mine))]
    for fraction in sorted(common):
        per_request = [
            next(p[2] for p in b["frontier"] if p[0] == fraction) / b["requests"] for b in mine
        ]
        line.append((fraction, sum(per_request) / len(mine)))
    most = [(b["frontier"][-1][0], b["frontier"][-1][2] / b["requests"]) for b in mine]
    line.append((sum(m for m, _ in most) / len(mine), sum(e for _, e in most) / len(mine)))
    return line


def report_lines(table: dict[Cell, dict[str, Any]], figures: Sequence[str]) -> list[str]:
    """The report's section on the bound."""
    lines = [
        "## Against the bound",
        "",
        "The bound (`perllm bound`) is an LP relaxation of everything the simulator can do "
        "with a trace: no schedule meets more deadlines, reaches a higher goodput, or meets as "
        "many for less weighted energy. It is computed once per cell and seed at nominal load, "
        "on the trace the policies ran. *Goodput fraction* = goodput / the bound's (at most 1); "
        "*energy multiple* = weighted energy / the least weighted energy of any run meeting "
        "as many deadlines (the same ratio per met request; at least 1). Mean [95% CI] over "
        "seeds, on the logit scale for fractions and met shares, on the log scale for the "
        "rest (for the energy multiple, of its excess over 1), so that no interval leaves its "
        "quantity's range. The relaxation is loose where the simulator is rigid (FIFO queues, "
        "prefill and batch efficiency), so a fraction below 1 is room that *may* be left, not "
        "room that is.",
        "",
    ]
    for (dep, bw), cell in sorted(table.items()):
        lines += [
            f"### {dep}, {bw} bandwidth",
            "",
            f"Bound: at most {fmt(cell['met_upper_bound_fraction'], 3)} of requests met, "
            f"goodput at most {fmt(cell['goodput_upper_bound_rps'])} req/s; "
            f"at the most met, at least {fmt(cell['energy_lower_bound_per_request_j'], 1)} "
            "J per request.",
            "",
            "| policy | goodput fraction | energy multiple |",
            "|---|---|---|",
        ]
        policies = cell["policies"]
        for policy in sorted(policies, key=lambda p: -policies[p]["goodput_fraction"]["mean"]):
            stats = policies[policy]
            lines.append(
                f"| {policy} | {fmt(stats['goodput_fraction'], 3)} | "
                f"{fmt(stats['energy_multiple'], suffix='x')} |"
            )
        lines.append("")
    lines += [f"![{name}]({name})" for name in figures]
    lines.append("")
    return lines
