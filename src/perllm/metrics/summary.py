"""Summaries of a recorder's records: throughput, goodput, satisfaction, latency, energy.

Definitions. The *window* is the arrival window, from the first to the last arrival: rates are
measured over it, as a steady-state rate of service (a drain after the last arrival, or a few
very late stragglers, do not dilute them). The *horizon* runs from time 0 to the last
completion: energy is counted over it.

- throughput_rps = completions inside the window / window;
- goodput_rps = deadline-met completions inside the window / window;
- deadline_satisfaction = met / all requests (rejected and failed ones count as missed);
- latency percentiles over completed requests' processing times;
- energy totals include each server's idle energy not attributed to any request (the idle
  time after its last busy period, or the whole horizon for a server never used);
- energy_per_request_j = total energy / completed requests.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from perllm.domain import EnergyWeights
from perllm.metrics.recorder import Recorder

Array = npt.NDArray[Any]

__all__ = ["EnergyTotals", "GroupSummary", "Summary", "regret_curve", "summarize"]


@dataclass(frozen=True, slots=True)
class EnergyTotals:
    """A run's energy by part, in joules (``total`` is their sum)."""

    total: float
    transmission: float
    inference: float
    idle: float

    def to_json(self) -> dict[str, float]:
        return {
            "total": self.total,
            "transmission": self.transmission,
            "inference": self.inference,
            "idle": self.idle,
        }


@dataclass(frozen=True, slots=True)
class GroupSummary:
    """The summary of one group of requests: one service class, or one server (``tier`` set)."""

    requests: int
    completed: int
    throughput_rps: float
    goodput_rps: float
    deadline_satisfaction: float
    energy_j: float
    energy_per_request_j: float
    latency_p50_s: float
    latency_p95_s: float
    latency_p99_s: float
    latency_mean_s: float
    tier: str | None = None

    def to_json(self) -> dict[str, object]:
        """The group as JSON-ready data, in field order (``tier`` only when set)."""
        data: dict[str, object] = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if self.tier is None:
            del data["tier"]
        return data


_RUN_KEYS = ("seed", "rate_rps", "regret_vs_oracle")  # set by the runner and the CLI, if known


@dataclass(frozen=True, slots=True)
class Summary:
    """A run's summary (see the module docstring): written as ``summary.json``, printed by
    ``perllm simulate --json``, flattened into CSV rows (:meth:`row`) and served in the
    gateway's ``/stats``.

    ``seed`` and ``rate_rps`` are those of a simulated run, ``regret_vs_oracle`` the final
    cumulative regret when the oracle was tracked; ``None`` (and left out of the JSON) where
    they do not apply.
    """

    policy: str
    scenario: str
    requests: int
    completed: int
    rejected: int
    failed: int
    met: int
    window_s: float
    duration_s: float
    throughput_rps: float
    goodput_rps: float
    deadline_satisfaction: float
    latency_p50_s: float
    latency_p95_s: float
    latency_p99_s: float
    latency_mean_s: float
    energy_j: EnergyTotals
    weighted_energy_j: float
    energy_per_request_j: float
    per_class: Mapping[str, GroupSummary]
    per_server: Mapping[str, GroupSummary]
    seed: int | None = None
    rate_rps: float | None = None
    regret_vs_oracle: float | None = None

    def to_json(self) -> dict[str, object]:
        """The summary as JSON-ready data, keys in field order (``None`` run keys left out)."""
        data: dict[str, object] = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["energy_j"] = self.energy_j.to_json()
        data["per_class"] = {name: g.to_json() for name, g in self.per_class.items()}
        data["per_server"] = {name: g.to_json() for name, g in self.per_server.items()}
        for key in _RUN_KEYS:
            if data[key] is None:
                del data[key]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Summary:
        """The summary that :meth:`to_json` wrote as ``data``."""
        fields = {**data}
        fields["energy_j"] = EnergyTotals(**data["energy_j"])
        fields["per_class"] = {k: GroupSummary(**g) for k, g in data["per_class"].items()}
        fields["per_server"] = {k: GroupSummary(**g) for k, g in data["per_server"].items()}
        return cls(**fields)

    def row(self) -> dict[str, object]:
        """The scalar fields as one flat CSV row: those of :meth:`to_json` without the groups,
        the energy parts as ``energy_<part>_j``."""
        row: dict[str, object] = {}
        for key, value in self.to_json().items():
            if key == "energy_j":
                parts = self.energy_j.to_json().items()
                row.update({f"energy_{part}_j": joules for part, joules in parts})
            elif key not in ("per_class", "per_server"):
                row[key] = value
        return row


def _arrays(rec: Recorder) -> dict[str, Array]:
    return {name: np.asarray(values) for name, values in rec.columns.items()}


def _latency(processing: Array) -> tuple[float, float, float, float]:
    """(p50, p95, p99, mean) of the processing times that are known (``nan`` if none)."""
    done = processing[~np.isnan(processing)] if processing.size else processing
    if done.size == 0:
        nan = float("nan")
        return nan, nan, nan, nan
    p50, p95, p99 = np.percentile(done, [50, 95, 99])
    return float(p50), float(p95), float(p99), float(done.mean())


def _window(cols: dict[str, Array]) -> tuple[float, float]:
    arrivals = cols["arrival_s"]
    if arrivals.size < 2:
        return 0.0, 0.0
    return float(arrivals.min()), float(arrivals.max())


