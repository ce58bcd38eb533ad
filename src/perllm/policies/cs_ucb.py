"""CS-UCB: upper confidence bounds with constraint satisfaction (PerLLM's scheduler).

The arms are the servers ``s`` (with a link share ``z`` per arm when ``share-levels`` lists
several and ``share-by-urgency`` is off). What an arm costs and how long it takes depend on the
load the policy itself puts on it, so CS-UCB does not keep a stationary mean reward per arm.
It keeps a physical model of every arm (:mod:`perllm.policies.estimates`: time and *marginal*
energy at the server's current batch) and learns, per arm, how far reality is from that model,
with confidence bounds on what it learned. For a request ``r`` of class ``c`` with deadline
``D``:

1. **Model**: ``T(s, z)`` the estimated processing time, ``M(s, z)`` the estimated marginal
   weighted energy of adding ``r`` to ``s`` now (transmission, plus the extra power of a busier
   server over the extra time, see :mod:`perllm.policies.estimates`): a
   busy GPU is cheap per request, an idle one pays for its whole step. Two things the
   datasheet model leaves out are added from what the router sees:

   - *prefill stalls*: a server prefills newcomers before it decodes (no chunked prefill), so
     a request there takes ``1 / (1 - u_s)`` times its service time, ``u_s`` the share of the
     server's time its recent prefills take (``prefill-window-s`` = 2 s, capped at
     ``prefill-cap`` = 0.9; :class:`~perllm.policies.outstanding.PrefillLoad`): the prefill
     seconds placed on it while it has free batch slots (it admits what it is sent), those
     done while its batch is full (one admitted per one finished). ``T`` below includes
     ``service x u / (1 - u)``;
   - *the output tail*: output lengths are learned per class as a log-normal fit
     (:class:`~perllm.policies.estimates.OutputLengths`); the deadline is planned for its
     ``length-quantile`` (0.9) rather than the mean, ``T_tail = T + (o_q - o_mean) step / (1 -
     u)`` (``step`` the decode step in the batch ``r`` sees), while the energy stays at the
     mean.
2. **Learned corrections**: the log-ratio of observed to estimated processing time per
   ``(c, s, crowded)``, ``l_T`` (``crowded``: the server's batch at least half full when the
   request was placed), the estimate taken at the output length the request really had
   (``T + (o - o_mean) step / (1 - u)``: the router sees it in the response, so what is
   learned is the model's error, not the spread of lengths, which the tail covers;
   ``per-token-learning``), and of observed to estimated inference energy per server,
   ``l_E``. Each arm
   has its own sum, count ``n`` and standard deviation ``sd`` of ``l``, and borrows from the
   *other* servers of its row (same class and crowding for time; all servers for energy)
   their mean ``mu`` as a prior worth ``w`` = ``pool-weight`` observations: a model error the
   other servers share (a dynamics the model leaves out) is expected of an untried server too,
   and its own observations take over as they accumulate. The prior never leans past the
   datasheet (``l = 0``) away from the side of its bound: ``mu_hi = max(mu, 0)`` for the
   pessimistic bound, ``mu_lo = min(mu, 0)`` for the optimistic one, so good news about the
   others never makes an untried server look safer, and bad news never stops one from being
   tried. With ``m_hi = (sum + w mu_hi) / (n + w)`` (and ``m_lo`` alike; ``w`` = 0 while the
   others have no observation), ``sd`` the arm's own from two observations on and the
   others' before (``prior-log-sd`` while they have fewer than two, or with ``w`` = 0), the
   confidence bounds are

   - pessimism on time (the constraint): ``T_ucb = T_tail exp(m_hi,T + beta_T sd_T / sqrt(n_T +
     w))``,
   - optimism on energy (the objective):
     ``E_lcb = M_tx + M_inf exp(m_lo,E - beta_E sd_E / sqrt(n_E + w))``

   (the model's own value, with the prior's width, before the row has any observation).

   A record is a mean over the whole run, and a server that slows down mid-run (throttling, a
   noisy neighbour) would take as many observations as it had to move it, in each of its rows.
   So each server also keeps a *drift* ``d_s``, an exponentially weighted mean of its latest
   observations' errors against their arms' own records (``d <- d + a (l_T - m_own - d)``,
   ``m_own`` the arm's mean log-ratio, 0 before its first observation; ``a`` = ``drift-rate`` =
   0.2, across all its rows), which fades with its age (``d exp(-age / drift-memory-s)``, 60 s),
   and pessimism covers the recent past too: ``T_ucb`` (and the own record ``T exp(m)`` below)
   are multiplied by ``exp(max(d_s, 0))``. A server faster of late than its records is left to
   its records (no optimism on time); a server left for being slow is tried again once its
   drift has faded, since nothing else would show that it recovered. The drift is about the
   recent past and a replica's own: it is neither saved with the state nor in the shared totals
   (:mod:`perllm.policies.mergeable`).

   Answers come back late, and a slow server's last: a slowdown would show only after the
   requests it holds have finished. So the router also watches its *late answers*
   (:class:`~perllm.policies.outstanding.LateAnswers`): each request that finds a free batch
   slot (not deflected) is due when the arm's own record says its answer comes at the mean
   length (``T exp(m)``), and is late if it has not come back by then (a queued request's
   lateness could be its queue's). About ``p0 = P(o > o_mean)`` of them (the class's
   length fit) are late on a server as fast as its record; when a server's exponentially
   weighted late share ``L`` (rate ``drift-rate``) exceeds the same mean of ``p0`` by
   ``late-margin`` (0.5), after at least five answers due, its drift is raised to at least ``ln
   f = ln o_mean - mu - sd Phi^-1(1 - L)``, the slowdown that makes a share ``L`` of answers late
   (``mu`` and ``sd`` the fit's, ``Phi`` the standard normal's distribution function).
3. **Constraint satisfaction**: arm ``k`` is feasible when ``T_ucb(k) <= D``, the server is
   healthy and its KV cache can hold ``r``'s prompt and expected output. The cache the others
   hold only delays ``r`` (the server admits it from its queue once there is room, a wait the
   estimate's queue counts), so it does not exclude the server; the router's ``tokens in
   flight`` count the queued requests' prompts too, which hold no cache yet.
4. **Choice**: the feasible arm with the least ``E_lcb``, where, when a safe arm exists, an arm
   that is not *safe* counts as costing ``energy-tolerance`` times its ``E_lcb`` and only if it
   is comfortably in time (``T_ucb <= comfort D``) (``prefer-free-slots``; a queue's length is
   the least certain part of an estimate, and joining one delays the requests behind, but not at
   any price: a CPU edge that is free can cost a hundred times the batch slot of a busy GPU).
   Safe: ``T_ucb <= comfort D`` (room to spare, since ``T_ucb`` bounds the *mean* time and a
   request's own time varies around it), and ``r`` starts at once (estimated queueing ``Q = 0``:
   a free batch slot, or only later deadlines queued ahead) or ``T_ucb + (queue-margin - 1) Q
   slow <= D`` (still in time if the wait were ``queue-margin`` times as long; by default
   infinite: only starting at once is safe). ``r`` is queued with priority ``arrival + D``
   (earliest deadline first in the server's queue, as vLLM's priority scheduling orders it).
   Where no arm is safe and waiting behind every queued request is too slow, the queueing part of
   ``T`` counts only the queued requests that go first (a second look at those servers): the
   policy knows the priorities of the requests it placed and has not yet heard back from
   (:class:`~perllm.policies.outstanding.Outstanding`). Costs within ``energy-slack`` (3) of the
   least, ``cost <= (1 + slack) min cost`` (penalties included), count as a tie, which the arm
   with the least ``T_ucb`` wins (a safe one, when the least is safe: the slack is for the
   model's error on energy, not a way into a queue): the energy estimates are a model's, and
   their differences of a few times are within its error at a busy server, while a request done
   sooner leaves more room for its output's unknown length, holds its batch slot and its server's
   busy period for less time. This was measured, not derived: on the tuning clusters it met more
   deadlines at about the same energy per met request as choosing by energy alone
   (``docs/cs-ucb-tuning.md`` has the figures).
5. **Link share** (``share-by-urgency``): the request's weight on its link is
   ``clip(tau / (D - (T - T_transfer) - rtt), floor, 1)``, ``tau`` = 0.1 s: the less time its
   transfer has to spare once the rest of its processing is counted, the more of the link it
   gets (:mod:`perllm.policies.link_share`; a deflected request gets the least). Weighted fair
   sharing of one bandwidth makes a share a constrained resource: what one transfer gets the
   others do not. ``T`` in the decision's estimate is taken at that share.
6. **Overload with grace**: with no feasible arm, ``r`` is rejected if the scenario enables
   admission control. Otherwise, if some healthy arm whose KV cache can hold ``r`` meets ``D`` by
   its own record at the ``long-shot-quantile`` (0.5) of the class's output lengths (``T
   exp(m)`` with ``(o_0.5 - o_mean) step / (1 - u)`` added, without the bound or the tail: ``r``
   is then at least as likely as not to make it, and a skewed class's median is well below its
   mean), ``r`` is a *long shot*: it goes, with its deadline's priority, to the one where it ends
   soonest so (``long-shots``; pessimism decides what is safe to promise, not what is worth
   trying).
   Only a request that no arm meets even so is *deflected* with a priority after every request that
   can still meet its deadline, so that it runs on capacity nobody needs and never delays one
   that can. It goes to the healthy arm where it would end soonest by each server's *own*
   record (``T exp(m)``, the model's ``T`` for a server never observed: the pool would make
   every untried server as slow as the one that is slow, and never try them), among those
   costing at most ``energy-tolerance`` times the cheapest healthy arm (any server if none is
   healthy); a full KV cache does not exclude a server here either. Its time
   teaches nothing (it waits by design, which the model does not estimate); its energy does.

Why this is a bandit: every decision pulls one arm and reveals only that arm's outcome (its time
and energy), which arrives late; the unknowns are per-arm parameters (how fast and how hungry a
server really is for this class of request, against its datasheet), learned from those pulls
only. Optimism on the objective makes an arm whose energy is uncertain look cheaper, so it is
tried and its bound tightens, exactly as UCB's bonus does (it shrinks as ``1 / sqrt(n)``); an
arm that is clearly worse even optimistically is left alone. Pessimism on the constraint keeps
the deadlines: an arm is trusted to be fast only as far as its observations say. Output lengths
are learned per class, a running mean and a log-normal fit (a router cannot know them in advance).

Each update costs ``O(servers)`` (every arm of the row borrows from the others) and each decision
``O(arms)``: the estimate, the bounds and the choice (and the second look at the queues) are one
compiled call over the servers (numba); the late answers cost ``O(log k)`` a request for ``k``
pending. 28 us median and 43-46 us p99 at 100 servers (``benchmarks/decision_speed.py``).

Parameters: ``confidence`` (beta on time) and ``exploration`` (beta on energy), in standard errors,
both 1.0; ``prior-log-sd`` = 0.3 (a datasheet within about 30%); ``share-by-urgency`` on;
``deadline-priority``, ``prefer-free-slots``, ``long-shots`` and ``per-token-learning`` on;
``pool-weight`` 10, ``comfort`` 0.7, ``energy-tolerance`` 10, ``length-quantile`` 0.9,
``prefill-window-s`` 2, ``prefill-cap`` 0.9, ``energy-slack`` 3, ``drift-rate`` 0.2,
``drift-memory-s`` 60 (for a recovered server's sake, not for a figure), ``long-shot-quantile`` 0.5
(the median: as likely as not), ``late-margin`` 0.5, ``queue-margin`` infinite. They were compared
on generated clusters only (``benchmarks/robustness.py --first-cluster 1000``, ``1020``, ``1040``
and ``1060``), never on the clusters or scenarios the README reports. What each mechanism is worth,
the values compared around each default and the rules tried and left out, with their figures, are
in ``docs/cs-ucb-tuning.md``."""

