"""CS-UCB: upper confidence bounds with constraint satisfaction (PerLLM's scheduler).

The arms are the servers. What an arm costs and how long it takes depend on the load the policy
itself puts on it, so CS-UCB does not keep a stationary mean reward per arm: it keeps a physical
model of every arm and learns, per arm, how far reality is from it, with confidence bounds. For a
request ``r`` of class ``c`` with deadline ``D`` it goes through five stages.

1. **Estimate** (:mod:`perllm.policies.estimates`): on each server ``s``, the processing time
   ``T_s(o)`` of ``r`` for ``o`` output tokens (transfer, the wait behind the queued requests with
   earlier deadlines and those that will pass it, prefill of the prompt less the prefix the router
   sent ``s`` recently (:meth:`~perllm.domain.ClusterView.prefix_tokens`) and ``o - 1`` decode
   steps in the batch ``r`` sees, every time stretched by the server's slowdown: its decode step
   as its metrics last showed it, over its datasheet's, :attr:`~perllm.domain.LoadArrays.slowdown`)
   and the *marginal* weighted energy ``M_s`` of adding ``r`` to ``s`` now (a busy GPU is cheap
   per request, an idle one pays for its whole step). Servers draw idle power as long as the
   cluster has work, so a request expected to end after all the work in flight also pays the
   cluster's weighted idle power for the difference. Prefill stalls stretch
   the service by ``1 / (1 - u_s)``, ``u_s`` the share of the server's time its recent prefills
   take (:class:`~perllm.policies.outstanding.PrefillLoad`, ``recent-window-s``, ``prefill-cap``).
   A request that must queue is passed by later arrivals with earlier deadlines: with ``b``
   requests to finish before it, ``mu_s`` the server's answers per second and ``lambda_s`` the
   router's placements there per second (:class:`~perllm.policies.outstanding.Traffic`), its wait
   is ``b / (mu_s - lambda_s g / 2)``, ``g`` its rank in the queue's order (the share that goes
   first), halved since a newcomer's chance to pass falls to nothing over its slack; a miss where
   the flow that passes outruns the drain (:func:`~perllm.policies.cs_ucb_kernel.passed_wait`).
   Output lengths are learned per class as a log-normal fit, ``ln o ~ N(mu_o, sd_o)``.
2. **Learned corrections** (:class:`~perllm.policies.log_ratio.LogRatioStats`): the log-ratio of
   observed to estimated time, ``l_T``, per (class, server, crowded: the request would queue or
   the batch is at least half full), at the output length the request really had (so what is
   learned is the model's error, not the spread of lengths), and of observed to estimated
   inference energy per server, ``l_E``. An arm's prior is the mean of the other servers of its
   row, about which servers scatter by ``prior-log-sd`` (``tau``), leaning no further than the
   datasheet away from its bound's side; as in a normal model, it is worth ``w = sd^2 / tau^2``
   observations. With ``m`` its mean, ``sd`` the spread of one observation and ``n + w`` its
   observations plus the prior's:

   - pessimism on time (the constraint): ``F_s = exp(m_hi + confidence sd / sqrt(n + w))``,
     times ``exp(max(d_s, 0))`` for the server's recent drift
     (:class:`~perllm.policies.drift.Drift`, raised early by late answers in flight,
     :class:`~perllm.policies.outstanding.LateAnswers`);
   - optimism on energy (the objective): ``E_s = M_tx + M_inf exp(m_lo - exploration sd /
     sqrt(n + w))``.
3. **Filters**: healthy, with a KV cache that can hold ``r`` (else the healthy ones, else all).
4. **Score**: the probability of a miss, pessimistically,

   ``P_s = P(F_s exp(eps) T_s(o) > D)``,  ``eps ~ N(0, sd_s^2)``, ``ln o ~ N(mu_o, sd_o^2)``

   (:mod:`perllm.policies.miss`: ``T_s(o)`` is linear in ``o``, so for each ``eps`` the miss is
   ``o`` above a threshold, a log-normal tail, and the other variable is integrated by
   Gauss-Hermite quadrature), and the score is

   ``E_s + miss-price x E_ref x P_s``

   with ``E_ref`` the weighted energy ``r`` takes on the server where it is cheapest (its share
   of the batch's power). ``miss-price`` is the one trade-off between the two objectives: a missed
   deadline is worth that many times the energy of serving the request where it is cheapest. At
   0 the policy minimises energy alone; as it grows it buys a lower chance of a miss with more
   energy, and in the limit it minimises the chance of a miss.
5. **Pick** the least score (on a tie, the sooner done). ``r`` is queued with priority ``arrival
   + D`` (earliest deadline first, as vLLM's priority scheduling orders it) if it is more likely
   than not to make it there (``P_s < 1/2``). Otherwise it is *deflected*: queued after every
   request that can still make it, so that it runs on capacity nobody needs, and its time teaches
   nothing (it waits by design); with the scenario's admission control on, it is rejected
   instead. Requests that cannot make it anywhere thus go where they cost least, and requests at
   even odds where their odds are best for their energy: no separate tiers.

The link share is chosen by urgency (``share-by-urgency``, :mod:`perllm.policies.link_share`):
the less time a transfer has to spare, the more of the link; a deflected request gets the least.

Why this is a bandit: each decision pulls one arm and reveals only that arm's outcome (time and
energy), late; the unknowns are per-arm parameters (how fast and how hungry a server really is,
against its datasheet), learned from those pulls only. Optimism on energy makes an arm whose
energy is uncertain look cheaper, so it is tried and its bound tightens as ``1 / sqrt(n)``, as
UCB's bonus does; pessimism on time keeps the constraint: an arm is trusted to be fast only as
far as its observations say. The price turns the constraint into a penalty, as a Lagrangian does.

A decision is one compiled pass (:mod:`perllm.policies.cs_ucb_kernel`), ``O(servers)`` (plus
``O(log k)`` per server for its queue's order); the miss probability, its costliest part, is
computed only where the energy alone does not already exceed the best score found. An update is
``O(servers)`` (every arm borrows from the others).
Parameters: ``miss-price`` 30; ``confidence`` and ``exploration`` 1 (standard errors);
``prior-log-sd`` 0.3 (a server within about 30% of the others); ``recent-window-s`` 4;
``prefill-cap`` 0.9; ``drift-rate`` 0.2; ``drift-memory-s`` 60; ``late-margin`` 0.5;
``share-by-urgency`` on; ``prior-output-tokens`` 128 (a class's mean before its first answer).
They were chosen on generated tuning clusters only
(``docs/lab-notebook.md`` records how)."""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
from pydantic import Field, field_validator

