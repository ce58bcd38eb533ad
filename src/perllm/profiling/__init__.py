"""Measure a live OpenAI-compatible LLM server and fit perllm's performance model to it.

``perllm profile --endpoint URL --out profile.yaml`` streams completions at several prompt
lengths and concurrencies, fits :class:`perllm.domain.ServerPerf` coefficients and writes a
profile (:mod:`perllm.cluster.profile`) that a scenario server group or a gateway backend can
name (``profile: path.yaml``).
"""

from __future__ import annotations

from perllm.profiling.fit import FitResult, fit_perf
from perllm.profiling.measure import Measurements, SweepPlan, measure
from perllm.profiling.run import ProfileRun, profile_endpoint

__all__ = [
    "FitResult",
    "Measurements",
    "ProfileRun",
    "SweepPlan",
    "fit_perf",
    "measure",
    "profile_endpoint",
]