from __future__ import annotations

import math
from collections.abc import Mapping
from statistics import NormalDist
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
from numba import njit
from pydantic import Field, field_validator, model_validator

from perllm import physics
from perllm.domain import (
    DEFERRED_PRIORITY,
    REJECT,
    ClusterView,
    Decision,
    Feedback,
    LoadArrays,
    RouterRequest,
    response_bytes,
)
from perllm.policies.base import PolicyBase, PolicyConfig
from perllm.policies.estimates import OutputLengths, ServerTable, estimate_kernel
from perllm.policies.link_share import SHARE_FLOOR, urgency_share
from perllm.policies.mergeable import cs_ucb_state, cs_ucb_totals
from perllm.policies.outstanding import (
    LateAnswers,
    Outstanding,
    PrefillLoad,
    prefill_share,
    queued_ahead_kernel,
)

Array = npt.NDArray[np.float64]

# ``prefill_share`` is compiled into ``_choose_kernel``, whose numba cache is keyed on this file
# only: after an edit to it, touch this file (or clear __pycache__) so that it is recompiled.

# Which bounds a LogRatioStats keeps up to date.
UPPER, LOWER = 1, 2

# How a request was placed (``_choose``): on a feasible arm, as a long shot, or deflected.
FEASIBLE, LONG_SHOT, HOPELESS = 0, 1, 2

