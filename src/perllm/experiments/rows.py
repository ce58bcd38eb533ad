"""The experiments' rows, one frozen dataclass per kind, and their one way to JSON and CSV.

- :class:`GridRow`: one run of the ``perllm reproduce`` grid, built by
  :func:`perllm.experiments.grid.run_task` (``results.csv``, ``results.json``'s ``runs``);
- :class:`BoundRow`: the bound of one grid cell and seed, built by
  :func:`perllm.experiments.yardstick.run_bound` (``bounds.csv``, ``results.json``'s
  ``bounds``);
- :class:`RegretCurve`: a policy's cumulative regret, built by
  :func:`perllm.experiments.grid.run_regret` (``regret.csv``);
- :class:`RunRow`: one run of the robustness benchmark, built by
  :func:`perllm.experiments.robustness_runs.run_task` (``robustness.csv``);
- :class:`GeneratedCluster`: a cluster that benchmark generated, built by
  :func:`perllm.experiments.robustness_runs.generate_task` (``clusters.csv``).

Every row is a :class:`Row`: :meth:`Row.to_json` gives its JSON object (keys in field order,
values as they are, so floats keep their exact repr), :meth:`Row.from_json` reads that object
back into an equal row, and :func:`write_csv` writes rows with their fields as columns. The
sweep checkpoint (:mod:`perllm.experiments.checkpoint`) stores rows as :meth:`Row.to_json`
writes them.
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

from perllm.bound.result import BoundResult, FrontierPoint, least_energy_at
from perllm.clustergen.capacity import Capacity
from perllm.metrics.summary import Summary

__all__ = [
    "BoundRow",
    "GeneratedCluster",
    "GridRow",
    "RegretCurve",
    "Row",
    "RunRow",
    "write_csv",
]


class Row:
    """A frozen dataclass whose fields are its columns: its JSON object is its fields in order,
    its CSV row their values (subclasses with nested fields write and read those themselves)."""

    __slots__ = ()
    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]

    @classmethod
    def columns(cls) -> tuple[str, ...]:
        """The field names, in order: the JSON keys and the CSV header."""
        return tuple(f.name for f in dataclasses.fields(cls))

    def to_json(self) -> dict[str, object]:
        """The row as a JSON object, keys in field order."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        """The row that :meth:`to_json` wrote as ``data`` (other keys are ignored)."""
        return cls(**{name: data[name] for name in cls.columns()})


def write_csv(rows: Iterable[Row], columns: Sequence[str], path: Path) -> None:
    """``rows`` as CSV with ``columns`` as the header (fields not among them are left out)."""
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(row.to_json() for row in rows)


@dataclass(frozen=True, slots=True)
class GridRow(Row):
    """One run of the grid: its grid point (deployment, bandwidth condition, load as a factor
    of the nominal rate) and its summary's figures (:mod:`perllm.metrics.summary`)."""

    deployment: str
    bandwidth: str
    rate_factor: float
    rate_rps: float
    policy: str
    seed: int
    requests: int
    completed: int
    rejected: int
    throughput_rps: float
    goodput_rps: float
    deadline_satisfaction: float
    latency_p50_s: float
    latency_p95_s: float
    latency_p99_s: float
    energy_total_j: float
    energy_transmission_j: float
    energy_inference_j: float
    energy_idle_j: float
    energy_per_request_j: float
    weighted_energy_j: float

    @classmethod
    def of(cls, deployment: str, bandwidth: str, rate_factor: float, summary: Summary) -> GridRow:
        """The row of a simulated run (its summary has the run's seed and rate)."""
        if summary.seed is None or summary.rate_rps is None:
            raise ValueError("a grid row needs a simulated run's summary (seed and rate set)")
        energy = summary.energy_j
        return cls(
            deployment=deployment,
            bandwidth=bandwidth,
            rate_factor=rate_factor,
            rate_rps=summary.rate_rps,
            policy=summary.policy,
            seed=summary.seed,
            requests=summary.requests,
            completed=summary.completed,
            rejected=summary.rejected,
            throughput_rps=summary.throughput_rps,
            goodput_rps=summary.goodput_rps,
            deadline_satisfaction=summary.deadline_satisfaction,
            latency_p50_s=summary.latency_p50_s,
            latency_p95_s=summary.latency_p95_s,
            latency_p99_s=summary.latency_p99_s,
            energy_total_j=energy.total,
            energy_transmission_j=energy.transmission,
            energy_inference_j=energy.inference,
            energy_idle_j=energy.idle,
            energy_per_request_j=summary.energy_per_request_j,
            weighted_energy_j=summary.weighted_energy_j,
        )