def _rates(cols: dict[str, Array], mask: Array) -> tuple[float, float]:
    """(throughput, goodput) of the masked requests over the arrival window."""
    start, end = _window(cols)
    if end <= start:
        return 0.0, 0.0
    inside = mask & (cols["finish_s"] <= end) & ~cols["rejected"] & ~cols["failed"]
    met = inside & cols["met"]
    return float(inside.sum()) / (end - start), float(met.sum()) / (end - start)


def _group(
    cols: dict[str, Array], mask: Array, extra_j: float = 0.0, tier: str | None = None
) -> GroupSummary:
    """The masked requests' summary; for a server's (``tier`` given), ``extra_j`` (its idle
    energy not attributed to any request) is added to their energy."""
    n = int(mask.sum())
    completed = mask & ~cols["rejected"] & ~cols["failed"]
    met = int((mask & cols["met"]).sum())
    throughput, goodput = _rates(cols, mask)
    energy = float(
        (cols["transmission_j"][mask] + cols["inference_j"][mask] + cols["idle_j"][mask]).sum()
    )
    if tier is not None:
        energy += extra_j
    n_done = int(completed.sum())
    p50, p95, p99, mean = _latency(cols["processing_s"][completed])
    return GroupSummary(
        requests=n,
        completed=n_done,
        throughput_rps=throughput,
        goodput_rps=goodput,
        deadline_satisfaction=met / n if n else 0.0,
        energy_j=energy,
        # Per request as for the whole run: a server's total energy (its unattributed idle
        # included) over its completed requests.
        energy_per_request_j=energy / n_done if n_done else 0.0,
        latency_p50_s=p50,
        latency_p95_s=p95,
        latency_p99_s=p99,
        latency_mean_s=mean,
        tier=tier,
    )


def summarize(
    rec: Recorder, *, policy: str, scenario: str, weights: EnergyWeights | None = None
) -> Summary:
    """The run's summary."""
    cols = _arrays(rec)
    horizon = rec.horizon_s
    n = len(rec)
    if n == 0:
        cols = {
            k: np.zeros(0, dtype=bool if k in ("met", "rejected", "failed") else float)
            for k in cols
        }
    rejected = int(cols["rejected"].sum())
    failed = int(cols["failed"].sum())
    completed = n - rejected - failed
    met = int(cols["met"].sum())
    extra_idle = sum(rec.server_extra_idle_j.values())
    transmission = float(cols["transmission_j"].sum())
    inference = float(cols["inference_j"].sum())
    idle = float(cols["idle_j"].sum()) + extra_idle
    total = sum((transmission, inference, idle))
    weights = weights or EnergyWeights()
    ok = ~cols["rejected"] & ~cols["failed"]
    throughput, goodput = _rates(cols, np.ones(n, dtype=bool))
    start, end = _window(cols)
    p50, p95, p99, mean = _latency(cols["processing_s"][ok])
    classes = sorted(set(rec.columns["service_class"]), key=str)
    return Summary(
        policy=policy,
        scenario=scenario,
        requests=n,
        completed=completed,
        rejected=rejected,
        failed=failed,
        met=met,
        window_s=end - start,
        duration_s=horizon,
        throughput_rps=throughput,
        goodput_rps=goodput,
        deadline_satisfaction=met / n if n else 0.0,
        latency_p50_s=p50,
        latency_p95_s=p95,
        latency_p99_s=p99,
        latency_mean_s=mean,
        energy_j=EnergyTotals(total, transmission, inference, idle),
        weighted_energy_j=weights.weighted(transmission, inference, idle),
        energy_per_request_j=total / completed if completed else 0.0,
        per_class={str(name): _group(cols, cols["service_class"] == name) for name in classes},
        per_server={
            spec.name: _group(
                cols,
                cols["server"] == spec.name,
                rec.server_extra_idle_j.get(spec.name, 0.0),
                spec.tier,
            )
            for spec in rec.servers
        },
    )


def regret_curve(
    rec: Recorder, weights: EnergyWeights, penalty: float = 1.0
) -> tuple[Array, Array]:
    """Cumulative regret against the oracle, in arrival order.

    Per request ``i`` with an oracle prediction, the cost is ``E_w / scale + penalty * missed``,
    where ``E_w`` is the weighted energy and ``scale`` the oracle's mean weighted energy;
    regret is the policy's cost minus the oracle's. Returns (arrival times, cumulative regret).
    """
    cols = _arrays(rec)
    has = ~np.isnan(cols["oracle_weighted_j"].astype(float))
    if not has.any():
        return np.zeros(0), np.zeros(0)
    order = np.argsort(cols["arrival_s"][has], kind="stable")
    realised = (
        weights.transmission * cols["transmission_j"]
        + weights.inference * cols["inference_j"]
        + weights.idle * cols["idle_j"]
    )[has][order]
    oracle = cols["oracle_weighted_j"][has].astype(float)[order]
    scale = float(oracle.mean()) or 1.0
    missed = ~cols["met"][has][order]
    oracle_missed = ~cols["oracle_met"][has].astype(bool)[order]
    step = (realised - oracle) / scale + penalty * (missed.astype(float) - oracle_missed)
    return cols["arrival_s"][has][order], np.cumsum(step)