# Priorities are milliseconds of absolute deadline; a deflected request comes after all of them.
DEFLECTED_PRIORITY = DEFERRED_PRIORITY


class CsUcbConfig(PolicyConfig):
    exploration: float = Field(1.0, ge=0.0, le=10.0)
    confidence: float = Field(1.0, ge=0.0, le=10.0)
    prior_log_sd: float = Field(0.3, ge=0.0, le=5.0)
    share_levels: tuple[float, ...] = (1.0,)
    prior_output_tokens: float = Field(128.0, gt=0.0)
    deadline_priority: bool = True
    prefer_free_slots: bool = True
    queue_margin: float = Field(math.inf, ge=1.0)
    comfort: float = Field(0.7, gt=0.0, le=1.0)
    energy_tolerance: float = Field(10.0, ge=1.0)
    pool_weight: float = Field(10.0, ge=0.0, le=1000.0)
    long_shots: bool = True
    prefill_window_s: float = Field(2.0, ge=0.0)
    prefill_cap: float = Field(0.9, gt=0.0, lt=1.0)
    length_quantile: float = Field(0.9, ge=0.5, lt=1.0)
    per_token_learning: bool = True
    energy_slack: float = Field(3.0, ge=0.0)
    drift_rate: float = Field(0.2, ge=0.0, le=1.0)
    drift_memory_s: float = Field(60.0, gt=0.0)
    share_by_urgency: bool = True
    long_shot_quantile: float = Field(0.5, gt=0.0, lt=1.0)
    late_margin: float = Field(0.5, gt=0.0)

    @field_validator("prefill_window_s")
    @classmethod
    def _window_off_or_real(cls, value: float) -> float:
        if 0.0 < value < 1e-3:
            raise ValueError("must be 0 (off) or at least 0.001 s")
        return value

    @field_validator("share_levels")
    @classmethod
    def _positive_shares(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value or any(not z > 0 for z in value):
            raise ValueError("share levels must be a non-empty list of positive numbers")
        return value

    @model_validator(mode="after")
    def _one_way_to_share(self) -> CsUcbConfig:
        if self.share_by_urgency and len(self.share_levels) > 1:
            raise ValueError(
                "share-levels: several levels make link shares arms to learn, which "
                "share-by-urgency replaces; set share-by-urgency: false to learn them"
            )
        return self


@njit(cache=True)
def _refresh(  # pragma: no cover - compiled; tested through LogRatioStats
    count: Array,
    total: Array,
    total_sq: Array,
    upper: Array,
    lower: Array,
    own: Array,
    row: int,
    confidence: float,
    prior_sd: float,
    pool_weight: float,
    server: int,
    log_ratio: float,
    sides: int,
) -> None:
    """Add the observation ``log_ratio`` of ``server`` (none if ``server`` < 0), then refresh
    the bounds of every arm of ``row`` (see :class:`LogRatioStats`): the upper bound and the own
    record if ``sides & 1``, the lower bound if ``sides & 2``."""
    want_upper, want_lower = (sides & 1) != 0, (sides & 2) != 0
    if server >= 0:
        count[row, server] += 1.0
        total[row, server] += log_ratio
        total_sq[row, server] += log_ratio * log_ratio
    n_servers = count.shape[1]
    row_n, row_total, row_sq = 0.0, 0.0, 0.0
    for s in range(n_servers):
        row_n += count[row, s]
        row_total += total[row, s]
        row_sq += total_sq[row, s]
    for s in range(n_servers):
        n = count[row, s]
        if want_upper and (server < 0 or s == server):  # only the observed arm's record moved
            own[row, s] = math.exp(total[row, s] / n) if n > 0.0 else 1.0
        # The other servers: what they showed is worth ``pool_weight`` observations.
        others_n = row_n - n
        prior_n, prior_mean, prior_spread = 0.0, 0.0, prior_sd
        if pool_weight > 0.0 and others_n > 0.0:
            prior_n = pool_weight
            prior_mean = (row_total - total[row, s]) / others_n
            if others_n >= 2.0:
                others_sq = (row_sq - total_sq[row, s]) / others_n
                prior_spread = math.sqrt(max(others_sq - prior_mean * prior_mean, 0.0))
        if n + prior_n <= 0.0:
            if want_upper:
                upper[row, s] = math.exp(confidence * prior_sd)
            if want_lower:
                lower[row, s] = math.exp(-confidence * prior_sd)
            continue
        # The prior leans no further than the datasheet's (0) away from its bound's side.
        high = (total[row, s] + prior_n * max(prior_mean, 0.0)) / (n + prior_n)
        low = (total[row, s] + prior_n * min(prior_mean, 0.0)) / (n + prior_n)
        if n >= 2.0:
            mine = total[row, s] / n
            sd = math.sqrt(max(total_sq[row, s] / n - mine * mine, 0.0))
        else:
            sd = prior_spread
        width = confidence * sd / math.sqrt(n + prior_n)
        if want_upper:
            upper[row, s] = math.exp(high + width)
        if want_lower:
            lower[row, s] = math.exp(low - width)


class LogRatioStats:
    """Per (row, server) statistics of ``l = ln(observed / estimated)`` and the confidence bounds
    they give, kept up to date on every update (step 2 of the module docstring):

    - ``upper = exp(m_hi + beta sd / sqrt(n + w))`` and ``lower = exp(m_lo - beta sd / sqrt(n +
      w))``, with ``m_hi = (sum + w max(mu, 0)) / (n + w)``, ``m_lo`` alike with ``min(mu, 0)``,
      ``mu`` the mean of the *other* servers of the row, ``w`` the ``pool_weight`` (0 when they
      have no observation), ``sd`` the arm's own from two observations on, the others' before
      (``prior_sd`` until they have two); ``exp(+-beta prior_sd)`` while ``n + w = 0``;
    - ``own = exp(sum / n)``, the arm's own record (1, the datasheet, before any observation).

    With ``pool_weight`` 0 every arm stands alone. A refresh costs ``O(servers)``: every arm of
    the row borrows from the others."""

    def __init__(
        self,
        n_servers: int,
        confidence: float,
        prior_sd: float,
        pool_weight: float = 0.0,
        sides: int = 3,
    ) -> None:
        self.n_servers = n_servers
        self.sides = sides  # which bounds are kept: 1 upper (and own), 2 lower, 3 both
        self.confidence = confidence
        self.prior_sd = prior_sd
        self.pool_weight = pool_weight
        self.count = np.zeros((0, n_servers))
        self.total = np.zeros((0, n_servers))
        self.total_sq = np.zeros((0, n_servers))
        self.upper = np.zeros((0, n_servers))
        self.lower = np.zeros((0, n_servers))
        self.own = np.zeros((0, n_servers))

    def ensure_rows(self, rows: int) -> None:
        missing = rows - self.count.shape[0]
        if missing > 0:
            pad = np.zeros((missing, self.n_servers))
            self.count = np.vstack([self.count, pad])
            self.total = np.vstack([self.total, pad])
            self.total_sq = np.vstack([self.total_sq, pad])
            width = self.confidence * self.prior_sd
            self.upper = np.vstack([self.upper, pad + math.exp(width)])
            self.lower = np.vstack([self.lower, pad + math.exp(-width)])
            self.own = np.vstack([self.own, pad + 1.0])

    def observe(self, row: int, server: int, log_ratio: float) -> None:
        """Add an observation (none if ``log_ratio`` is not finite: one would spoil the row)."""
        self.ensure_rows(row + 1)
        if not math.isfinite(log_ratio):
            return
        self._refresh(row, server, log_ratio)

    def _refresh(self, row: int, server: int = -1, log_ratio: float = 0.0) -> None:
        _refresh(
            self.count,
            self.total,
            self.total_sq,
            self.upper,
            self.lower,
            self.own,
            row,
            self.confidence,
            self.prior_sd,
            self.pool_weight,
            server,
            log_ratio,
            self.sides,
        )

    def state(self) -> dict[str, Any]:
        return {
            "count": self.count.tolist(),
            "total": self.total.tolist(),
            "total_sq": self.total_sq.tolist(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        n = self.n_servers
        self.count = np.array(state["count"], dtype=float).reshape(-1, n)
        self.total = np.array(state["total"], dtype=float).reshape(-1, n)
        self.total_sq = np.array(state["total_sq"], dtype=float).reshape(-1, n)
        rows = self.count.shape[0]
        self.upper = np.zeros((rows, n))
        self.lower = np.zeros((rows, n))
        self.own = np.zeros((rows, n))
        for row in range(rows):
            self._refresh(row)


def _is_crowded(loads: LoadArrays, table: ServerTable, server: int) -> bool:
    """The server's batch at least half full (where every newcomer's prefill stalls it)."""
    return bool(loads.running[server] + loads.queued[server] >= 0.5 * table.max_batch[server])


def _knobs(config: CsUcbConfig) -> Array:
    """The configuration as ``_choose_kernel`` reads it."""
    values = (
        float(config.prefer_free_slots),
        config.queue_margin,
        config.comfort,
        config.energy_tolerance,
        float(config.long_shots),
        config.prefill_window_s,
        config.prefill_cap,
        config.energy_slack,
        config.drift_memory_s,
    )
    return np.array(values, dtype=np.float64)


@njit(cache=True)
def _decide_kernel(  # pragma: no cover - compiled; tested through CsUcbPolicy.select
    packed: Array,
    running: Array,
    queued: Array,
    tokens_in_flight: Array,
    bandwidth_mbps: Array,
    link_active_weight: Array,
    healthy: npt.NDArray[np.bool_],
    request: Array,
    shares: Array,
    weights: Array,
    prefill_seconds: Array,
    prefill_at: Array,
    stall: Array,
    calm: Array,
    crowded: Array,
    own_calm: Array,
    own_crowded: Array,
    drift: Array,
    energy_lower: Array,
    priorities: npt.NDArray[np.int64],
    counts: npt.NDArray[np.int64],
    priority: int,
    knobs: Array,
) -> tuple[int, int, float, float, float, float, float]:
    """Steps 3, 4 and 6 of the module docstring in one compiled call: the estimate of every arm,
    the choice (``_choose_kernel``), and, where no arm is safe and a queue served by priority
    lets the request pass the queued ones that come later, the estimate and the choice again
    counting only those that go first. ``request`` is ``(prompt tokens, bytes both ways,
    expected output tokens, output tail beyond them, deadline, now, the long-shot length less
    the expected)``; ``weights`` the energy weights ``(transmission, inference, idle)``;
    ``drift`` each server's drift (row 0) and when it was last moved (row 1). Returns ``(arm,
    kind)``, then the estimate on the chosen arm (:class:`Estimate`'s ``decode_step_s``,
    ``processing_s``, ``service_s``, ``transfer_s`` and ``inference_j``); ``stall`` receives
    each server's ``u / (1 - u)``."""
    prompt, total_bytes, expected, extra_tokens = request[0], request[1], request[2], request[3]
    deadline_s, now, shot_tokens = request[4], request[5], request[6]
    need = prompt + expected
    ahead = queued
    for look in range(2):
        est = estimate_kernel(
            packed,
            running,
            queued,
            ahead,
            tokens_in_flight,
            bandwidth_mbps,
            link_active_weight,
            prompt,
            total_bytes,
            expected,
            shares,
            weights[0],
            weights[1],
            weights[2],
        )
        transfer, service, queue, processing, transmission = est[0], est[1], est[2], est[3], est[4]
        inference, marginal, decode_step = est[5], est[6], est[9]
        arm, kind, passing = _choose_kernel(
            processing,
            service,
            decode_step,
            prefill_seconds,
            prefill_at,
            now,
            stall,
            extra_tokens,
            shot_tokens,
            queue,
            marginal,
            transmission,
            packed,
            running,
            queued,
            healthy,
            need,
            calm,
            crowded,
            own_calm,
            own_crowded,
            drift,
            energy_lower,
            weights[0],
            deadline_s,
            knobs,
        )
        if look == 1 or priority == 0 or not passing.any():
            break
        ahead = queued_ahead_kernel(priorities, counts, running, queued, priority, passing)
    k = shares.shape[0]
    server, level = arm // k, arm % k
    return (
        arm,
        kind,
        decode_step[server],
        processing[level, server],
        service[server],
        transfer[level, server],
        inference[server],
    )


@njit(cache=True)
def _choose_kernel(  # pragma: no cover - compiled; tested through CsUcbPolicy.select
    processing: Array,
    service: Array,
    decode_step: Array,
    prefill_seconds: Array,
    prefill_at: Array,
    now: float,
    stall: Array,
    extra_tokens: float,
    shot_tokens: float,
    queue: Array,
    marginal: Array,
    transmission: Array,
    packed: Array,
    running: Array,
    queued: Array,
    healthy: npt.NDArray[np.bool_],
    need_tokens: float,
    calm: Array,
    crowded: Array,
    own_calm: Array,
    own_crowded: Array,
    drift: Array,
    energy_lower: Array,
    w_transmission: float,
    deadline_s: float,
    knobs: Array,
) -> tuple[int, int, npt.NDArray[np.bool_]]:
    # The configuration, one array (a compiled call's cost grows with its arguments).
    prefer_free_slots, queue_margin, comfort = knobs[0] > 0.0, knobs[1], knobs[2]
    energy_tolerance, long_shots = knobs[3], knobs[4] > 0.0
    prefill_window_s, prefill_cap = knobs[5], knobs[6]
    energy_slack, drift_memory_s = knobs[7], knobs[8]
    k, n = processing.shape
    t_ucb = np.empty((k, n))
    t_own = np.empty((k, n))
    t_shot = np.empty((k, n))
    e_lcb = np.empty((k, n))
    feasible = np.zeros((k, n), dtype=np.bool_)
    safe = np.zeros((k, n), dtype=np.bool_)
    passing = np.zeros(n, dtype=np.bool_)
    any_feasible = False
    any_safe = False
    fits = np.empty(n, dtype=np.bool_)
    for s in range(n):
        fits[s] = usable = healthy[s] and need_tokens <= packed[13, s]
        is_crowded = running[s] + queued[s] >= 0.5 * packed[6, s]
        # The recent drift of the server's times (slower of late than its records say), faded
        # by its age, moves both bounds: pessimism on time covers the recent past too.
        lately = 1.0
        if drift[0, s] > 0.0:
            age = max(now - drift[1, s], 0.0)
            lately = math.exp(drift[0, s] * math.exp(-age / drift_memory_s))
        slow = (crowded[s] if is_crowded else calm[s]) * lately
        slow_own = (own_crowded[s] if is_crowded else own_calm[s]) * lately
        server_feasible = False
        # The prefill stalls stretch the service; the output tail adds its steps, stalled too.
        stall[s] = 0.0
        if prefill_window_s > 0.0:
            full = running[s] + queued[s] >= packed[6, s]
            u = prefill_share(prefill_seconds, prefill_at, s, full, now, prefill_window_s)
            u = min(u, prefill_cap)
            stall[s] = u / (1.0 - u)
        stalled = service[s] * stall[s]
        tail = extra_tokens * decode_step[s] * (1.0 + stall[s])
        shot_step = decode_step[s] * (1.0 + stall[s]) * slow_own
        for z in range(k):
            t_ucb[z, s] = t = (processing[z, s] + stalled + tail) * slow
            t_own[z, s] = (processing[z, s] + stalled) * slow_own
            # A long shot's odds: in time by its own record at the long-shot length.
            t_shot[z, s] = t_own[z, s] + shot_tokens * shot_step
            inference = marginal[z, s] - w_transmission * transmission[z, s]
            e_lcb[z, s] = marginal[z, s] + inference * (energy_lower[s] - 1.0)
            if usable and t <= deadline_s:
                feasible[z, s] = True
                server_feasible = True
                # Safe: in time with room to spare, and starting at once (or in time even if
                # the queue's wait were ``queue_margin`` times as long).
                starts = queue[s] <= 0.0 or t + (queue_margin - 1.0) * queue[s] * slow <= deadline_s
                if starts and t <= comfort * deadline_s:
                    safe[z, s] = True
                    any_safe = True
        any_feasible = any_feasible or server_feasible
        passing[s] = usable and queued[s] > 0 and not server_feasible
    if not any_feasible:
        if long_shots:
            shot, shot_t = -1, deadline_s
            for s in range(n):
                if fits[s]:
                    for z in range(k):
                        if t_shot[z, s] <= shot_t:
                            shot, shot_t = s * k + z, t_shot[z, s]
            if shot >= 0:
                return shot, LONG_SHOT, passing
        return _deflection(t_own, e_lcb, healthy, energy_tolerance), HOPELESS, passing
    if any_safe:
        passing[:] = False  # a safe arm stands: no second look at the queues
    # The least energy among the feasible arms; with a safe one, the others count as if they
    # cost ``energy_tolerance`` times as much.
    penalise = prefer_free_slots and any_safe
    best, best_e = -1, np.inf
    for s in range(n):
        for z in range(k):
            if not feasible[z, s]:
                continue
            cost = e_lcb[z, s]
            if penalise and not safe[z, s]:
                if energy_tolerance == np.inf or t_ucb[z, s] > comfort * deadline_s:
                    continue
                cost += (energy_tolerance - 1.0) * abs(cost)  # x tolerance, also below 0
            # np.argmin's order: the first NaN, else the first least value.
            if best < 0 or (not cost >= best_e and best_e == best_e):
                best, best_e = s * k + z, cost
    if energy_slack > 0.0 and best_e == best_e:
        # Within ``energy_slack`` of the least energy, the soonest done: as cheap, and more room
        # for the output's unknown length. Only among safe arms when there is one: the slack
        # is for the model's error on energy, not a way into a queue.
        limit = best_e + energy_slack * abs(best_e)
        best_t = t_ucb[best % k, best // k]
        for s in range(n):
            for z in range(k):
                if not feasible[z, s] or t_ucb[z, s] >= best_t or (penalise and not safe[z, s]):
                    continue
                if e_lcb[z, s] <= limit:
                    best, best_t = s * k + z, t_ucb[z, s]
    return best, FEASIBLE, passing


@njit(cache=True)
def _deflection(  # pragma: no cover - compiled; tested through CsUcbPolicy.select
    t_own: Array, e_lcb: Array, healthy: npt.NDArray[np.bool_], energy_tolerance: float
) -> int:
    """Step 5: the healthy arm where a hopeless request ends soonest by each server's own record
    (``t_own``), among those costing at most ``energy_tolerance`` times the cheapest healthy
    arm (``cheapest + (tolerance - 1) |cheapest|``, so the cheapest always qualifies); any arm
    if none is healthy."""
    k, n = t_own.shape
    any_healthy = False
    for s in range(n):
        any_healthy = any_healthy or healthy[s]
    cheapest = np.inf
    for s in range(n):
        if healthy[s] or not any_healthy:
            for z in range(k):
                cheapest = min(cheapest, e_lcb[z, s])
    pick, pick_t = -1, np.inf
    for s in range(n):
        if not (healthy[s] or not any_healthy):
            continue
        for z in range(k):
            affordable = energy_tolerance == np.inf or (
                e_lcb[z, s] <= cheapest + (energy_tolerance - 1.0) * abs(cheapest)
            )
            if affordable and (pick < 0 or t_own[z, s] < pick_t):
                pick, pick_t = s * k + z, t_own[z, s]
    return pick if pick >= 0 else 0


class CsUcbPolicy(PolicyBase):
    """PerLLM's CS-UCB (see the module docstring for the formulas)."""

    name: ClassVar[str] = "cs-ucb"
    summary: ClassVar[str] = (
        "PerLLM: per-class UCB over (server, share) arms with constraint satisfaction"
    )
    config_type: ClassVar[type[PolicyConfig]] = CsUcbConfig
    config: CsUcbConfig

    def __init__(self, config: CsUcbConfig, seed: int) -> None:
        super().__init__(config, seed)
        self.shares = np.array(config.share_levels, dtype=float)
        self.lengths = OutputLengths(config.prior_output_tokens)
        self.classes: dict[str, int] = {}
        self.table: ServerTable | None = None
        self.times: LogRatioStats | None = None
        self.energy: LogRatioStats | None = None
        self.outstanding = Outstanding(0)
        self.prefills = PrefillLoad(0, 1.0)
        self.late = LateAnswers(0, config.drift_rate)
        self._stall = np.zeros(0)
        self.drift = np.zeros((2, 0))
        self._z = NormalDist().inv_cdf(config.length_quantile)
        self._z_shot = NormalDist().inv_cdf(config.long_shot_quantile)
        self._knobs = _knobs(config)
        # Per request placed: crowded at placement, expected output tokens, decode step (with
        # the stalls), prefill seconds on its server.
        self._placed: dict[int, tuple[bool, float, float, float]] = {}

    def on_servers(self, view: ClusterView) -> None:
        self.table = ServerTable.of(view)

    def on_begin(self, n_servers: int) -> None:
        """The learned corrections, made for ``n_servers`` servers."""
        cfg = self.config
        # Time is bounded from above (and deflected by its own record), energy from below.
        args = (cfg.prior_log_sd, cfg.pool_weight)
        self.times = LogRatioStats(n_servers, cfg.confidence, *args, sides=UPPER)
        self.energy = LogRatioStats(n_servers, cfg.exploration, *args, sides=LOWER)
        self.energy.ensure_rows(1)
        self.outstanding = Outstanding(n_servers)
        self.prefills = PrefillLoad(n_servers, cfg.prefill_window_s or 1.0)
        self._stall = np.zeros(n_servers)
        self.drift = np.zeros((2, n_servers))  # each server's drift, and when it was last moved
        self.late = LateAnswers(n_servers, cfg.drift_rate)

    def _row(self, service_class: str) -> int:
        row = self.classes.get(service_class)
        if row is None:
            row = self.classes[service_class] = len(self.classes)
        return row

    def decide(self, request: RouterRequest, view: ClusterView) -> Decision:
        table, times, energy = self.table, self.times, self.energy
        assert table is not None and times is not None and energy is not None
        row = self._row(request.service_class)
        times.ensure_rows(2 * row + 2)
        loads = view.load_arrays()
        expected = self.lengths.expected(request.service_class)
        extra_tokens = self.lengths.planned(request.service_class, self._z) - expected
        shot_tokens = self.lengths.quantile(request.service_class, self._z_shot) - expected
        priority = self._deadline_priority(request)
        stall, now = self._stall, view.now()
        weights = view.weights
        total_bytes = request.request_bytes + response_bytes(expected)
        arm, kind, step, processing_s, service_s, transfer_s, inference_j = _decide_kernel(
            table.packed,
            loads.running,
            loads.queued,
            loads.tokens_in_flight,
            loads.bandwidth_mbps,
            loads.link_active_weight,
            loads.healthy,
            np.array(
                (
                    request.prompt_tokens,
                    total_bytes,
                    expected,
                    extra_tokens,
                    request.deadline_s,
                    now,
                    shot_tokens,
                )
            ),
            self.shares,
            np.array((weights.transmission, weights.inference, weights.idle)),
            self.prefills.seconds,
            self.prefills.at,
            stall,
            times.upper[2 * row],
            times.upper[2 * row + 1],
            times.own[2 * row],
            times.own[2 * row + 1],
            self.drift,
            energy.lower[0],
            self.outstanding.priorities,
            self.outstanding.counts,
            priority,
            self._knobs,
        )
        if kind != FEASIBLE and view.admission_control:
            return REJECT
        if kind == HOPELESS:
            priority += DEFLECTED_PRIORITY
        server, level = divmod(arm, len(self.shares))
        self.outstanding.add(request.id, server, priority)
        crowded = _is_crowded(loads, table, server)
        step *= 1.0 + float(stall[server])
        prefill = table.prefill_of(server, request)
        self._placed[request.id] = (crowded, expected, step, prefill)
        if self.config.prefill_window_s > 0:
            self.prefills.placed(server, now, prefill)
        share = float(self.shares[level])
        rest_s = processing_s + service_s * float(stall[server]) - transfer_s
        if self.config.share_by_urgency:
            share = self._urgency(request, table, server, rest_s, kind)
            active = float(loads.link_active_weight[server])
            rtt, bandwidth = float(table.rtt_s[server]), float(loads.bandwidth_mbps[server])
            transfer_s = physics.transfer_s(total_bytes, bandwidth, rtt, share, active)
        starts = loads.running[server] + loads.queued[server] < table.max_batch[server]
        if starts and kind != HOPELESS and self.config.late_margin < math.inf:
            # Due when the arm's own record says the answer comes, at the mean length; only a
            # request that starts at once measures its server's speed (not its queue's length).
            record = float(times.own[2 * row + int(crowded), server])
            due = now + (rest_s + transfer_s) * record
            self.late.placed(
                request.id, server, due, self.lengths.log_fit(request.service_class), expected
            )
        for slow, log_f in self.late.slowdowns(now, self._placed, self.config.late_margin):
            self._raise_drift(slow, log_f, now)
        return Decision(
            server=server,
            share=share,
            arm=arm,
            estimate_s=rest_s + transfer_s,
            estimate_j=inference_j,
            priority=priority,
        )

    @staticmethod
    def _urgency(
        request: RouterRequest, table: ServerTable, server: int, rest_s: float, kind: int
    ) -> float:
        """The link share of ``request`` on ``server`` (:mod:`perllm.policies.link_share`): by
        its time to spare, the least for a deflected request (it has lost its deadline)."""
        if kind == HOPELESS:
            return SHARE_FLOOR
        return urgency_share(request.deadline_s - rest_s - float(table.rtt_s[server]))

    def _deadline_priority(self, request: RouterRequest) -> int:
        if not self.config.deadline_priority:
            return 0
        return int((request.arrival_s + request.deadline_s) * 1000.0)

    def observe(self, feedback: Feedback) -> None:
        if self.times is None or self.energy is None or feedback.decision.arm < 0:
            return
        request = feedback.request
        self.outstanding.remove(request.id)
        crowded, expected, step, prefill = self._placed.pop(request.id, (False, 0.0, 0.0, 0.0))
        if feedback.failed:
            self.late.forget(request.id)
            return
        finished = request.arrival_s + feedback.processing_s
        if self.config.prefill_window_s > 0:
            self.prefills.done(feedback.decision.server, finished, prefill)
        self.lengths.observe(request.service_class, feedback.output_tokens)
        decision = feedback.decision
        # A deflected request waits by design, behind every request that can make it: its
        # time says nothing about the model's error.
        deflected = decision.priority >= DEFLECTED_PRIORITY
        # The model's time for the output the request really had (the router sees it in the
        # response): what the learned ratio measures is then the model's error, not the spread
        # of output lengths, which the planned tail covers.
        estimated = decision.estimate_s
        if self.config.per_token_learning:
            estimated += (feedback.output_tokens - expected) * step
        if estimated > 0 and feedback.processing_s > 0 and not deflected:
            ratio = math.log(feedback.processing_s / estimated)
            row = 2 * self._row(request.service_class) + int(crowded)
            self._drift(row, decision.server, ratio, finished)
            self.times.observe(row, decision.server, ratio)
        if decision.estimate_j > 0 and feedback.energy.inference_j > 0:
            ratio = math.log(feedback.energy.inference_j / decision.estimate_j)
            self.energy.observe(0, decision.server, ratio)

    def _drift(self, row: int, server: int, log_ratio: float, now: float) -> None:
        """Fade ``server``'s drift to ``now``, then move it toward this observation's error against
        the arm's own record (before it is added): ``d <- d exp(-age / drift-memory-s)``, then
        ``d <- (1 - a) d + a (log_ratio - m_own)``, ``a`` the ``drift-rate``, ``m_own`` the
        arm's mean log-ratio (0, the datasheet, before its first observation)."""
        times, drift = self.times, self.drift
        assert times is not None
        times.ensure_rows(row + 1)
        n = float(times.count[row, server])
        if self.config.drift_rate <= 0.0 or not math.isfinite(log_ratio):
            return
        faded = self._faded_drift(server, now)
        error = log_ratio - (float(times.total[row, server]) / n if n > 0.0 else 0.0)
        drift[0, server] = faded + self.config.drift_rate * (error - faded)
        drift[1, server] = max(now, float(drift[1, server]))

    def _raise_drift(self, server: int, log_f: float, now: float) -> None:
        """Raise ``server``'s drift to ``log_f`` (the slowdown its late answers imply) where its
        faded drift is lower: answers in flight are the first sign of a slowdown."""
        if log_f > self._faded_drift(server, now):
            self.drift[0, server] = log_f
            self.drift[1, server] = max(now, float(self.drift[1, server]))

    def _faded_drift(self, server: int, now: float) -> float:
        """``server``'s drift faded to ``now``: ``d exp(-age / drift-memory-s)``."""
        age = max(now - float(self.drift[1, server]), 0.0)
        return float(self.drift[0, server]) * math.exp(-age / self.config.drift_memory_s)

    def forget(self, request: RouterRequest, decision: Decision) -> None:
        self.outstanding.remove(request.id)
        self._placed.pop(request.id, None)
        self.late.forget(request.id)

    def learned_state(self) -> dict[str, Any]:
        if self.times is None or self.energy is None:
            return {}
        return {
            "policy": self.name,
            "n_servers": self.times.n_servers,
            "classes": dict(self.classes),
            "times": self.times.state(),
            "energy": self.energy.state(),
            "lengths": self.lengths.state(),
        }

    def apply_state(self, state: dict[str, Any]) -> None:
        assert self.times is not None and self.energy is not None
        self.lengths.restore(state.get("lengths", {}))
        self.classes = {str(k): int(v) for k, v in state.get("classes", {}).items()}
        if "times" not in state or "energy" not in state:
            return
        if int(state.get("n_servers", -1)) != self.times.n_servers:
            raise ValueError(
                f"saved state has {state.get('n_servers')} servers, "
                f"this cluster has {self.times.n_servers}"
            )
        self.times.restore(state["times"])
        self.energy.restore(state["energy"])
        self.energy.ensure_rows(1)

    def shared_stats(self) -> dict[str, float]:
        """The learned statistics as additive totals (:mod:`perllm.policies.mergeable`)."""
        return cs_ucb_totals(self.state())

    def adopt_shared_stats(self, totals: Mapping[str, float], n_servers: int) -> None:
        """Replace the learned statistics by ``totals`` (for a cluster of ``n_servers``)."""
        self.begin(n_servers)
        assert self.times is not None
        self.restore(cs_ucb_state(totals, self.times.n_servers, list(self.classes)))
