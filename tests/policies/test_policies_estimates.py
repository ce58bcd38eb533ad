"""The compiled estimate against the formulas of its docstring, written out plainly here."""

from __future__ import annotations

import math

import numpy as np
import pytest

from perllm.domain import EnergyWeights, RouterRequest, response_bytes
from perllm.policies.estimates import ServerTable, estimate
from perllm.policies.registry import make_policy
from perllm.testing import paper_view


def make_request(prompt: int = 100) -> RouterRequest:
    return RouterRequest(0, 0.0, "chat", prompt, prompt * 4, 1000.0)


def _reference(view, s: int, request, o: float, weights: EnergyWeights, share: float) -> dict:
    """The module docstring's formulas for server ``s``, one float at a time."""
    spec, loads = view.servers[s], view.load_arrays()
    link = view.links[spec.link]
    perf, power = spec.perf, spec.power
    running, queued, kv = loads.running[s], loads.queued[s], loads.tokens_in_flight[s]
    ahead = running + queued + 1.0
    steps = max(o - 1.0, 0.0)
    slots = min(
        spec.max_batch, max(math.floor(spec.kv_capacity_tokens / (request.prompt_tokens + o)), 1)
    )
    if queued > 0:
        slots = min(slots, max(running, 1.0))
    b = min(ahead, slots)

    slow = loads.slowdown[s]  # the datasheet's times, as much slower as the server shows

    def step(batch: float, kv_tokens: float) -> float:
        memory = perf.step_weights_s + kv_tokens * perf.step_s_per_kv_token
        return slow * (perf.step_overhead_s + max(perf.step_compute_s_per_seq * batch, memory))

    prefill = slow * (perf.prefill_fixed_s + request.prompt_tokens * perf.prefill_s_per_token)
    service = prefill + steps * step(b, kv + request.prompt_tokens)
    queue = (ahead - b) / slots * service
    seconds = (request.request_bytes + response_bytes(o)) * 8e-6 / loads.bandwidth_mbps[s]
    transfer = seconds * (1.0 + loads.link_active_weight[s] / share) + link.rtt_s
    transmission = link.tx_power_w * seconds  # the link time its bytes hold, whatever the share

    def q(batch: float) -> float:
        if batch < 1.0:
            return 0.0
        return weights.inference * power.busy_w(int(batch)) - weights.idle * power.idle_w

    grown = kv + request.prompt_tokens + steps / 2.0
    decode = steps * (q(b) * step(b, grown) - q(b - 1.0) * step(b - 1.0, kv))
    marginal = prefill * q(b) + max(decode, 0.0)
    return {
        "processing_s": transfer + queue + service,
        "queue_s": queue,
        "inference_j": power.busy_w(int(b)) * service / b,
        "marginal_j": weights.transmission * transmission + marginal,
        "power_w": power.busy_w(int(b)),
    }


@pytest.mark.parametrize("seed", range(5))
def test_estimate_matches_the_docstring_formulas(seed: int) -> None:
    rng = np.random.default_rng(seed)
    view = paper_view(8)
    view.running[:] = rng.integers(0, 12, 8)
    view.queued[:] = rng.integers(0, 4, 8)
    view.tokens[:] = rng.integers(0, 20_000, 8)
    view.active_weight[:] = rng.uniform(0.0, 3.0, 8)
    view.slowdown[:] = rng.uniform(0.5, 4.0, 8)
    weights = EnergyWeights(transmission=1.5, inference=1.0, idle=0.5)
    request = make_request(prompt=int(rng.integers(10, 3000)))
    shares = np.array([0.5, 1.0, 2.0])
    o = float(rng.uniform(5, 600))
    loads = view.load_arrays()
    est = estimate(
        ServerTable.of(view), loads, request, o, shares, weights, slowdown=loads.slowdown
    )
    for s in range(8):
        for z, share in enumerate(shares):
            ref = _reference(view, s, request, o, weights, float(share))
            assert est.processing_s[z, s] == pytest.approx(ref["processing_s"], rel=1e-12)
            assert est.marginal_j[z, s] == pytest.approx(ref["marginal_j"], rel=1e-9, abs=1e-9)
        assert est.queue_s[s] == pytest.approx(ref["queue_s"], rel=1e-12, abs=1e-15)
        assert est.inference_j[s] == pytest.approx(ref["inference_j"], rel=1e-12)
        assert est.power_w[s] == pytest.approx(ref["power_w"], rel=1e-12)
        assert math.isfinite(est.marginal_j[0, s])


def test_the_baselines_estimate_from_the_datasheet_alone() -> None:
    # Without a slowdown passed, estimate() takes every server as fast as its datasheet, what
    # the model-based baselines use (their choice is the same whatever the view shows); CS-UCB
    # passes the view's.
    view = paper_view(6)
    request = make_request()
    for name in ("greedy-latency", "greedy-energy", "feasible-energy", "feasible-latency"):
        chosen = make_policy(name).select(request, view).server
        view.slowdown[chosen] = 20.0
        assert make_policy(name).select(request, view).server == chosen, name
        view.slowdown[:] = 1.0
    view = paper_view(4)
    view.running[:] = 2.0
    view.slowdown[:] = 3.0
    table, loads, request = ServerTable.of(view), view.load_arrays(), make_request()
    datasheet = estimate(table, loads, request, 100.0)
    shown = estimate(table, loads, request, 100.0, slowdown=loads.slowdown)
    np.testing.assert_allclose(shown.service_s, 3.0 * datasheet.service_s, rtol=1e-12)
    np.testing.assert_allclose(shown.decode_step_s, 3.0 * datasheet.decode_step_s, rtol=1e-12)
    assert np.all(shown.inference_j > datasheet.inference_j)


def test_a_priority_queue_shortens_the_wait_not_the_energy() -> None:
    view = paper_view(4)
    view.running[:] = 64.0  # full batches everywhere
    view.queued[:] = 10.0
    table, loads, request = ServerTable.of(view), view.load_arrays(), make_request()
    behind_all = estimate(table, loads, request, 100.0)
    first = estimate(table, loads, request, 100.0, queued_ahead=np.zeros(4))
    assert np.all(first.queue_s <= behind_all.queue_s)
    assert np.any(first.queue_s < behind_all.queue_s)
    np.testing.assert_array_equal(first.marginal_j, behind_all.marginal_j)
    np.testing.assert_array_equal(first.power_w, behind_all.power_w)


def test_an_expected_cached_prefix_shortens_the_prefill_by_its_tokens() -> None:
    view = paper_view(4)
    view.running[:] = 2.0
    table, loads = ServerTable.of(view), view.load_arrays()
    request = make_request(prompt=2000)
    cached = np.array([0.0, 1024.0, 1999.0, 0.0])
    plain = estimate(table, loads, request, 100.0)
    reuse = estimate(table, loads, request, 100.0, cached_tokens=cached)
    saved = plain.service_s - reuse.service_s
    np.testing.assert_allclose(saved, cached * table.prefill_s_per_token, rtol=1e-9, atol=1e-12)
    assert np.all(reuse.marginal_j[0] <= plain.marginal_j[0])
    assert reuse.marginal_j[0, 2] < plain.marginal_j[0, 2]
