"""Model-based estimates a router can make from server specs and live load (no clairvoyance).

For request ``r`` on server ``s`` with link share ``z``, expected output ``o`` tokens:

- transfer: ``(bytes_up + bytes_down) * 8 / (bw_s * z / (z + W_s)) + rtt_s`` where ``W_s`` is the
  weight of the transfers already active on the link and ``bytes_down`` the size of a response
  of ``o`` tokens (:func:`perllm.physics.transfer_s`, :func:`perllm.physics.response_bytes`);
- slots: the requests the server runs at once, ``slots = min(max_batch, floor(kv_capacity /
  (prompt + o)))`` (a server admits a request only with room in its KV cache for all of it), and
  no more than ``max(running, 1)`` where the server keeps a queue (it runs what it can hold);
- batch seen by the request: ``b_seen = min(running + ahead + 1, slots)``, where ``ahead``
  counts the queued requests that will be served first (all of them in a first-come,
  first-served queue);
- service: ``prefill(prompt - cached) + (o - 1) step(b_seen, kv)`` with ``cached`` the prompt
  tokens the router expects the server to hold in its prefix cache (the prefix it sent there
  recently, :meth:`perllm.domain.ClusterView.prefix_tokens`), ``kv = tokens_in_flight +
  prompt`` and ``step(b, kv) = step_overhead + max(compute_per_seq * b, weights + kv *
  per_kv_token)``;
- queueing: ``max(0, running + ahead + 1 - slots) / slots * service`` (the work ahead that does
  not fit in the batch, drained ``slots`` at a time);
- processing time = transfer + queueing + service;
- inference energy = ``busy_w(b) * service / b`` (the request's share of the batch's power,
  what the world reports) with ``b = min(running + queued + 1, slots)`` the server's real
  batch with the request (every queued request counted), ``busy_w`` being
  :func:`perllm.physics.busy_power_w`;
  transmission energy = ``tx_power_w * wire`` (the link draws power while bytes move,
  whatever the number of transfers sharing it, so a transfer is charged its bytes' time at the
  link's bandwidth, not its stretched transfer time or the round trip);
- the *marginal* weighted energy the request adds to the cluster's, which is what an
  energy-minimising policy compares: ``w_tx * transmission + marginal inference``. Every
  server draws ``idle_w`` whether it works or not, and idle energy is counted over the whole
  run, so what placing a request changes is the *extra* power of a busy server,
  ``q(b) = w_infer busy_w(b) - w_idle idle_w`` (``q(0) = 0``), times how long it is busy.
  Joining a batch of ``b - 1`` others (``b`` the server's real batch, as for the inference
  energy: a request that must queue runs later in a full batch) for ``o - 1``
  decode steps costs (marginal inference)

  ``prefill(prompt - cached) q(b) + max(0, (o-1) [q(b) step(b, kv + prompt + (o-1)/2)
  - q(b-1) step(b-1, kv)])``

  the energy of advancing the others by the same ``o - 1`` steps with the request versus without
  it. On a memory-bound GPU a step costs about the same at any batch, so a busy server is cheap
  per token and an idle one pays for its whole step: the load-dependence the paper's energy
  model implies.

The times are the datasheet's (``step``, ``prefill``), or, where the caller passes each server's
``slowdown`` (:attr:`perllm.domain.LoadArrays.slowdown`: its decode step as its metrics showed
it, over the datasheet's), the datasheet's times that many times over, prefill included.

All of it is one compiled pass over the servers (numba): the estimate is on every decision's
path, and at 100 servers numpy's per-call overhead alone would be several times the budget. The
formulas themselves are those of :mod:`perllm.physics` (step, prefill, power, transfer,
energy), compiled into the pass, so that the world and the estimate share one text of each.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from numba.extending import register_jitable

from perllm import physics
from perllm.domain import (
    ClusterView,
    EnergyWeights,
    LoadArrays,
    RouterRequest,
    ServerSpec,
    response_bytes,
)
from perllm.policies.kernel_cache import kernel

Array = npt.NDArray[np.float64]
_ONE_SHARE = np.ones(1)
_UNIT_WEIGHTS = EnergyWeights()


@dataclass(frozen=True, slots=True)
class ServerTable:
    """Per-server constants as arrays, built once per cluster."""

    prefill_fixed_s: Array
    prefill_s_per_token: Array
    step_overhead_s: Array
    step_weights_s: Array
    step_s_per_kv_token: Array
    step_compute_s_per_seq: Array
    max_batch: Array
    idle_w: Array
    max_w: Array
    batch1_fraction: Array
    log2_slope: Array
    tx_power_w: Array
    rtt_s: Array
    kv_capacity_tokens: Array
    is_cloud: npt.NDArray[np.bool_]
    columns: npt.NDArray[np.void]  # one record per server, the fields of SERVER_FIELDS

    @classmethod
    def of(cls, view: ClusterView) -> ServerTable:
        servers: tuple[ServerSpec, ...] = view.servers

        def col(get: Any) -> Array:
            return np.array([float(get(s)) for s in servers])

        columns = {
            "prefill_fixed_s": col(lambda s: s.perf.prefill_fixed_s),
            "prefill_s_per_token": col(lambda s: s.perf.prefill_s_per_token),
            "step_overhead_s": col(lambda s: s.perf.step_overhead_s),
            "step_weights_s": col(lambda s: s.perf.step_weights_s),
            "step_s_per_kv_token": col(lambda s: s.perf.step_s_per_kv_token),
            "step_compute_s_per_seq": col(lambda s: s.perf.step_compute_s_per_seq),
            "max_batch": col(lambda s: s.max_batch),
            "idle_w": col(lambda s: s.power.idle_w),
            "max_w": col(lambda s: s.power.max_w),
            "batch1_fraction": col(lambda s: s.power.batch1_fraction),
            "log2_slope": col(lambda s: s.power.log2_slope),
            "tx_power_w": col(lambda s: view.links[s.link].tx_power_w),
            "rtt_s": col(lambda s: view.links[s.link].rtt_s),
            "kv_capacity_tokens": col(lambda s: s.kv_capacity_tokens),
        }
        records = np.zeros(len(servers), dtype=SERVER_FIELDS)
        for name in SERVER_FIELDS.names or ():
            records[name] = columns[name]
        return cls(
            **columns,
            is_cloud=np.array([s.tier == "cloud" for s in servers]),
            columns=records,
        )

    def prefill_of(self, server: int, tokens: float) -> float:
        """Seconds ``server`` takes to prefill ``tokens`` prompt tokens."""
        return physics.prefill_s(
            float(self.prefill_fixed_s[server]), float(self.prefill_s_per_token[server]), tokens
        )


# What the compiled kernels read of each server: one record per server, fields by name.
SERVER_FIELDS = np.dtype(
    [
        (name, np.float64)
        for name in (
            "prefill_fixed_s",
            "prefill_s_per_token",
            "step_overhead_s",
            "step_weights_s",
            "step_s_per_kv_token",
            "step_compute_s_per_seq",
            "max_batch",
            "idle_w",
            "max_w",
            "batch1_fraction",
            "log2_slope",
            "tx_power_w",
            "rtt_s",
            "kv_capacity_tokens",
        )
    ]
)


@dataclass(frozen=True, slots=True)
class Estimate:
    """Estimates for every server (arrays indexed like ``view.servers``); the transfer parts,
    ``processing_s`` and ``marginal_j`` have one row per link share asked for (shape
    ``(shares, servers)``).

    ``inference_j`` is the request's *attributed* share of the batch's energy (what the world
    reports back in its feedback); ``marginal_j`` is the *weighted* energy the cluster spends
    because of this request (see the module docstring), the quantity to minimise.
    ``batch`` and ``power_w`` are the server's real batch with the request and its power there;
    ``decode_step_s`` the time of one decode step in the batch the request sees
    (``step_overhead + max(compute_per_seq * b_seen, weights + kv * per_kv_token)``), how much
    longer ``processing_s`` would be per output token beyond the expected ones.
    """

    transfer_s: Array
    service_s: Array
    queue_s: Array
    processing_s: Array
    transmission_j: Array
    inference_j: Array
    marginal_j: Array
    batch: Array
    power_w: Array
    decode_step_s: Array

    @property
    def energy_j(self) -> Array:
        return self.transmission_j + self.inference_j


# The kernel calls the formulas of perllm.physics themselves: registered here, numba compiles
# them into the kernel (inlined); an edit to perllm.physics recompiles it (kernel_cache).
for _formula in (
    physics.busy_power_w,
    physics.batch_share_j,
    physics.prefill_s,
    physics.step_roofline_s,
    physics.step_s,
    physics.wire_s,
    physics.transfer_s,
    physics.transmission_j,
):
    register_jitable(inline="always")(_formula)


@kernel
def estimate_kernel(  # pragma: no cover - compiled; tested through estimate()
    table: npt.NDArray[np.void],
    running: Array,
    queued: Array,
    queued_ahead: Array,
    tokens_in_flight: Array,
    bandwidth_mbps: Array,
    link_active_weight: Array,
    prompt_tokens: float,
    cached_tokens: Array,
    total_bytes: float,
    expected_output_tokens: float,
    shares: Array,
    w_transmission: float,
    w_inference: float,
    w_idle: float,
    slowdown: Array,
) -> tuple[Array, Array, Array, Array, Array, Array, Array, Array, Array, Array]:
    """The module docstring's formulas, server by server (``table``: :data:`SERVER_FIELDS`
    records), in the order of :class:`Estimate`'s fields. Compiled code that fuses the estimate
    into its own pass (CS-UCB's decision) calls it directly; everyone else calls
    :func:`estimate`."""
    n = running.shape[0]
    k = shares.shape[0]
    transfer = np.empty((k, n))
    transmission = np.empty((k, n))
    processing = np.empty((k, n))
    marginal_j = np.empty((k, n))
    service = np.empty(n)
    queue = np.empty(n)
    inference = np.empty(n)
    batch = np.empty(n)
    power = np.empty(n)
    decode_step = np.empty(n)
    steps = max(expected_output_tokens - 1.0, 0.0)
    for s in range(n):
        c = table[s]
        max_batch = c.max_batch
        idle_w, max_w, batch1_fraction, log2_slope = (
            c.idle_w,
            c.max_w,
            c.batch1_fraction,
            c.log2_slope,
        )
        # Service and queueing, behind the queued requests that go first, on the slots the
        # server has: its batch limit, or fewer where its KV cache holds fewer such requests,
        # or those running now where it already keeps a queue.
        slots = min(
            max_batch, max(math.floor(c.kv_capacity_tokens / (prompt_tokens + steps + 1.0)), 1.0)
        )
        if queued[s] > 0.0:
            slots = min(slots, max(running[s], 1.0))
        ahead = running[s] + queued_ahead[s] + 1.0
        seen = min(ahead, slots)
        kv = tokens_in_flight[s]
        # The datasheet's times, as much slower as the server's steps show it to be.
        q = slowdown[s]
        compute, weights = q * c.step_compute_s_per_seq, q * c.step_weights_s
        per_kv, overhead = q * c.step_s_per_kv_token, q * c.step_overhead_s
        roofline = physics.step_roofline_s(compute, weights, per_kv, seen, kv + prompt_tokens)
        prefill = q * physics.prefill_s(
            c.prefill_fixed_s, c.prefill_s_per_token, prompt_tokens - cached_tokens[s]
        )
        service[s] = (prefill + steps * overhead) + steps * roofline
        decode_step[s] = overhead + roofline
        queue[s] = (ahead - seen) * service[s] / slots
        # Energy: the server's real batch with the request.
        b = min(running[s] + queued[s] + 1.0, slots)
        batch[s] = b
        power[s] = physics.busy_power_w(idle_w, max_w, batch1_fraction, log2_slope, b)
        inference[s] = physics.batch_share_j(power[s], service[s], b)
        grown = kv + prompt_tokens + steps / 2.0
        step_with = physics.step_s(overhead, compute, weights, per_kv, b, grown)
        step_without = physics.step_s(overhead, compute, weights, per_kv, b - 1.0, kv)
        idle_weighted = w_idle * idle_w
        extra_with = w_inference * power[s] - idle_weighted
        others = physics.busy_power_w(idle_w, max_w, batch1_fraction, log2_slope, max(b - 1.0, 1.0))
        extra_without = (w_inference * others - idle_weighted) * (1.0 if b > 1.0 else 0.0)
        decode = steps * (extra_with * step_with - extra_without * step_without)
        marginal = prefill * extra_with + max(decode, 0.0)
        # Transfer over the shared link, one row per share.
        rtt = c.rtt_s
        wire = physics.wire_s(total_bytes, bandwidth_mbps[s])
        for z in range(k):
            moving = physics.transfer_s(
                total_bytes, bandwidth_mbps[s], rtt, shares[z], link_active_weight[s]
            )
            transfer[z, s] = moving
            transmission[z, s] = physics.transmission_j(c.tx_power_w, wire)
            processing[z, s] = moving + queue[s] + service[s]
            marginal_j[z, s] = w_transmission * transmission[z, s] + marginal
    return (
        transfer,
        service,
        queue,
        processing,
        transmission,
        inference,
        marginal_j,
        batch,
        power,
        decode_step,
    )


def estimate(
    table: ServerTable,
    loads: LoadArrays,
    request: RouterRequest,
    expected_output_tokens: float,
    shares: Array = _ONE_SHARE,
    weights: EnergyWeights = _UNIT_WEIGHTS,
    queued_ahead: Array | None = None,
    cached_tokens: Array | None = None,
    slowdown: Array | None = None,
) -> Estimate:
    """Estimate the outcome of ``request`` on every server (see the module docstring).

    ``queued_ahead``, when given, is the number of queued requests that will be served before
    this one on each server (a queue ordered by priority); by default all of them.
    ``cached_tokens``, when given, is the prompt prefix each server is expected to hold in its
    cache (:meth:`perllm.domain.ClusterView.prefix_tokens`); by default none. One compiled pass
    over the servers: the estimate is on every decision's path.
    """
    parts = estimate_kernel(
        table.columns,
        loads.running,
        loads.queued,
        loads.queued if queued_ahead is None else queued_ahead,
        loads.tokens_in_flight,
        loads.bandwidth_mbps,
        loads.link_active_weight,
        float(request.prompt_tokens),
        np.zeros(len(loads.running)) if cached_tokens is None else cached_tokens,
        float(request.request_bytes + response_bytes(expected_output_tokens)),
        float(expected_output_tokens),
        shares,
        weights.transmission,
        weights.inference,
        weights.idle,
        np.ones(len(loads.running)) if slowdown is None else slowdown,
    )
    return Estimate(*parts)


def fits_memory(
    table: ServerTable, loads: LoadArrays, request: RouterRequest, expected_output_tokens: float
) -> npt.NDArray[np.bool_]:
    """Servers whose KV cache can hold what is in flight plus this request's prompt and
    expected output: the feasible baselines' memory constraint. A router's tokens in flight
    include the prompts of a server's queue, which hold no cache yet, so this is a guard more
    than a limit: for a policy that serves first come, first served and never deflects, it
    stops a pile-up on one server's queue, and the baselines are stronger with it on the tuning
    clusters. CS-UCB, whose queues go by deadline and which deflects what it cannot serve in
    time, asks only whether the request fits the cache at all."""
    need = loads.tokens_in_flight + request.prompt_tokens + expected_output_tokens
    fits: npt.NDArray[np.bool_] = need <= table.kv_capacity_tokens
    return fits


class OutputLengths:
    """Observed output tokens per service class (a router learns lengths): the running mean, and
    a log-normal fit (mean and spread of ``ln tokens``) for the tail, all from additive sums."""

    def __init__(self, prior_tokens: float = 128.0) -> None:
        self.prior_tokens = prior_tokens
        self._sum: dict[str, float] = {}
        self._count: dict[str, int] = {}
        self._log_count: dict[str, int] = {}
        self._log_sum: dict[str, float] = {}
        self._log_sq: dict[str, float] = {}

    def expected(self, service_class: str) -> float:
        count = self._count.get(service_class, 0)
        return self._sum[service_class] / count if count else self.prior_tokens

    def log_fit(self, service_class: str) -> tuple[float, float] | None:
        """The log-normal fit, ``(mean, sd)`` of ``ln tokens``; none until the class has
        ``_TAIL_AFTER`` observations (too few to trust a spread)."""
        count = self._log_count.get(service_class, 0)  # a state saved before the fit has none
        if count < _TAIL_AFTER:
            return None
        mean = self._log_sum.get(service_class, 0.0) / count
        spread = math.sqrt(max(self._log_sq.get(service_class, 0.0) / count - mean * mean, 0.0))
        return mean, spread

    def observe(self, service_class: str, tokens: int) -> None:
        self._sum[service_class] = self._sum.get(service_class, 0.0) + tokens
        self._count[service_class] = self._count.get(service_class, 0) + 1
        log = math.log(max(tokens, 1))
        self._log_count[service_class] = self._log_count.get(service_class, 0) + 1
        self._log_sum[service_class] = self._log_sum.get(service_class, 0.0) + log
        self._log_sq[service_class] = self._log_sq.get(service_class, 0.0) + log * log

    def state(self) -> dict[str, Any]:
        return {
            "sum": dict(self._sum),
            "count": dict(self._count),
            "log_count": dict(self._log_count),
            "log_sum": dict(self._log_sum),
            "log_sq": dict(self._log_sq),
        }

    def restore(self, state: dict[str, Any]) -> None:
        self._sum = {str(k): float(v) for k, v in state.get("sum", {}).items()}
        self._count = {str(k): int(v) for k, v in state.get("count", {}).items()}
        self._log_count = {str(k): int(v) for k, v in state.get("log_count", {}).items()}
        self._log_sum = {str(k): float(v) for k, v in state.get("log_sum", {}).items()}
        self._log_sq = {str(k): float(v) for k, v in state.get("log_sq", {}).items()}


# Observations of a class before its log-normal fit is trusted for the tail.
_TAIL_AFTER = 10
