"""The grid's yardstick: the bound of each cell's trace, and every policy measured against it.

For each deployment, bandwidth condition and seed, the bound (:mod:`perllm.bound`) is computed
once, at nominal load, on the very trace the policies ran (same seed). Per policy and cell:

- **goodput fraction** = the policy's goodput / the bound on goodput (paired by seed; at most 1);
- **energy multiple** = the policy's weighted energy / the least weighted energy of any run
  that meets as many deadlines (the bound's frontier at the policy's met count). It is also
  the ratio of energies *per met request* at that count, and at least 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from perllm.bound import bound_for_run
from perllm.experiments.analysis import Cell
from perllm.experiments.grid import cluster_for, nominal_rate
from perllm.experiments.intervals import Estimate, fmt, positive, share
from perllm.experiments.rows import BoundRow, GridRow, write_csv

BOUND_FIELDS: tuple[str, ...] = BoundRow.CSV_COLUMNS
"""The columns of ``bounds.csv``."""


@dataclass(frozen=True, slots=True)
class BoundTask:
    deployment: str
    bandwidth: str
    seed: int
    requests: int

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.deployment, self.bandwidth, self.seed)


@dataclass(frozen=True, slots=True)
class BoundScore:
    """One policy in one cell against the bound (mean and 95% interval over seeds)."""

    goodput_fraction: Estimate
    energy_multiple: Estimate

    def to_json(self) -> dict[str, object]:
        return {"goodput_fraction": self.goodput_fraction, "energy_multiple": self.energy_multiple}


@dataclass(frozen=True, slots=True)
class BoundCell:
    """One cell's bound over seeds (deadlines met as a share of the requests, goodput, and
    energy per request at the most met), and each policy's :class:`BoundScore`."""

    met_upper_bound_fraction: Estimate
    goodput_upper_bound_rps: Estimate
    energy_lower_bound_per_request_j: Estimate
    policies: dict[str, BoundScore]

    def to_json(self) -> dict[str, object]:
        return {
            "met_upper_bound_fraction": self.met_upper_bound_fraction,
            "goodput_upper_bound_rps": self.goodput_upper_bound_rps,
            "energy_lower_bound_per_request_j": self.energy_lower_bound_per_request_j,
            "policies": {policy: score.to_json() for policy, score in self.policies.items()},
        }


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


def run_bound(task: BoundTask) -> BoundRow:
    """The bound of one cell's nominal-load trace (runs in a worker process)."""
    cluster = cluster_for(task.deployment, task.bandwidth)
    rate = round(nominal_rate(task.deployment) * 1.0, 6)
    result = bound_for_run(cluster, requests=task.requests, rate_rps=rate, seed=task.seed)
    return BoundRow.of(task.deployment, task.bandwidth, rate, task.seed, result)


def write_bounds_csv(bounds: Sequence[BoundRow], path: Path) -> None:
    """One row per bound (the frontier is in ``results.json``)."""
    write_csv(bounds, BOUND_FIELDS, path)


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else float("nan")


def against_bound(rows: Sequence[GridRow], bounds: Sequence[BoundRow]) -> dict[Cell, BoundCell]:
    """Per cell: the bound's own figures and, per policy, its goodput fraction and energy
    multiple (mean and 95% interval over seeds, :mod:`perllm.experiments.intervals`)."""
    by_key = {(b.deployment, b.bandwidth, b.seed): b for b in bounds}
    out: dict[Cell, BoundCell] = {}
    for dep, bw in sorted({(b.deployment, b.bandwidth) for b in bounds}):
        mine = [b for b in bounds if (b.deployment, b.bandwidth) == (dep, bw)]
        nominal = [r for r in rows if (r.deployment, r.bandwidth, r.rate_factor) == (dep, bw, 1.0)]
        policies: dict[str, BoundScore] = {}
        for policy in sorted({r.policy for r in nominal}):
            fractions, multiples = [], []
            for r in (r for r in nominal if r.policy == policy):
                bound = by_key.get((dep, bw, r.seed))
                if bound is None:
                    continue
                met = round(r.deadline_satisfaction * r.requests)
                fractions.append(_ratio(r.goodput_rps, bound.goodput_upper_bound_rps))
                multiples.append(_ratio(r.weighted_energy_j, bound.energy_lower_bound_at(met)))
            policies[policy] = BoundScore(
                goodput_fraction=share(fractions),
                energy_multiple=positive(multiples, floor=1.0),
            )
        out[(dep, bw)] = BoundCell(
            met_upper_bound_fraction=share([b.met_upper_bound / b.requests for b in mine]),
            goodput_upper_bound_rps=positive([b.goodput_upper_bound_rps for b in mine]),
            energy_lower_bound_per_request_j=positive(
                [b.energy_lower_bound_j / b.requests for b in mine]
            ),
            policies=policies,
        )
    return out


def frontier_line(
    bounds: Sequence[BoundRow], deployment: str, bandwidth: str
) -> list[tuple[float, float]]:
    """The bound's frontier averaged over seeds: (met fraction, weighted J per request) at 0
    (the floor), at each fraction every seed has, then at the most met."""
    mine = [b for b in bounds if (b.deployment, b.bandwidth) == (deployment, bandwidth)]
    if not mine:
        return []
    common = set.intersection(*({p.met_fraction for p in b.frontier[:-1]} for b in mine))
    line = [(0.0, sum(b.energy_floor_j / b.requests for b in mine) / len(mine))]
    for fraction in sorted(common):
        per_request = [
            next(p.energy_lower_bound_j for p in b.frontier if p.met_fraction == fraction)
            / b.requests
            for b in mine
        ]
        line.append((fraction, sum(per_request) / len(mine)))
    most = [
        (b.frontier[-1].met_fraction, b.frontier[-1].energy_lower_bound_j / b.requests)
        for b in mine
    ]
    line.append((sum(m for m, _ in most) / len(mine), sum(e for _, e in most) / len(mine)))
    return line


def report_lines(table: dict[Cell, BoundCell], figures: Sequence[str]) -> list[str]:
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
            f"Bound: at most {fmt(cell.met_upper_bound_fraction, 3)} of requests met, "
            f"goodput at most {fmt(cell.goodput_upper_bound_rps)} req/s; "
            f"at the most met, at least {fmt(cell.energy_lower_bound_per_request_j, 1)} "
            "J per request.",
            "",
            "| policy | goodput fraction | energy multiple |",
            "|---|---|---|",
        ]
        policies = cell.policies
        for policy in sorted(policies, key=lambda p: -policies[p].goodput_fraction["mean"]):
            score = policies[policy]
            lines.append(
                f"| {policy} | {fmt(score.goodput_fraction, 3)} | "
                f"{fmt(score.energy_multiple, suffix='x')} |"
            )
        lines.append("")
    lines += [f"![{name}]({name})" for name in figures]
    lines.append("")
    return lines