from perllm import physics
from perllm.domain import (
    DEFERRED_PRIORITY,
    REJECT,
    ClusterView,
    Decision,
    Feedback,
    RouterRequest,
    response_bytes,
)
from perllm.policies.base import PRIOR_OUTPUT_TOKENS, PolicyConfig, StatisticsPolicy
from perllm.policies.cs_ucb_kernel import KNOB_FIELDS, REQUEST_FIELDS, crowded, decide_kernel
from perllm.policies.drift import Drift
from perllm.policies.estimates import OutputLengths, ServerTable
from perllm.policies.ledger import ANSWERED, DROPPED, Ledger, Placement
from perllm.policies.link_share import SHARE_FLOOR, urgency_share
from perllm.policies.log_ratio import LOWER, UPPER, LogRatioStats
from perllm.policies.mergeable import NamedSums, StatisticSet
from perllm.policies.outstanding import LateAnswers, Outstanding, PrefillLoad, Traffic

# Priorities are milliseconds of absolute deadline; a deflected request comes after all of them.
DEFLECTED_PRIORITY = DEFERRED_PRIORITY


class CsUcbConfig(PolicyConfig):
    miss_price: float = Field(
        30.0,
        ge=0.0,
        le=1e9,
        description=(
            "what a missed deadline is worth, in multiples of the energy of serving the request "
            "where it is cheapest: 0 minimises energy alone; the higher, the more energy is "
            "spent to lower the chance of a miss"
        ),
    )
    exploration: float = Field(
        1.0,
        ge=0.0,
        le=10.0,
        description=(
            "optimism on energy: a server's energy is taken this many standard errors below "
            "what its answers showed, so that a server whose energy is uncertain is tried; "
            "0 takes the mean"
        ),
    )
    confidence: float = Field(
        1.0,
        ge=0.0,
        le=10.0,
        description=(
            "pessimism on time: a server's time is taken this many standard errors above what "
            "its answers showed; 0 takes the mean"
        ),
    )
    prior_log_sd: float = Field(
        0.3,
        gt=0.0,
        le=5.0,
        description=(
            "how far a server's error against its datasheet may be from the other servers' "
            "(from none before any has answered), as a spread of ln(observed / estimated): "
            "0.3 is about 30%; the smaller, the more of its own answers a server needs to "
            "outweigh the others'"
        ),
    )
    prior_output_tokens: float = Field(128.0, gt=0.0, description=PRIOR_OUTPUT_TOKENS)
    recent_window_s: float = Field(
        4.0,
        ge=0.0,
        description=(
            "seconds over which the router's recent traffic with a server is counted (each "
            "event weighs exp(-age / window)): the prefills it placed there, for the stalls "
            "they cause the batch, and the requests placed and answered, for how fast a queue "
            "moves and who passes a queued request; 0: neither is estimated"
        ),
    )
    prefill_cap: float = Field(
        0.9,
        gt=0.0,
        lt=1.0,
        description=(
            "the largest share of a server's time its prefills are taken to stall its batch "
            "(a request there runs at most 1 / (1 - cap) times slower)"
        ),
    )
    drift_rate: float = Field(
        0.2,
        ge=0.0,
        le=1.0,
        description=(
            "the weight of each answer in a server's recent drift (how much slower of late it "
            "is than its record) and in its share of late answers; 0: no drift"
        ),
    )
    drift_memory_s: float = Field(
        60.0,
        gt=0.0,
        description=(
            "seconds over which a server's drift fades (exp(-age / memory)): a server left for "
            "being slow is tried again after about this long"
        ),
    )
    late_margin: float = Field(
        0.5,
        gt=0.0,
        description=(
            "how far a server's share of late answers must exceed the share its class's "
            "lengths explain before its drift is raised"
        ),
    )
    share_by_urgency: bool = Field(
        True,
        description=(
            "a request's upload gets more of its link the less time it has to spare; false: "
            "equal shares"
        ),
    )

    @field_validator("recent_window_s")
    @classmethod
    def _window_off_or_real(cls, value: float) -> float:
        if 0.0 < value < 1e-3:
            raise ValueError("must be 0 (off) or at least 0.001 s")
        return value


