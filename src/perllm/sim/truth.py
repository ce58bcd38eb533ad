"""Model mismatch in the simulator: the spec a server engine really runs on.

A scenario describes how each server departs from its spec (:mod:`perllm.cluster.truth`); the
world hands each server engine :func:`true_spec` of it, the link channels scale their
bandwidth by the link's factor, and a degrading server is re-timed at its ``degrade`` time. A
cluster without mismatch runs exactly as before: the engines get the very spec objects of the
view and no event is added.
"""

from __future__ import annotations

import dataclasses

from perllm.cluster.truth import ServerTruth
from perllm.domain import PowerSpec, ServerPerf, ServerSpec

__all__ = ["faster", "true_spec"]


def faster(perf: ServerPerf, factor: float) -> ServerPerf:
    """``perf`` run ``factor`` times as fast: every time coefficient divided by ``factor``."""
    return ServerPerf(
        prefill_fixed_s=perf.prefill_fixed_s / factor,
        prefill_s_per_token=perf.prefill_s_per_token / factor,
        step_overhead_s=perf.step_overhead_s / factor,
        step_weights_s=perf.step_weights_s / factor,
        step_s_per_kv_token=perf.step_s_per_kv_token / factor,
        step_compute_s_per_seq=perf.step_compute_s_per_seq / factor,
    )


def _scaled_power(power: PowerSpec, factor: float) -> PowerSpec:
    return dataclasses.replace(power, idle_w=power.idle_w * factor, max_w=power.max_w * factor)


def true_spec(spec: ServerSpec, truth: ServerTruth) -> ServerSpec:
    """The spec a server engine really runs on (``spec`` itself when there is no mismatch)."""
    if truth.speed_factor == 1.0 and truth.power_factor == 1.0:
        return spec
    perf = spec.perf if truth.speed_factor == 1.0 else faster(spec.perf, truth.speed_factor)
    power = spec.power
    if truth.power_factor != 1.0:
        power = _scaled_power(power, truth.power_factor)
    return dataclasses.replace(spec, perf=perf, power=power)
