"""CS-UCB's decision in one compiled pass (numba): stages 1 to 5 of
:mod:`perllm.policies.cs_ucb`, whose docstring states the formulas.

``estimate_kernel``, ``queued_ahead_kernel``, ``recent_rate`` and ``miss_probability`` are
compiled into :func:`decide_kernel`; its cache is named by all of their sources
(:mod:`perllm.policies.kernel_cache`), so an edit to any of them recompiles it.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from numba.extending import register_jitable

from perllm.policies.estimates import estimate_kernel
from perllm.policies.kernel_cache import kernel
from perllm.policies.miss import miss_probability
from perllm.policies.outstanding import queued_ahead_kernel, recent_rate

Array = npt.NDArray[np.float64]

_ONE_SHARE = np.ones(1)

# What the pass reads of the request and the moment, one record: the prompt, the bytes both
# ways, the class's expected output and the log-normal fit of its length, the deadline, the
# router's clock, when the work in flight is expected to end, and the objective's weights.
REQUEST_FIELDS = np.dtype(
    [
        (name, np.float64)
        for name in (
            "prompt_tokens",
            "total_bytes",
            "expected_tokens",
            "mu_o",
            "sd_o",
            "deadline_s",
            "now",
            "horizon",
            "w_transmission",
            "w_inference",
            "w_idle",
        )
    ]
)
# The policy's settings the pass reads, one record (named as the options are).
KNOB_FIELDS = np.dtype(
    [
        (name, np.float64)
        for name in ("miss_price", "recent_window_s", "prefill_cap", "drift_memory_s")
    ]
)


@register_jitable
def crowded(queue_s: float, load: float, max_batch: float) -> bool:
    """A crowded arm: the request would wait in the server's queue, or the batch is at least half
    full (where each newcomer's prefill stalls it). Time is learned apart for such arms."""
    return queue_s > 0.0 or load >= 0.5 * max_batch


@register_jitable
def passed_wait(
    queue_s: float,
    service_s: float,
    slots: float,
    placed: float,
    answered: float,
    rank: float,
    deadline_s: float,
) -> float:
    """Stage 1's wait of a request that must queue (``queue_s > 0``, the work ahead of it now
    drained ``slots`` at a time), counting the requests that will pass it: the server drains
    ``answered`` requests a second (its model's ``slots / service_s`` before any answer), and
    the router sends it ``placed`` a second, of which those with earlier deadlines pass; the
    share of the queue ahead of it, ``rank``, is taken as their share, counted at half since a
    newcomer's chance to pass falls to nothing over the request's slack. With no drain to
    spare, it is passed until it misses (ten deadlines)."""
    behind = queue_s * slots / service_s
    drain = answered if answered > 0.0 else slots / service_s
    spare = drain - 0.5 * placed * rank
    if not spare > 0.0:
        return 10.0 * deadline_s + queue_s
    return max(behind / spare, queue_s)


@register_jitable
def least_score(
    candidate: npt.NDArray[np.bool_],
    e_lcb: Array,
    t_mean: Array,
    factor: Array,
    fixed: Array,
    step: Array,
    spread: Array,
    deadline_s: float,
    mu_o: float,
    sd_o: float,
    penalty: float,
) -> tuple[int, float]:
    """Stages 4 and 5: the candidate with the least score ``e_lcb + penalty x P``, on a tie the
    sooner done (``t_mean``), then the first; returned with its miss probability ``P``
    (:func:`~perllm.policies.miss.miss_probability` of its ``factor``, ``fixed``, ``step`` and
    ``spread``).

    ``P``, the costly part, is computed only where it can change the choice. The penalty is
    never negative (``penalty`` is a price, which is not negative, times a reference energy, a
    sum of non-negative energies, and ``P`` lies in [0, 1]), so a server whose ``e_lcb`` alone
    is above the best score so far, or above the score of the server with the least ``e_lcb``,
    cannot win. The servers are visited in index order, so the choice is a plain scan's, even
    where a score is not a number."""
    n = e_lcb.shape[0]
    first = -1
    for s in range(n):
        if candidate[s] and (first < 0 or e_lcb[s] < e_lcb[first]):
            first = s
    if first < 0:
        return -1, 1.0
    first_p = miss_probability(
        deadline_s, factor[first], fixed[first], step[first], mu_o, sd_o, spread[first]
    )
    bound = e_lcb[first] + penalty * first_p
    best, best_score, best_p = -1, np.inf, 1.0
    for s in range(n):
        if not candidate[s] or (best >= 0 and (e_lcb[s] > best_score or e_lcb[s] > bound)):
            continue
        p = first_p
        if s != first:
            p = miss_probability(deadline_s, factor[s], fixed[s], step[s], mu_o, sd_o, spread[s])
        score = e_lcb[s] + penalty * p
        if best < 0 or score < best_score or (score == best_score and t_mean[s] < t_mean[best]):
            best, best_score, best_p = s, score, p
    return best, best_p


@kernel
def decide_kernel(  # pragma: no cover - compiled; tested through CsUcbPolicy.select
    table: npt.NDArray[np.void],
    running: Array,
    queued: Array,
    tokens_in_flight: Array,
    bandwidth_mbps: Array,
    link_active_weight: Array,
    healthy: npt.NDArray[np.bool_],
    cached: Array,
    request: npt.NDArray[np.void],
    prefill_seconds: Array,
    prefill_at: Array,
    stall: Array,
    slow: Array,
    spread: Array,
    drift: Array,
    energy_lower: Array,
    priorities: npt.NDArray[np.int64],
    counts: npt.NDArray[np.int64],
    priority: int,
    knobs: npt.NDArray[np.void],
    traffic: Array,
    traffic_at: Array,
    slowdown: Array,
) -> tuple[int, float, float, float, float, float, float, float]:
    """Stages 1 to 5 of :mod:`perllm.policies.cs_ucb`'s docstring in one compiled pass.
    ``cached``: each server's expected cached prefix of the prompt, in tokens; ``request``: one
    record of :data:`REQUEST_FIELDS`; ``slow`` and ``spread``: each server's time bound ``F``
    and observation spread, calm (row 0) and crowded (row 1); ``drift``: each server's drift
    (row 0) and when it last moved (row 1); ``knobs``: one record of :data:`KNOB_FIELDS`;
    ``traffic`` and ``traffic_at``: :class:`~perllm.policies.outstanding.Traffic`'s sums;
    ``slowdown``: each server's, as the view shows it (:attr:`~perllm.domain.LoadArrays.slowdown`).
    Returns the server, its miss probability, its estimate (decode step, time with the stalls,
    transfer at a full share, queueing, inference energy) and its pessimistic end; ``stall``
    receives each server's ``u / (1 - u)``."""
    r, k = request[0], knobs[0]
    prompt, expected, mu_o, sd_o = r.prompt_tokens, r.expected_tokens, r.mu_o, r.sd_o
    deadline_s, now, horizon = r.deadline_s, r.now, r.horizon
    w_tx, w_inf, w_idle = r.w_transmission, r.w_inference, r.w_idle
    price, window_s, cap = k.miss_price, k.recent_window_s, k.prefill_cap
    n = running.shape[0]
    everywhere = np.ones(n, dtype=np.bool_)
    ahead = queued_ahead_kernel(priorities, counts, running, queued, priority, everywhere)
    est = estimate_kernel(
        table,
        running,
        queued,
        ahead,
        tokens_in_flight,
        bandwidth_mbps,
        link_active_weight,
        prompt,
        cached,
        r.total_bytes,
        expected,
        _ONE_SHARE,
        w_tx,
        w_inf,
        w_idle,
        slowdown,
    )
    transfer, service, queue, processing = est[0][0], est[1], est[2], est[3][0]
    transmission = est[4][0]
    inference, marginal, decode_step = est[5], est[6][0], est[9]
    for s in range(n):
        if queue[s] > 0.0 and window_s > 0.0:
            placed = recent_rate(traffic, traffic_at, s, 0, now, window_s)
            answered = recent_rate(traffic, traffic_at, s, 1, now, window_s)
            rank = (ahead[s] + 1.0) / (queued[s] + 1.0)
            # est[7], the server's batch with the request, is its slots where it must queue.
            wait = passed_wait(queue[s], service[s], est[7][s], placed, answered, rank, deadline_s)
            processing[s] += wait - queue[s]
            queue[s] = wait
    # Stage 3: the candidates (healthy with room in the cache, else healthy, else all).
    candidate = np.empty(n, dtype=np.bool_)
    for tier in range(3):
        found = False
        for s in range(n):
            fits = prompt + expected <= table[s].kv_capacity_tokens
            candidate[s] = tier == 2 or (healthy[s] and (tier == 1 or fits))
            found = found or candidate[s]
        if found:
            break
    # Stage 2 and the energy of stage 4: bounds, energy, the reference energy.
    e_lcb = np.empty(n)
    t_mean = np.empty(n)
    end = np.empty(n)
    factor = np.empty(n)  # the pessimistic time factor, F with the drift
    fixed = np.empty(n)  # all but the output's decode steps
    step = np.empty(n)
    spread_of = np.empty(n)
    reference = np.inf
    idle_w = 0.0
    for s in range(n):
        idle_w += w_idle * table[s].idle_w
    for s in range(n):
        stall[s] = 0.0
        if window_s > 0.0:
            full = 1 if running[s] + queued[s] >= table[s].max_batch else 0
            u = min(recent_rate(prefill_seconds, prefill_at, s, full, now, window_s), cap)
            stall[s] = u / (1.0 - u)
        if not candidate[s]:
            continue
        row = 1 if crowded(queue[s], running[s] + queued[s], table[s].max_batch) else 0
        lately = 1.0
        if drift[0, s] > 0.0:
            lately = math.exp(
                drift[0, s] * math.exp(-max(now - drift[1, s], 0.0) / k.drift_memory_s)
            )
        factor[s] = slow[row, s] * lately
        spread_of[s] = spread[row, s]
        step[s] = decode_step[s] * (1.0 + stall[s])
        t_mean[s] = processing[s] + service[s] * stall[s]
        fixed[s] = t_mean[s] - expected * step[s]
        infer = marginal[s] - w_tx * transmission[s]
        # Past the end of the work in flight, the whole cluster's idle draw is this request's.
        end[s] = now + t_mean[s] * slow[row, s] * lately
        e_lcb[s] = (
            marginal[s] + infer * (energy_lower[s] - 1.0) + idle_w * max(end[s] - horizon, 0.0)
        )
        own = w_tx * transmission[s] + w_inf * inference[s] * energy_lower[s]
        if not own > 0.0:  # energy weighted by idle power alone: the price counts joules
            own = transmission[s] + inference[s] * energy_lower[s]
        reference = min(reference, own)
    # Stages 4 and 5.
    best, best_p = least_score(
        candidate,
        e_lcb,
        t_mean,
        factor,
        fixed,
        step,
        spread_of,
        deadline_s,
        mu_o,
        sd_o,
        price * reference,
    )
    return (
        best,
        best_p,
        decode_step[best],
        t_mean[best],
        transfer[best],
        queue[best],
        inference[best],
        end[best],
    )
