"""What one request costs a server at the least: time alone, a share of server time, energy.

Notation for a server (see :class:`~perllm.domain.ServerPerf` and :mod:`perllm.sim.server`):
prefill of the joiners ``J`` takes ``pf + ppt * sum_J p_j``; a decode step of ``b`` running
sequences holding ``K = sum_j kv_j`` cached tokens takes ``ovh + max(b c, w + pkv K)``, where
request ``j`` holds ``kv_j = p_j + 1 + u`` tokens ``u`` steps after its prefill (steps are
continuous in the simulator). A request of ``p`` prompt and ``o`` output tokens needs one prefill
and ``n = o - 1`` decode steps. At most ``B = max_batch`` requests are members at once, and
the members' reservations ``r_j = p_j + o_j`` add up to at most ``KV = kv_capacity_tokens``
(a request larger than ``KV`` only runs alone).

**Time alone** (:func:`alone_processing_s`): ``pf + ppt p`` plus the integral of the batch-1
step time, ``(ovh + max(c, a1)) n + pkv/2 * max(0, n - x)^2`` with ``a1 = w + (p + 1) pkv`` and
``x = max(0, (c - a1) / pkv)``. Every other schedule is at least as slow: more joiners make a
prefill longer, more members or tokens make every step longer, and queueing adds time.

**Share of server time** (:class:`TimeCharge`). For any ``beta in [0, pkv]`` and
``mu in [0, 1]``, charge each running member per step
``a + a_r min(r_j, KV) + beta kv_j`` with ``a_r = (1 - mu) T_min / KV`` and
``a = min_b (T0(b) - a_r KV) / b``, where
``T0(b) = ovh + max(b c, w) - beta max(0, (b c - w) / pkv)`` is the least step time less the
``beta K`` already charged (the worst ``K`` is where the two roofline arms cross) and
``T_min = min_b T0(b)``. Then for every admissible batch the charges add up to at most the
step time, since ``b a + a_r R <= T0(b)`` for ``R = sum min(r_j, KV) <= KV``. A prefill charges
each joiner ``pf (mu / B + (1 - mu) min(r_j, KV) / KV) + ppt p_j`` (at most ``B`` joiners, whose
reservations fit in ``KV``). Summed over a request's steps (continuous ``u`` from 0 to ``n``):
``W = prefill + n (a + a_r min(r, KV)) + beta (n (p + 1) + n^2 / 2)``.
So the server time inside any interval is at least the sum of the charges of the work done
inside it. The ``(beta, mu)`` pair is chosen per server from a small grid, to maximise the
total charge of the requests that may run there (any choice is valid).

**Energy** (:class:`EnergyCharge`). A server's weighted energy over a run of horizon ``H`` is
``w_idle idle_w (H - busy) + w_infer * integral over busy time of busy_w(b)``, which is at least
``rho0 H + integral over busy time of g(b)`` with ``rho0 = min(w_idle idle_w,
w_infer busy_w(1))`` and ``g(b) = w_infer busy_w(b) - rho0 >= 0`` (increasing in ``b``).
Per decode step ``g(b) step >= sum_j (a_E + beta_E kv_j)`` with ``beta_E = g(1) pkv`` and
``a_E = min_b (g(b) (ovh + max(b c, w)) - beta_E max(0, (b c - w) / pkv)) / b``; a prefill
costs at least ``g(1) (pf / B + ppt p_j)`` per joiner.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from perllm.domain import EnergyWeights, ServerSpec

FloatArray = npt.NDArray[np.float64]

_BETA_GRID = (0.0, 0.5, 1.0)
_MU_GRID = (1.0, 0.5, 0.0)


def alone_processing_s(spec: ServerSpec, prompt: FloatArray, output: FloatArray) -> FloatArray:
    """Least time from reaching the server to the last token, for each request (vectorised)."""
    perf = spec.perf
    n = np.maximum(output - 1.0, 0.0)
    c, pkv, ovh = perf.step_compute_s_per_seq, perf.step_s_per_kv_token, perf.step_overhead_s
    a1 = perf.step_weights_s + (prompt + 1.0) * pkv
    decode = (ovh + np.maximum(c, a1)) * n
    if pkv > 0.0:
        cross = np.maximum(0.0, (c - a1) / pkv)
        decode = decode + pkv / 2.0 * np.maximum(0.0, n - cross) ** 2
    return perf.prefill_fixed_s + perf.prefill_s_per_token * prompt + decode


def _crossing(spec: ServerSpec, b: FloatArray) -> FloatArray:
    """Cached tokens at which the two roofline arms cross, for batch sizes ``b`` (0 if none)."""
    perf = spec.perf
    gap = b * perf.step_compute_s_per_seq - perf.step_weights_s
    if perf.step_s_per_kv_token <= 0.0:
        return np.zeros_like(b)
    return np.maximum(0.0, gap / perf.step_s_per_kv_token)


def _least_step_s(spec: ServerSpec, b: FloatArray) -> FloatArray:
    perf = spec.perf
    return perf.step_overhead_s + np.maximum(b * perf.step_compute_s_per_seq, perf.step_weights_s)


@dataclass(frozen=True, slots=True)
class TimeCharge:
    """Per-member charge of server time: ``a + a_r min(r, KV) + beta kv`` per decode step."""

    a: float
    a_r: float
    beta: float
    mu: float

    @classmethod
    def make(cls, spec: ServerSpec, beta: float, mu: float) -> TimeCharge:
        b = np.arange(1, spec.max_batch + 1, dtype=np.float64)
        t0 = _least_step_s(spec, b) - beta * _crossing(spec, b)
        kv = max(spec.kv_capacity_tokens, 1)
        a_r = (1.0 - mu) * float(t0.min()) / kv
        a = float(((t0 - a_r * kv) / b).min())
        return cls(a, a_r, beta, mu)

    def work_s(self, spec: ServerSpec, prompt: FloatArray, output: FloatArray) -> FloatArray:
        """Each request's total charge of server time."""
        perf = spec.perf
        kv = max(spec.kv_capacity_tokens, 1)
        share = np.minimum(prompt + output, kv)
        n = np.maximum(output - 1.0, 0.0)
        prefill = (
            perf.prefill_fixed_s * (self.mu / spec.max_batch + (1.0 - self.mu) * share / kv)
            + perf.prefill_s_per_token * prompt
        )
        decode = n * (self.a + self.a_r * share) + self.beta * (n * (prompt + 1.0) + n * n / 2)
        return np.asarray(prefill + decode, dtype=np.float64)


