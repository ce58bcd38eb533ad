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

from typing import Any

import numpy as np
import numpy.typing as npt

from perllm.domain import EnergyWeights
from perllm.metrics.recorder import Recorder

Array = npt.NDArray[Any]


def _arrays(rec: Recorder) -> dict[str, Array]:
    return {name: np.asarray(values) for name, values in rec.columns.items()}


def _latency(processing: Array) -> dict[str, float]:
    done = processing[~np.isnan(processing)] if processing.size else processing
    if done.size == 0:
        return {
            "latency_p50_s": float("nan"),
            "latency_p95_s": float("nan"),
            "latency_p99_s": float("nan"),
            "latency_mean_s": float("nan"),
        }
    p50, p95, p99 = np.percentile(done, [50, 95, 99])
    return {
        "latency_p50_s": float(p50),
        "latency_p95_s": float(p95),
        "latency_p99_s": float(p99),
        "latency_mean_s": float(done.mean()),
    }


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


def _group(cols: dict[str, Array], mask: Array) -> dict[str, Any]:
    n = int(mask.sum())
    completed = mask & ~cols["rejected"] & ~cols["failed"]
    met = int((mask & cols["met"]).sum())
    throughput, goodput = _rates(cols, mask)
    energy = float(
        (cols["transmission_j"][mask] + cols["inference_j"][mask] + cols["idle_j"][mask]).sum()
    )
    n_done = int(completed.sum())
    return {
        "requests": n,
        "completed": n_done,
        "throughput_rps": throughput,
        "goodput_rps": goodput,
        "deadline_satisfaction": met / n if n else 0.0,
        "energy_j": energy,
        "energy_per_request_j": energy / n_done if n_done else 0.0,
        **_latency(cols["processing_s"][completed]),
    }


def summarize(
    rec: Recorder, *, policy: str, scenario: str, weights: EnergyWeights | None = None
) -> dict[str, Any]:
    """The run's summary as a JSON-ready dict."""
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
    parts = {
        "transmission": float(cols["transmission_j"].sum()),
        "inference": float(cols["inference_j"].sum()),
        "idle": float(cols["idle_j"].sum()) + extra_idle,
    }
    total = sum(parts.values())
    weights = weights or EnergyWeights()
    ok = ~cols["rejected"] & ~cols["failed"]
    throughput, goodput = _rates(cols, np.ones(n, dtype=bool))
    start, end = _window(cols)
    summary: dict[str, Any] = {
        "policy": policy,
        "scenario": scenario,
        "requests": n,
        "completed": completed,
        "rejected": rejected,
        "failed": failed,
        "met": met,
        "window_s": end - start,
        "duration_s": horizon,
        "throughput_rps": throughput,
        "goodput_rps": goodput,
        "deadline_satisfaction": met / n if n else 0.0,
        **_latency(cols["processing_s"][ok]),
        "energy_j": {"total": total, **parts},
        "weighted_energy_j": weights.weighted(
            parts["transmission"], parts["inference"], parts["idle"]
        ),
        "energy_per_request_j": total / completed if completed else 0.0,
        "per_class": {
            str(name): _group(cols, cols["service_class"] == name)
            for name in sorted(set(rec.columns["service_class"]), key=str)
        },
        "per_server": {},
    }
    for spec in rec.servers:
        group = _group(cols, cols["server"] == spec.name)
        group["energy_j"] += rec.server_extra_idle_j.get(spec.name, 0.0)
        # Per request as for the whole run: the server's total energy (its unattributed idle
        # included) over its completed requests.
        if group["completed"]:
            group["energy_per_request_j"] = group["energy_j"] / group["completed"]
        group["tier"] = spec.tier
        summary["per_server"][spec.name] = group
    return summary


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