@dataclass(frozen=True, slots=True)
class BoundRow(Row):
    """The bound of one grid cell's trace at nominal load for one seed (:mod:`perllm.bound`).

    Its JSON writes each frontier point as ``[met_fraction, met, energy_lower_bound_j,
    slope_j_per_met]``; its CSV row leaves the frontier out (:data:`CSV_COLUMNS`).
    """

    deployment: str
    bandwidth: str
    rate_rps: float
    seed: int
    requests: int
    met_upper_bound: int
    goodput_upper_bound_rps: float
    energy_lower_bound_j: float
    energy_floor_j: float
    frontier: tuple[FrontierPoint, ...]

    CSV_COLUMNS: ClassVar[tuple[str, ...]] = (
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

    @classmethod
    def of(
        cls, deployment: str, bandwidth: str, rate_rps: float, seed: int, result: BoundResult
    ) -> BoundRow:
        """The row of one cell's bound."""
        return cls(
            deployment=deployment,
            bandwidth=bandwidth,
            rate_rps=rate_rps,
            seed=seed,
            requests=result.requests,
            met_upper_bound=result.met_upper_bound,
            goodput_upper_bound_rps=result.goodput_upper_bound_rps,
            energy_lower_bound_j=result.energy_lower_bound_j,
            energy_floor_j=result.energy_floor_j,
            frontier=result.frontier,
        )

    def energy_lower_bound_at(self, met: float) -> float:
        """Least weighted energy of any run meeting at least ``met`` deadlines
        (:meth:`perllm.bound.result.BoundResult.energy_lower_bound_at`)."""
        return least_energy_at(met, self.energy_floor_j, self.frontier)

    def to_json(self) -> dict[str, object]:
        data = Row.to_json(self)
        data["frontier"] = [
            [p.met_fraction, p.met, p.energy_lower_bound_j, p.slope_j_per_met]
            for p in self.frontier
        ]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BoundRow:
        fields = {name: data[name] for name in cls.columns()}
        fields["frontier"] = tuple(FrontierPoint(*point) for point in data["frontier"])
        return cls(**fields)


@dataclass(frozen=True, slots=True)
class RegretCurve(Row):
    """Cumulative regret of ``policy`` against the oracle, at each decision's arrival time."""

    deployment: str
    policy: str
    time_s: tuple[float, ...]
    regret: tuple[float, ...]

    def to_json(self) -> dict[str, object]:
        return {
            "deployment": self.deployment,
            "policy": self.policy,
            "time_s": list(self.time_s),
            "regret": list(self.regret),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RegretCurve:
        return cls(data["deployment"], data["policy"], tuple(data["time_s"]), tuple(data["regret"]))


@dataclass(frozen=True, slots=True)
class RunRow(Row):
    """One run of the robustness benchmark: policy ``policy`` (a label: a registered policy or
    a variant) on cluster ``cluster`` of family ``family`` at ``load`` x its capacity, run seed
    ``seed``. ``met`` counts deadlines met; ``energy_per_met_j`` is the weighted energy per met
    request (``inf`` when none is met); ``bound_goodput_rps`` the cell's bound on goodput
    (``nan`` where there is none); ``wall_s`` the run's wall time."""

    family: str
    cluster: int
    servers: int
    cloud_servers: int
    capacity_rps: float
    load: float
    rate_rps: float
    seed: int
    policy: str
    requests: int
    completed: int
    rejected: int
    met: int
    goodput_rps: float
    deadline_satisfaction: float
    energy_j: float
    weighted_energy_j: float
    energy_per_met_j: float
    bound_goodput_rps: float
    wall_s: float


@dataclass(frozen=True, slots=True)
class GeneratedCluster(Row):
    """A generated cluster: its family, seed, scenario mapping (``perllm scenarios generate``'s
    YAML as data) and measured capacity."""

    family: str
    seed: int
    data: Mapping[str, Any]
    capacity: Capacity

    def to_json(self) -> dict[str, object]:
        return {
            "family": self.family,
            "seed": self.seed,
            "data": self.data,
            "capacity": dataclasses.asdict(self.capacity),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GeneratedCluster:
        family = data.get("family", "mixed")
        return cls(family, data["seed"], data["data"], Capacity(**data["capacity"]))
