"""Measure a live OpenAI-compatible LLM server and fit perllm's performance model to it.

``perllm profile --endpoint URL --out profile.yaml`` streams completions at several prompt
lengths and concurrencies, fits :class:`perllm.domain.ServerPerf` coefficients and writes a
profile that a scenario server group (``profile: path.yaml``) or the gateway can load with
:func:`load_profile`.
"""

from __future__ import annotations

from perllm.profiling.fit import FitResult, fit_perf
from perllm.profiling.measure import Measurements, SweepPlan, measure
from perllm.profiling.profile import ProfileFile, load_profile, read_profile
from perllm.profiling.run import ProfileRun, profile_endpoint

__all__ = [
    "FitResult",
    "Measurements",
    "ProfileFile",
    "ProfileRun",
    "SweepPlan",
    "fit_perf",
    "load_profile",
    "measure",
    "profile_endpoint",
    "read_profile",
]