def best_time_charge(spec: ServerSpec, prompt: FloatArray, output: FloatArray) -> TimeCharge:
    """The grid's ``(beta, mu)`` whose charges of these requests add up to the most."""
    pkv = spec.perf.step_s_per_kv_token
    candidates = [
        TimeCharge.make(spec, fraction * pkv, mu)
        for fraction, mu in itertools.product(_BETA_GRID, _MU_GRID)
    ]
    totals = [float(c.work_s(spec, prompt, output).sum()) for c in candidates]
    return candidates[int(np.argmax(totals))]


@dataclass(frozen=True, slots=True)
class EnergyCharge:
    """Weighted energy a server spends at the least: ``base_w`` for the whole horizon, plus a
    per-request charge for its prefill and decode."""

    base_w: float
    prefill_w: float
    a_j: float
    beta_j: float

    @classmethod
    def make(cls, spec: ServerSpec, weights: EnergyWeights) -> EnergyCharge:
        power = spec.power
        b = np.arange(1, spec.max_batch + 1, dtype=np.float64)
        busy = np.array([power.busy_w(int(k)) for k in b])
        base = min(weights.idle * power.idle_w, weights.inference * float(busy[0]))
        g = weights.inference * busy - base
        beta = float(g[0]) * spec.perf.step_s_per_kv_token
        a = float(((g * _least_step_s(spec, b) - beta * _crossing(spec, b)) / b).min())
        return cls(base, float(g[0]), max(a, 0.0), beta)

    def request_j(self, spec: ServerSpec, prompt: FloatArray, output: FloatArray) -> FloatArray:
        """Each request's least weighted inference energy above the base (prefill + decode)."""
        perf = spec.perf
        n = np.maximum(output - 1.0, 0.0)
        prefill = self.prefill_w * (
            perf.prefill_fixed_s / spec.max_batch + perf.prefill_s_per_token * prompt
        )
        decode = n * self.a_j + self.beta_j * (n * (prompt + 1.0) + n * n / 2)
        return np.asarray(prefill + decode, dtype=np.float64)
