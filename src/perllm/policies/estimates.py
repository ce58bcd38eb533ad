"""Model-based estimates a router can make from server specs and live load (no clairvoyance).

For request ``r`` on server ``s`` with link share ``z``, expected output ``o`` tokens:

- transfer: ``(bytes_up + bytes_down) * 8 / (bw_s * z / (z + W_s)) + rtt_s`` where ``W_s`` is the
  weight of the transfers already active on the link and ``bytes_down`` the size of a response
  of ``o`` tokens (:func:`perllm.domain.response_bytes`);
- batch seen by the request: ``b = min(running + queued + 1, max_batch)``;
- service: ``prefill(prompt) + o * step(b, kv)`` with ``kv = tokens_in_flight + prompt``;
- queueing: ``max(0, running + queued + 1 - max_batch) / max_batch * service`` (the work ahead
  that does not fit in the batch, drained ``max_batch`` at a time), where ``queued`` counts the
  requests that will be served first (all of them in a first-come, first-served queue);
- processing time = transfer + queueing + service;
- inference energy = ``busy_w(b) * service / b`` (the request's share of the batch's power,
  what the world reports), and the *marginal* weighted energy the request adds to the
  cluster's (:func:`marginal_inference_j`), which is what an energy-minimising policy compares;
  transmission energy = ``tx_power_w * (transfer - rtt)`` (the link draws power while bytes
  move, not while a request waits for the round trip).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from perllm.domain import (
    ClusterView,
    EnergyWeights,
    LoadArrays,
    RouterRequest,
    ServerSpec,
    response_bytes,
)

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

    @classmethod
    def of(cls, view: ClusterView) -> ServerTable:
        servers: tuple[ServerSpec, ...] = view.servers

        def col(get: Any) -> Array:
            return np.array([float(get(s)) for s in servers])

        return cls(
            prefill_fixed_s=col(lambda s: s.perf.prefill_fixed_s),
            prefill_s_per_token=col(lambda s: s.perf.prefill_s_per_token),
            step_overhead_s=col(lambda s: s.perf.step_overhead_s),
            step_weights_s=col(lambda s: s.perf.step_weights_s),
            step_s_per_kv_token=col(lambda s: s.perf.step_s_per_kv_token),
            step_compute_s_per_seq=col(lambda s: s.perf.step_compute_s_per_seq),
            max_batch=col(lambda s: s.max_batch),
            idle_w=col(lambda s: s.power.idle_w),
            max_w=col(lambda s: s.power.max_w),
            batch1_fraction=col(lambda s: s.power.batch1_fraction),
            log2_slope=col(lambda s: s.power.log2_slope),
            tx_power_w=col(lambda s: view.links[s.link].tx_power_w),
            rtt_s=col(lambda s: view.links[s.link].rtt_s),
            kv_capacity_tokens=col(lambda s: s.kv_capacity_tokens),
            is_cloud=np.array([s.tier == "cloud" for s in servers]),
        )


@dataclass(frozen=True, slots=True)
class Estimate:
    """Estimates for every server (arrays indexed like ``view.servers``); the transfer parts
    and ``marginal_j`` have one row per link share asked for (shape ``(shares, servers)``).

    ``inference_j`` is the request's *attributed* share of the batch's energy (what the world
    reports back in its feedback); ``marginal_j`` is the *weighted* energy the cluster spends
    because of this request (see :func:`marginal_inference_j`), the quantity to minimise.
    """

    transfer_s: Array
    service_s: Array
    queue_s: Array
    transmission_j: Array
    inference_j: Array
    marginal_j: Array

    @property
    def processing_s(self) -> Array:
        return self.transfer_s + self.queue_s + self.service_s

    @property
    def energy_j(self) -> Array:
        return self.transmission_j + self.inference_j


def _service(
    table: ServerTable,
    loads: LoadArrays,
    request: RouterRequest,
    expected_output_tokens: float,
    queued_ahead: Array | None = None,
) -> tuple[Array, Array, Array]:
    """(batch seen, service time, queueing time) on every server; ``queued_ahead`` is how many
    queued requests will be served before this one (all of them unless the caller knows the
    queue's order)."""
    queued = loads.queued if queued_ahead is None else queued_ahead
    ahead = loads.running + queued + 1.0
    batch = np.minimum(ahead, table.max_batch)
    memory = table.step_weights_s + (loads.tokens_in_flight + request.prompt_tokens) * (
        table.step_s_per_kv_token
    )
    step = np.maximum(table.step_compute_s_per_seq * batch, memory)
    steps = max(expected_output_tokens - 1.0, 0.0)
    service = (_prefill_s(table, request) + steps * table.step_overhead_s) + steps * step
    queue = (ahead - batch) * service / table.max_batch
    return batch, service, queue


def _prefill_s(table: ServerTable, request: RouterRequest) -> Array:
    prefill: Array = table.prefill_fixed_s + request.prompt_tokens * table.prefill_s_per_token
    return prefill


def busy_power_w(table: ServerTable, batch: Array) -> Array:
    """Power of every server running ``batch`` requests (:meth:`PowerSpec.busy_w`, vectorised;
    ``batch >= 1``)."""
    fraction = np.minimum(1.0, table.batch1_fraction + table.log2_slope * np.log2(batch))
    power: Array = table.idle_w + (table.max_w - table.idle_w) * fraction
    return power


def marginal_inference_j(
    table: ServerTable,
    loads: LoadArrays,
    request: RouterRequest,
    expected_output_tokens: float,
    weights: EnergyWeights,
    power_w: Array | None = None,
) -> Array:
    """Weighted inference energy the cluster spends *because of* the request, on every server
    (``power_w``: :func:`busy_power_w` at the batch below, if the caller has it).

    Every server draws ``idle_w`` whether it works or not, and idle energy is counted over the
    whole run, so what placing a request changes is the *extra* power of a busy server,
    ``q(b) = w_infer busy_w(b) - w_idle idle_w`` (``q(0) = 0``), times how long it is busy.
    Joining a batch of ``b - 1`` others (``b = min(running + queued + 1, max_batch)``: a request
    that must queue runs later in a full batch) for ``o`` decode steps costs

    ``prefill(prompt) q(b) + o [q(b) step(b, kv + prompt + o/2) - q(b-1) step(b-1, kv)]``

    the energy of advancing the others by the same ``o`` steps with the request versus without
    it. On a memory-bound GPU a step costs about the same at any batch, so a busy server is
    cheap per token and an idle one pays for its whole step: the load-dependence the paper's
    energy model implies.
    """
    ahead = loads.running + loads.queued + 1.0
    batch = np.minimum(ahead, table.max_batch)
    kv = loads.tokens_in_flight
    steps = max(expected_output_tokens - 1.0, 0.0)
    grown = kv + request.prompt_tokens + steps / 2.0
    step_with = table.step_overhead_s + np.maximum(
        table.step_compute_s_per_seq * batch,
        table.step_weights_s + grown * table.step_s_per_kv_token,
    )
    step_without = table.step_overhead_s + np.maximum(
        table.step_compute_s_per_seq * (batch - 1.0),
        table.step_weights_s + kv * table.step_s_per_kv_token,
    )
    idle_w = weights.idle * table.idle_w
    if power_w is None:
        power_w = busy_power_w(table, batch)
    extra_with = weights.inference * power_w - idle_w
    others = busy_power_w(table, np.maximum(batch - 1.0, 1.0))
    extra_without = (weights.inference * others - idle_w) * (batch > 1.0)
    decode = steps * (extra_with * step_with - extra_without * step_without)
    marginal: Array = _prefill_s(table, request) * extra_with + np.maximum(decode, 0.0)
    return marginal


def _transfer(
    table: ServerTable,
    loads: LoadArrays,
    request: RouterRequest,
    expected_output_tokens: float,
    shares: Array,
) -> Array:
    """Transfer time (shape ``(shares, servers)``), the link shared by weight.

    With ``W`` the active weight, share ``z`` gets ``bw * z / (z + W)``, so the time is
    ``bits / bw * (1 + W / z) + rtt``: a per-server base plus a per-server term over ``z``.
    The response's size is the one its expected length gives (the true one is unknown).
    """
    total_bytes = request.request_bytes + response_bytes(expected_output_tokens)
    seconds = total_bytes * 8e-6 / loads.bandwidth_mbps
    transfer: Array = (seconds + table.rtt_s) + np.outer(
        1.0 / shares, seconds * loads.link_active_weight
    )
    return transfer


def processing_times(
    table: ServerTable,
    loads: LoadArrays,
    request: RouterRequest,
    expected_output_tokens: float,
    shares: Array = _ONE_SHARE,
) -> Array:
    """Estimated processing time, shape ``(shares, servers)`` (times only: the fast path)."""
    _, service, queue = _service(table, loads, request, expected_output_tokens)
    times: Array = _transfer(table, loads, request, expected_output_tokens, shares) + (
        service + queue
    )
    return times


def estimate(
    table: ServerTable,
    loads: LoadArrays,
    request: RouterRequest,
    expected_output_tokens: float,
    shares: Array = _ONE_SHARE,
    weights: EnergyWeights = _UNIT_WEIGHTS,
    queued_ahead: Array | None = None,
) -> Estimate:
    """Estimate the outcome of ``request`` on every server (see the module docstring).

    ``queued_ahead``, when given, is the number of queued requests that will be served before
    this one on each server (a queue ordered by priority); by default all of them.
    """
    batch, service, queue = _service(table, loads, request, expected_output_tokens, queued_ahead)
    if queued_ahead is not None:  # the energy is that of the server's real batch
        batch = np.minimum(loads.running + loads.queued + 1.0, table.max_batch)
    transfer = _transfer(table, loads, request, expected_output_tokens, shares)
    transmission = table.tx_power_w * (transfer - table.rtt_s)
    power_w = busy_power_w(table, batch)
    marginal = marginal_inference_j(table, loads, request, expected_output_tokens, weights, power_w)
    return Estimate(
        transfer_s=transfer,
        service_s=service,
        queue_s=queue,
        transmission_j=transmission,
        inference_j=power_w * service / batch,
        marginal_j=weights.transmission * transmission + marginal,
    )


def fits_memory(
    table: ServerTable, loads: LoadArrays, request: RouterRequest, expected_output_tokens: float
) -> npt.NDArray[np.bool_]:
    """Servers whose KV cache can hold what is in flight plus this request's prompt and
    expected output (the memory constraint)."""
    need = loads.tokens_in_flight + request.prompt_tokens + expected_output_tokens
    fits: npt.NDArray[np.bool_] = need <= table.kv_capacity_tokens
    return fits


class OutputLengths:
    """Running mean of observed output tokens per service class (a router learns lengths)."""

    def __init__(self, prior_tokens: float = 128.0) -> None:
        self.prior_tokens = prior_tokens
        self._sum: dict[str, float] = {}
        self._count: dict[str, int] = {}

    def expected(self, service_class: str) -> float:
        count = self._count.get(service_class, 0)
        return self._sum[service_class] / count if count else self.prior_tokens

    def observe(self, service_class: str, tokens: int) -> None:
        self._sum[service_class] = self._sum.get(service_class, 0.0) + tokens
        self._count[service_class] = self._count.get(service_class, 0) + 1

    def state(self) -> dict[str, Any]:
        return {"sum": dict(self._sum), "count": dict(self._count)}

    def restore(self, state: dict[str, Any]) -> None:
        self._sum = {str(k): float(v) for k, v in state.get("sum", {}).items()}
        self._count = {str(k): int(v) for k, v in state.get("count", {}).items()}