class CsUcbPolicy(StatisticsPolicy):
    """PerLLM's CS-UCB (see the module docstring for the formulas). Its learned state: the time
    corrections (``t|``, a group of two rows per class: calm, crowded), the energy corrections
    (``e|``, one row) and the output lengths (``l|``); its ledger holds a
    :class:`~perllm.policies.ledger.Placement` per request in flight."""

    name: ClassVar[str] = "cs-ucb"
    summary: ClassVar[str] = (
        "PerLLM: UCB over servers, least energy plus a price on the pessimistic chance of a miss"
    )
    config_type: ClassVar[type[PolicyConfig]] = CsUcbConfig
    config: CsUcbConfig

    def __init__(self, config: CsUcbConfig, seed: int) -> None:
        super().__init__(config, seed)
        self.lengths = OutputLengths(config.prior_output_tokens)
        self.ledger: Ledger[Placement] = Ledger()
        self.table: ServerTable | None = None
        self.times: LogRatioStats | None = None
        self.energy: LogRatioStats | None = None
        self.outstanding = Outstanding(0)
        self.prefills = PrefillLoad(0, 1.0)
        self.traffic = Traffic(0, 1.0)
        self.late = LateAnswers(0, config.drift_rate)
        self.drift = Drift(0, config.drift_rate, config.drift_memory_s)
        self._stall = np.zeros(0)
        self.horizon = 0.0  # when the work in flight is expected to end
        self._request = np.zeros(1, dtype=REQUEST_FIELDS)
        self._knobs = np.zeros(1, dtype=KNOB_FIELDS)
        for name in KNOB_FIELDS.names or ():
            self._knobs[name] = getattr(config, name)

    def on_servers(self, view: ClusterView) -> None:
        self.table = ServerTable.of(view)

    def on_begin(self, n_servers: int) -> None:
        """The learned corrections, made for ``n_servers`` servers."""
        cfg = self.config
        self.times, self.energy = self._corrections(n_servers)
        self.outstanding = Outstanding(n_servers)
        self.prefills = PrefillLoad(n_servers, cfg.recent_window_s or 1.0)
        self.traffic = Traffic(n_servers, cfg.recent_window_s or 1.0)
        self._stall = np.zeros(n_servers)
        self.horizon = 0.0
        self.drift = Drift(n_servers, cfg.drift_rate, cfg.drift_memory_s)
        self.late = LateAnswers(n_servers, cfg.drift_rate)

    def _corrections(self, n_servers: int) -> tuple[LogRatioStats, LogRatioStats]:
        """Time corrections (by class, calm and crowded) and energy corrections (one row)."""
        cfg = self.config
        prior = cfg.prior_log_sd
        times = LogRatioStats(
            n_servers, cfg.confidence, prior, pooled=True, sides=UPPER, variants=2
        )
        energy = LogRatioStats(n_servers, cfg.exploration, prior, pooled=True, sides=LOWER)
        energy.group("")
        return times, energy

    def decide(self, request: RouterRequest, view: ClusterView) -> Decision:
        table, times, energy = self.table, self.times, self.energy
        assert table is not None and times is not None and energy is not None
        row = times.group(request.service_class)
        loads = view.load_arrays()
        service_class = request.service_class
        expected = self.lengths.expected(service_class)
        mu_o, sd_o = self.lengths.log_fit(service_class) or (math.log(max(expected, 1.0)), 0.0)
        priority = int((request.arrival_s + request.deadline_s) * 1000.0)
        now, weights = view.now(), view.weights
        total_bytes = request.request_bytes + response_bytes(expected)
        cached = view.prefix_tokens(request)
        self._request[0] = (
            request.prompt_tokens,
            total_bytes,
            expected,
            mu_o,
            sd_o,
            request.deadline_s,
            now,
            self.horizon,
            weights.transmission,
            weights.inference,
            weights.idle,
        )
        chosen = decide_kernel(
            table.columns,
            loads.running,
            loads.queued,
            loads.tokens_in_flight,
            loads.bandwidth_mbps,
            loads.link_active_weight,
            loads.healthy,
            cached,
            self._request,
            self.prefills.seconds,
            self.prefills.at,
            self._stall,
            times.upper[row : row + 2],
            times.spread[row : row + 2],
            self.drift.values,
            energy.lower[0],
            self.outstanding.priorities,
            self.outstanding.counts,
            priority,
            self._knobs,
            self.traffic.seconds,
            self.traffic.at,
            loads.slowdown,
        )
        server, p_miss, step, time_s, transfer_s, queue_s, inference_j, end_s = chosen
        hopeless = not p_miss < 0.5
        if hopeless and view.admission_control:
            return REJECT
        if hopeless:
            priority += DEFLECTED_PRIORITY
        self.outstanding.add(server, priority)
        load = float(loads.running[server] + loads.queued[server])
        is_crowded = crowded(queue_s, load, float(table.max_batch[server]))
        stall = float(self._stall[server])
        prefill = table.prefill_of(server, request.prompt_tokens - float(cached[server]))
        if self.config.recent_window_s > 0:
            self.prefills.placed(server, now, prefill)
            self.traffic.placed_one(server, now)
        rest_s = time_s - transfer_s
        share = 1.0
        if self.config.share_by_urgency:
            spare = request.deadline_s - rest_s - float(table.rtt_s[server])
            share = SHARE_FLOOR if hopeless else urgency_share(spare)
            active = float(loads.link_active_weight[server])
            rtt, bandwidth = float(table.rtt_s[server]), float(loads.bandwidth_mbps[server])
            transfer_s = physics.transfer_s(total_bytes, bandwidth, rtt, share, active)
        self.horizon = max(self.horizon, end_s)
        estimate_s = rest_s + transfer_s
        memo = Placement(
            server,
            priority,
            is_crowded,
            service_class,
            expected,
            step * (1.0 + stall),
            prefill,
            estimate_s,
            inference_j,
            p_miss,
            queue_s,
            now,
        )
        self.ledger.place(request.id, memo)
        if not hopeless:
            # Due when the arm's own record says the answer comes, at the mean length.
            due = now + estimate_s * float(times.own[row + int(is_crowded), server])
            self.late.watch(request.id, memo, due)
        for slow, log_f in self.late.slowdowns(now, self.config.late_margin, self.lengths.log_fit):
            self.drift.raise_to(slow, log_f, now)
        return Decision(server=server, share=share, estimate_s=estimate_s, priority=priority)

    def observe(self, feedback: Feedback) -> None:
        request = feedback.request
        memo = self.ledger.release(request.id, DROPPED if feedback.failed else ANSWERED)
        if memo is None or self.times is None or self.energy is None:
            return
        server = memo.server
        self.outstanding.remove(server, memo.priority)
        if feedback.failed:
            return
        finished = request.arrival_s + feedback.processing_s
        self.late.answered(feedback.decision.server, finished)  # where it ran (a failover)
        if self.config.recent_window_s > 0:
            self.prefills.done(server, finished, memo.prefill)
            self.traffic.answered(feedback.decision.server, finished)
        self.lengths.observe(request.service_class, feedback.output_tokens)
        if feedback.decision.server != server:
            return  # it ran elsewhere than placed: the estimates were not of that server
        # The model's time for the output the request really had; a deflected request waits by
        # design, and its time says nothing about the model's error.
        estimated = memo.estimate_s + (feedback.output_tokens - memo.expected) * memo.step
        deflected = memo.priority >= DEFLECTED_PRIORITY
        if estimated > 0 and feedback.processing_s > 0 and not deflected:
            ratio = math.log(feedback.processing_s / estimated)
            row = self.times.group(request.service_class) + int(memo.crowded)
            n = float(self.times.count[row, server])
            mean = float(self.times.total[row, server]) / n if n > 0.0 else 0.0
            self.drift.move(server, ratio - mean, finished)
            self.times.observe((row, server), ratio)
        if memo.estimate_j > 0 and feedback.energy.inference_j > 0:
            ratio = math.log(feedback.energy.inference_j / memo.estimate_j)
            self.energy.observe((0, server), ratio)

    def forget(self, request: RouterRequest, decision: Decision) -> None:
        memo = self.ledger.release(request.id, DROPPED)
        if memo is not None:
            self.outstanding.remove(memo.server, memo.priority)

    def statistics(self) -> StatisticSet | None:
        if self.times is None or self.energy is None:
            return None
        return self._statistics(self.times, self.energy, self.lengths)

    def fresh_statistics(self, size: int) -> StatisticSet:
        return self._statistics(*self._corrections(size), OutputLengths())

    @staticmethod
    def _statistics(
        times: LogRatioStats, energy: LogRatioStats, lengths: OutputLengths
    ) -> StatisticSet:
        counts = ("count", "log_count")
        sums = NamedSums(lengths, ("sum", "count", "log_count", "log_sum", "log_sq"), counts)
        return StatisticSet({"t": times, "e": energy, "l": sums})

    def size(self) -> int:
        assert self.times is not None
        return self.times.n_servers
