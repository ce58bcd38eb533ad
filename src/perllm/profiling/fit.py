"""Fit :class:`perllm.domain.ServerPerf` coefficients to measured points.

- Prefill: ``ttft = prefill_fixed_s + n * prefill_s_per_token``, both coefficients ``>= 0``.
- Decode step: ``tpot = step_overhead_s + max(step_compute_s_per_seq * b,
  step_weights_s + kv * step_s_per_kv_token)`` for batch ``b`` holding ``kv`` cached tokens,
  fitted by :func:`scipy.optimize.least_squares` on relative residuals with all four
  coefficients ``>= 0``.

Both fits minimise a robust (soft-L1, scale 5%) loss of relative residuals: on a shared machine
a measurement is sometimes slowed by other processes, never sped up, and such outliers should
not drag the curve up. Overhead and weights time add up to the same thing while memory-bound,
  so a small penalty on the overhead makes the split unique (it goes to ``step_weights_s``
  unless compute-bound points need it). When every point has batch about 1 the compute term
  cannot be identified: it is then set to zero, and only the memory-bound branch is used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.optimize import least_squares, lsq_linear

from perllm.domain import ServerPerf
from perllm.errors import PerllmError
from perllm.profiling.measure import DecodePoint, PrefillPoint

_OVERHEAD_PENALTY = 1e-2
_ROBUST_SCALE = 0.05
_BATCHED = 1.3  # an effective batch above this means the server batches concurrent streams

__all__ = ["FitQuality", "FitResult", "fit_decode", "fit_perf", "fit_prefill"]

Array = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class FitQuality:
    """Root-mean-square and worst relative error of a fit over its points."""

    rms_rel: float
    max_rel: float


@dataclass(frozen=True, slots=True)
class FitResult:
    perf: ServerPerf
    prefill: FitQuality
    decode: FitQuality
    max_batch: int


def _quality(predicted: Array, measured: Array) -> FitQuality:
    rel = predicted / measured - 1.0
    return FitQuality(float(np.sqrt(np.mean(rel**2))), float(np.max(np.abs(rel))))


def fit_prefill(points: Sequence[PrefillPoint]) -> tuple[float, float, FitQuality]:
    """``(prefill_fixed_s, prefill_s_per_token, quality)`` from prefill points."""
    if len({p.prompt_tokens for p in points}) < 2:
        raise PerllmError("profile: need prefill points at two or more prompt lengths to fit")
    n = np.array([p.prompt_tokens for p in points], dtype=float)
    t = np.array([p.ttft_s for p in points], dtype=float)
    # Start from linear least squares on relative errors (rows weighted by 1/t).
    design = np.column_stack([np.ones_like(n), n]) / t[:, None]
    start = lsq_linear(design, np.ones_like(t), bounds=(0.0, np.inf)).x
    scale = np.array([float(np.median(t)), float(np.median(t / n))])

    def residuals(x: Array) -> Array:
        fixed, per_token = x * scale
        rel: Array = (fixed + per_token * n) / t - 1.0
        return rel

    solution = least_squares(
        residuals, np.maximum(start / scale, 1e-9), bounds=(0.0, np.inf),
        loss="soft_l1", f_scale=_ROBUST_SCALE,
    )  # fmt: skip
    fixed, per_token = (float(v) for v in solution.x * scale)
    return fixed, per_token, _quality(fixed + per_token * n, t)


def step_model(params: Array, batch: Array, kv: Array) -> Array:
    """The decode-step time of :class:`ServerPerf` for arrays of batches and KV tokens."""
    overhead, weights, per_kv, compute = params
    result: Array = overhead + np.maximum(compute * batch, weights + kv * per_kv)
    return result


def fit_decode(points: Sequence[DecodePoint]) -> tuple[Array, FitQuality, bool]:
    """``([overhead, weights, per_kv, compute], quality, batched)`` from decode points."""
    if len(points) < 2:
        raise PerllmError("profile: need two or more decode points to fit")
    b = np.array([p.batch for p in points], dtype=float)
    kv = np.array([p.kv_tokens for p in points], dtype=float)
    t = np.array([p.tpot_s for p in points], dtype=float)
    batched = bool(np.max(b) > _BATCHED)
    scale = float(np.median(t))

    def residuals(x: Array) -> Array:
        params = x * scale
        if not batched:
            params[3] = 0.0
        rel = step_model(params, b, kv) / t - 1.0
        return np.append(rel, _OVERHEAD_PENALTY * x[0])

    # Start memory-bound at batch 1 with a little compute, scaled to the median step.
    start = np.array([0.05, 0.9, 0.0, 0.3 if batched else 0.0])
    solution = least_squares(
        residuals, start, bounds=(0.0, np.inf), loss="soft_l1", f_scale=_ROBUST_SCALE
    )
    params = solution.x * scale
    if not batched:
        params[3] = 0.0
    return params, _quality(step_model(params, b, kv), t), batched


def fit_perf(prefill: Sequence[PrefillPoint], decode: Sequence[DecodePoint]) -> FitResult:
    """Fit all six coefficients; ``max_batch`` is 1 for a server that serialises requests."""
    fixed, per_token, prefill_quality = fit_prefill(prefill)
    params, decode_quality, batched = fit_decode(decode)
    overhead, weights, per_kv, compute = (float(v) for v in params)
    perf = ServerPerf(
        prefill_fixed_s=fixed,
        prefill_s_per_token=per_token,
        step_overhead_s=overhead,
        step_weights_s=weights,
        step_s_per_kv_token=per_kv,
        step_compute_s_per_seq=compute,
    )
    max_batch = max(p.concurrency for p in decode) if batched else 1
    return FitResult(perf, prefill_quality, decode_quality, max_batch)
