"""``perllm profile`` as a function: measure a live server, fit, write YAML + PNG, print."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from perllm.cluster.profile import FORMAT_VERSION, write_profile
from perllm.domain import PowerSpec
from perllm.perf.energy import EnergyReading, RaplMeter, estimate_energy_j
from perllm.profiling.client import discover_model
from perllm.profiling.fit import FitResult, fit_perf
from perllm.profiling.measure import Measurements, SweepPlan, measure

__all__ = ["ProfileRun", "normalize_endpoint", "profile_endpoint"]


@dataclass(frozen=True, slots=True)
class ProfileRun:
    """Everything one profiling run produced."""

    endpoint: str
    model: str
    data: Measurements
    fit: FitResult
    energy: EnergyReading
    power: PowerSpec | None
    power_source: str


def normalize_endpoint(url: str) -> str:
    """The server root: no trailing ``/`` or ``/v1``."""
    return url.rstrip("/").removesuffix("/v1")


def profile_endpoint(
    endpoint: str,
    plan: SweepPlan,
    *,
    model: str | None = None,
    power: PowerSpec | None = None,
    power_source: str = "",
    advance: Callable[[int], None] | None = None,
) -> ProfileRun:
    """Measure ``endpoint`` with ``plan`` and fit the perf model.

    Energy over the sweep is measured by RAPL where readable, else estimated from ``power``
    (if given) over the busy intervals and the idle rest.
    """
    endpoint = normalize_endpoint(endpoint)
    if model is None:
        with httpx.Client(timeout=10.0) as client:
            model = discover_model(client, endpoint)
    meter = RaplMeter()
    meter.start()
    data = measure(endpoint, model, plan, advance)
    estimate = None
    if power is not None:
        busy_s = sum(seconds for _, seconds in data.busy)
        estimate = estimate_energy_j(power, list(data.busy), max(0.0, data.seconds - busy_s))
    energy = meter.stop(estimate)
    return ProfileRun(endpoint, model, data, fit_perf(data.prefill, data.decode), energy, power,
                      power_source)  # fmt: skip


def profile_document(run: ProfileRun, plan: SweepPlan) -> dict[str, object]:
    """The YAML mapping of a run (see :mod:`perllm.cluster.profile`)."""
    fit = run.fit
    power = None
    if run.power is not None:
        power = {**asdict(run.power), "source": run.power_source}
    return {
        "perllm_profile": FORMAT_VERSION,
        "endpoint": run.endpoint,
        "model": run.model,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "source": "measured by `perllm profile` (streaming /v1/completions)",
        "max_batch": fit.max_batch,
        "perf": asdict(fit.perf),
        "power": power,
        "energy": {
            "source": run.energy.source,
            "energy_j": run.energy.energy_j,
            "seconds": run.energy.seconds,
        },
        "fit": {
            "prefill_rms_rel": fit.prefill.rms_rel,
            "prefill_max_rel": fit.prefill.max_rel,
            "decode_rms_rel": fit.decode.rms_rel,
            "decode_max_rel": fit.decode.max_rel,
        },
        "plan": asdict(plan),
        "points": {
            "prefill": [asdict(p) for p in run.data.prefill],
            "decode": [asdict(d) for d in run.data.decode],
        },
    }


def save_profile(run: ProfileRun, plan: SweepPlan, out: Path) -> None:
    """Write the profile YAML to ``out``."""
    write_profile(out, profile_document(run, plan))
