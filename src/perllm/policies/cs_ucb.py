"""CS-UCB: upper confidence bounds with constraint satisfaction (PerLLM's scheduler).

The arms are the servers ``s`` (with a link share ``z`` per arm when ``share-levels`` lists
several). What an arm costs and how long it takes depend on the load the policy itself puts on
it, so CS-UCB does not keep a stationary mean reward per arm. It keeps a physical model of every
arm (:mod:`perllm.policies.estimates`: time and *marginal* energy at the server's current batch)
and learns, per arm, how far reality is from that model, with confidence bounds on what it
learned. For a request ``r`` of class ``c`` with deadline ``D``:

1. **Model**: ``T(s, z)`` the estimated processing time, ``M(s, z)`` the estimated marginal
   weighted energy of adding ``r`` to ``s`` now (transmission, plus the extra power of a busier
   server over the extra time, see :mod:`perllm.policies.estimates`): a
   busy GPU is cheap per request, an idle one pays for its whole step.
2. **Learned corrections**: the log-ratio of observed to estimated processing time per
   ``(c, s, crowded)``, ``l_T`` (``crowded``: the server's batch at least half full when the
   request was placed; there every newcomer's prefill stalls the batch, which the model does
   not capture), and of observed to estimated inference energy per server, ``l_E``, each
   with mean ``m``, standard deviation ``sd`` (``prior-log-sd`` until two observations) and count
   ``n``. The confidence bounds are

   - pessimism on time (the constraint): ``T_ucb = T exp(m_T + beta_T sd_T / sqrt(n_T))``,
   - optimism on energy (the objective): ``E_lcb = M_tx + M_inf exp(m_E - beta_E sd_E / sqrt(n_E))``

   (the model's own value, with the prior's width, before any observation).
3. **Constraint satisfaction**: arm ``k`` is feasible when ``T_ucb(k) <= D``, the server is
   healthy and its KV cache can hold what is in flight plus ``r``'s prompt and expected output.
4. **Choice**: the feasible arm with the least ``E_lcb`` among the *safe* ones if there are
   any, else among all feasible arms (``prefer-free-slots``; a queue's length is the least
   certain part of an estimate, and joining one delays the requests behind). Safe: ``r``
   starts at once (estimated queueing ``Q = 0``: a free batch slot, or only later deadlines
   queued ahead), or ``T_ucb + (queue-margin - 1) Q slow <= D`` (still in time if the wait were
   ``queue-margin`` times as long; by default infinite: only starting at once is safe).
   ``r`` is queued with priority ``arrival + D`` (earliest deadline first in the server's
   queue, as vLLM's priority scheduling orders it). The queueing part of ``T`` counts only
   the queued requests that go first: the policy knows the priorities of the requests it
   placed and has not yet heard back from (:class:`~perllm.policies.outstanding.Outstanding`).
5. **Overload with grace**: with no feasible arm, ``r`` is rejected if the scenario enables
   admission control; otherwise it is *deflected*: sent to the arm where it would end soonest
   (``argmin T_ucb``) with a priority after every request that can still meet its deadline, so
   that it runs on capacity nobody needs and never delays one that can.

Why this is a bandit: every decision pulls one arm and reveals only that arm's outcome (its time
and energy), which arrives late; the unknowns are per-arm parameters (how fast and how hungry a
server really is for this class of request, against its datasheet), learned from those pulls
only. Optimism on the objective makes an arm whose energy is uncertain look cheaper, so it is
tried and its bound tightens, exactly as UCB's bonus does (it shrinks as ``1 / sqrt(n)``); an
arm that is clearly worse even optimistically is left alone. Pessimism on the constraint keeps
the deadlines: an arm is trusted to be fast only as far as its observations say. Output lengths
are learned per class as running means (a router cannot know them in advance).

Each update costs ``O(1)`` and each decision ``O(arms)``: the estimate, the bounds and the
choice are compiled loops over the servers (numba), 16 us median and 45 us p99 at 100 servers
(``benchmarks/decision_speed.py``).

Parameters: ``confidence`` (beta on time) and ``exploration`` (beta on energy), in standard
errors, both 1.0; ``prior-log-sd`` = 0.3 (a datasheet within about 30%); ``share-levels`` = (1.0,)
(one share: per-request link weights moved goodput by under 0.3%, the README says why);
``deadline-priority`` and ``prefer-free-slots`` on. They were compared on generated clusters
(``benchmarks/robustness.py --first-cluster 1000``, seeds 1000-1009, never the clusters or
scenarios the README reports): turning ``prefer-free-slots`` off lost 33% goodput (geometric
mean against the strongest baseline per cell), ``deadline-priority`` off 9%; the widths of the
bounds (0 to 2) moved goodput by under 1% and energy per met request by up to 5%, within the
noise of ten clusters, so the textbook width of one standard error was kept. Splitting the time
correction by a crowded batch gained 0.4% goodput over 20 clusters x 2 seeds (0.993x to 0.997x
the strongest baseline). ``queue-margin`` trades goodput for energy: over clusters 1000-1019 x 3
loads x 2 seeds, 4 gave 0.954x the strongest baseline's goodput and 1.04x its energy per met
request, 2 gave 0.921x and 1.12x, against 0.996x and 1.11x with the infinite default.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
from numba import njit
from pydantic import Field, field_validator

from perllm.domain import (
    DEFERRED_PRIORITY,
    REJECT,
    ClusterView,
    Decision,
    Feedback,
    LoadArrays,
    RouterRequest,
)
from perllm.policies.base import PolicyBase, PolicyConfig
from perllm.policies.estimates import Estimate, OutputLengths, ServerTable, estimate
from perllm.policies.mergeable import cs_ucb_state, cs_ucb_totals
from perllm.policies.outstanding import Outstanding

Array = npt.NDArray[np.float64]

# A pending request's lateness is counted in steps of this ratio, up to the cap.
CENSOR_STEP = math.sqrt(2.0)
CENSOR_CAP = 64.0

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
    pool_weight: float = Field(0.0, ge=0.0, le=100.0)
    censor: bool = False

    @field_validator("share_levels")
    @classmethod
    def _positive_shares(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value or any(not z > 0 for z in value):
            raise ValueError("share levels must be a non-empty list of positive numbers")
        return value


@njit(cache=True)
def _refresh(  # pragma: no cover - compiled; tested through LogRatioStats
    count: Array,
    total: Array,
    total_sq: Array,
    upper: Array,
    lower: Array,
    row: int,
    server: int,
    confidence: float,
    prior_sd: float,
    pool_weight: float,
) -> None:
    """Refresh the bounds of ``(row, server)`` from its statistics, or of the whole row when
    ``pool_weight > 0`` (the row's pooled mean is then every arm's prior)."""
    pool_n, pool_mean, pool_sd = 0.0, 0.0, prior_sd
    first, last = server, server + 1
    if pool_weight > 0.0:
        first, last = 0, count.shape[1]
        pool_total, pool_sq = 0.0, 0.0
        for s in range(count.shape[1]):
            pool_n += count[row, s]
            pool_total += total[row, s]
            pool_sq += total_sq[row, s]
        if pool_n > 0.0:
            pool_mean = pool_total / pool_n
        if pool_n >= 2.0:
            pool_sd = math.sqrt(max(pool_sq / pool_n - pool_mean * pool_mean, 0.0))
    prior_n = pool_weight if pool_n > 0.0 else 0.0
    for s in range(first, last):
        n = count[row, s]
        if n + prior_n <= 0.0:
            upper[row, s] = math.exp(confidence * prior_sd)
            lower[row, s] = math.exp(-confidence * prior_sd)
            continue
        mean = (total[row, s] + prior_n * pool_mean) / (n + prior_n)
        if n >= 2.0:
            sd = math.sqrt(max(total_sq[row, s] / n - (total[row, s] / n) ** 2, 0.0))
        else:
            sd = pool_sd if pool_n >= 2.0 else prior_sd
        width = confidence * sd / math.sqrt(n + prior_n)
        upper[row, s] = math.exp(mean + width)
        lower[row, s] = math.exp(mean - width)


class LogRatioStats:
    """Per (row, server) statistics of ``ln(observed / estimated)`` and the confidence bounds
    ``upper = exp(m + beta sd / sqrt(n))`` and ``lower = exp(m - beta sd / sqrt(n))`` they give
    (``exp(+-beta prior_sd)`` before any observation), kept up to date on every update.

    With ``pool_weight`` ``w > 0`` an arm's mean is shrunk towards its row's pooled mean ``mu``
    (over every server): ``m = (sum + w mu) / (n + w)``, ``sd`` the row's until the arm has two
    observations, and ``n + w`` in the width: what other servers showed for this kind of request
    is worth ``w`` observations of this one. *Pending* observations (:meth:`hold`) count like
    observations until they are replaced by the real one (:meth:`observe`) or dropped
    (:meth:`release`); they are not part of :meth:`state`."""

    def __init__(
        self, n_servers: int, confidence: float, prior_sd: float, pool_weight: float = 0.0
    ) -> None:
        self.n_servers = n_servers
        self.confidence = confidence
        self.prior_sd = prior_sd
        self.pool_weight = pool_weight
        self.count = np.zeros((0, n_servers))
        self.total = np.zeros((0, n_servers))
        self.total_sq = np.zeros((0, n_servers))
        self.upper = np.zeros((0, n_servers))
        self.lower = np.zeros((0, n_servers))
        self._held: dict[int, tuple[int, int, float]] = {}

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

    def _add(self, row: int, server: int, n: float, value: float) -> None:
        self.count[row, server] += n
        self.total[row, server] += n * value
        self.total_sq[row, server] += n * value * value

    def _refresh(self, row: int, server: int) -> None:
        _refresh(
            self.count,
            self.total,
            self.total_sq,
            self.upper,
            self.lower,
            row,
            server,
            self.confidence,
            self.prior_sd,
            self.pool_weight,
        )

    def observe(self, row: int, server: int, log_ratio: float, key: int = -1) -> None:
        """Add an observation (replacing the one held under ``key``, if any)."""
        self.ensure_rows(row + 1)
        held = self._held.pop(key, None)
        if held is not None:
            self._add(held[0], held[1], -1.0, held[2])
        self._add(row, server, 1.0, log_ratio)
        self._refresh(row, server)
        if held is not None and held[:2] != (row, server):
            self._refresh(held[0], held[1])

    def hold(self, key: int, row: int, server: int, log_ratio: float) -> None:
        """Count ``log_ratio`` as a pending observation under ``key`` (replacing its last)."""
        self.ensure_rows(row + 1)
        held = self._held.get(key)
        if held is not None:
            self._add(held[0], held[1], -1.0, held[2])
        self._held[key] = (row, server, log_ratio)
        self._add(row, server, 1.0, log_ratio)
        self._refresh(row, server)

    def release(self, key: int) -> None:
        """Drop the pending observation held under ``key``, if any."""
        held = self._held.pop(key, None)
        if held is not None:
            self._add(held[0], held[1], -1.0, held[2])
            self._refresh(held[0], held[1])

    def state(self) -> dict[str, Any]:
        count, total, total_sq = self.count.copy(), self.total.copy(), self.total_sq.copy()
        for row, server, value in self._held.values():
            count[row, server] -= 1.0
            total[row, server] -= value
            total_sq[row, server] -= value * value
        return {"count": count.tolist(), "total": total.tolist(), "total_sq": total_sq.tolist()}

    def restore(self, state: dict[str, Any]) -> None:
        n = self.n_servers
        count = np.array(state["count"], dtype=float).reshape(-1, n)
        self.count = np.zeros((0, n))
        self.total = np.zeros((0, n))
        self.total_sq = np.zeros((0, n))
        self.upper = np.zeros((0, n))
        self.lower = np.zeros((0, n))
        self._held = {}
        self.ensure_rows(count.shape[0])
        self.count = count
        self.total = np.array(state["total"], dtype=float).reshape(-1, n)
        self.total_sq = np.array(state["total_sq"], dtype=float).reshape(-1, n)
        for row in range(count.shape[0]):
            for server in range(n):
                self._refresh(row, server)


def _is_crowded(loads: LoadArrays, table: ServerTable, server: int) -> bool:
    """The server's batch at least half full (where every newcomer's prefill stalls it)."""
    return bool(loads.running[server] + loads.queued[server] >= 0.5 * table.max_batch[server])


def _choose(
    est: Estimate,
    packed: Array,
    loads: LoadArrays,
    need_tokens: float,
    calm: Array,
    crowded: Array,
    energy_lower: Array,
    w_transmission: float,
    deadline_s: float,
    prefer_free_slots: bool,
    queue_margin: float,
) -> tuple[int, int, npt.NDArray[np.bool_]]:
    """Steps 3 and 4 of the module docstring: ``(arm, late, passing)``, the chosen feasible
    arm (-1 if none), the arm where the request would end soonest, and the servers with no
    feasible arm that a priority queue might let it pass."""
    arm, late, passing = _choose_kernel(
        est.processing_s,
        est.queue_s,
        est.marginal_j,
        est.transmission_j,
        packed,
        loads.running,
        loads.queued,
        loads.tokens_in_flight,
        loads.healthy,
        need_tokens,
        calm,
        crowded,
        energy_lower,
        w_transmission,
        deadline_s,
        prefer_free_slots,
        queue_margin,
    )
    return int(arm), int(late), passing


@njit(cache=True)
def _choose_kernel(  # pragma: no cover - compiled; tested through CsUcbPolicy.select
    processing: Array,
    queue: Array,
    marginal: Array,
    transmission: Array,
    packed: Array,
    running: Array,
    queued: Array,
    tokens_in_flight: Array,
    healthy: npt.NDArray[np.bool_],
    need_tokens: float,
    calm: Array,
    crowded: Array,
    energy_lower: Array,
    w_transmission: float,
    deadline_s: float,
    prefer_free_slots: bool,
    queue_margin: float,
) -> tuple[int, int, npt.NDArray[np.bool_]]:
    k, n = processing.shape
    feasible = np.zeros((k, n), dtype=np.bool_)
    safe = np.zeros((k, n), dtype=np.bool_)
    passing = np.zeros(n, dtype=np.bool_)
    any_usable = False
    any_feasible = False
    any_safe = False
    late, late_any = -1, -1
    late_t, late_any_t = np.inf, np.inf
    for s in range(n):
        max_batch = packed[6, s]
        usable = healthy[s] and tokens_in_flight[s] + need_tokens <= packed[13, s]
        any_usable = any_usable or usable
        slow = crowded[s] if running[s] + queued[s] >= 0.5 * max_batch else calm[s]
        server_feasible = False
        for z in range(k):
            t_ucb = processing[z, s] * slow
            # np.argmin's order: the first NaN, else the first least value.
            if late_any < 0 or (not t_ucb >= late_any_t and late_any_t == late_any_t):
                late_any, late_any_t = s * k + z, t_ucb
            if usable and (late < 0 or (not t_ucb >= late_t and late_t == late_t)):
                late, late_t = s * k + z, t_ucb
            if usable and t_ucb <= deadline_s:
                feasible[z, s] = True
                server_feasible = True
                # Safe: starts at once, or meets the deadline with the queue's wait
                # ``queue_margin`` times as long as estimated.
                if queue[s] <= 0.0 or t_ucb + (queue_margin - 1.0) * queue[s] * slow <= deadline_s:
                    safe[z, s] = True
                    any_safe = True
        any_feasible = any_feasible or server_feasible
        passing[s] = usable and queued[s] > 0 and not server_feasible
    if not any_feasible:
        return -1, late if any_usable else late_any, passing
    only_safe = prefer_free_slots and any_safe
    best, best_e = -1, np.inf
    for s in range(n):
        for z in range(k):
            if not (safe[z, s] if only_safe else feasible[z, s]):
                continue
            inference = marginal[z, s] - w_transmission * transmission[z, s]
            e_lcb = marginal[z, s] + inference * (energy_lower[s] - 1.0)
            if best < 0 or (not e_lcb >= best_e and best_e == best_e):
                best, best_e = s * k + z, e_lcb
    return best, late, passing


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
        self._crowded: dict[int, bool] = {}
        # Placed, unanswered requests: [row, server, estimate, placed at, next ratio], and
        # when each reaches its next ratio.
        self._unanswered: dict[int, list[float]] = {}
        self._due: list[tuple[float, int]] = []

    def on_servers(self, view: ClusterView) -> None:
        self.table = ServerTable.of(view)

    def on_begin(self, n_servers: int) -> None:
        """The learned corrections, made for ``n_servers`` servers."""
        cfg = self.config
        self.times = LogRatioStats(n_servers, cfg.confidence, cfg.prior_log_sd, cfg.pool_weight)
        self.energy = LogRatioStats(n_servers, cfg.exploration, cfg.prior_log_sd, cfg.pool_weight)
        self.energy.ensure_rows(1)
        self.outstanding = Outstanding(n_servers)

    def _row(self, service_class: str) -> int:
        row = self.classes.get(service_class)
        if row is None:
            row = self.classes[service_class] = len(self.classes)
        return row

    def decide(self, request: RouterRequest, view: ClusterView) -> Decision:
        table, times, energy = self.table, self.times, self.energy
        assert table is not None and times is not None and energy is not None
        if self.config.censor:
            self._censor(times, request.arrival_s)
        row = self._row(request.service_class)
        times.ensure_rows(2 * row + 2)
        loads = view.load_arrays()
        expected = self.lengths.expected(request.service_class)
        priority = self._deadline_priority(request)
        est = estimate(table, loads, request, expected, self.shares, view.weights)
        calm, crowded = times.upper[2 * row], times.upper[2 * row + 1]
        need = request.prompt_tokens + expected
        args = (table.packed, loads, need, calm, crowded, energy.lower[0])
        cfg = self.config
        tail = (
            view.weights.transmission,
            request.deadline_s,
            cfg.prefer_free_slots,
            cfg.queue_margin,
        )
        arm, late, passing = _choose(est, *args, *tail)
        if priority and passing.any():
            # A queue served by priority lets the request pass the queued ones that come
            # later: where waiting behind all of them is too slow, count only those that go
            # first.
            ahead = self.outstanding.queued_ahead(loads, priority, passing)
            est = estimate(table, loads, request, expected, self.shares, view.weights, ahead)
            arm, late, _ = _choose(est, *args, *tail)
        if arm < 0:
            if view.admission_control:
                return REJECT
            arm = late
            priority += DEFLECTED_PRIORITY
        server, level = divmod(arm, len(self.shares))
        self.outstanding.add(request.id, server, priority)
        crowded_now = self._crowded[request.id] = _is_crowded(loads, table, server)
        estimate_s = float(est.processing_s[level, server])
        if self.config.censor and priority < DEFLECTED_PRIORITY and estimate_s > 0:
            time_row = 2 * row + int(crowded_now)
            ratio = float(times.upper[time_row, server])
            now = request.arrival_s
            self._unanswered[request.id] = [time_row, server, estimate_s, now, ratio]
            heapq.heappush(self._due, (now + estimate_s * ratio, request.id))
        return Decision(
            server=server,
            share=float(self.shares[level]),
            arm=arm,
            estimate_s=estimate_s,
            estimate_j=float(est.inference_j[server]),
            priority=priority,
        )

    def _censor(self, times: LogRatioStats, now: float) -> None:
        """Count each placed request still unanswered when its processing time has reached
        its bound (and each further step) as an observation of that much: the answer, when it
        comes, can only be later (censored, delayed feedback)."""
        while self._due and self._due[0][0] <= now:
            _, request_id = heapq.heappop(self._due)
            pending = self._unanswered.get(request_id)
            if pending is None:
                continue
            time_row, server, estimate_s, placed_s, ratio = pending
            times.hold(request_id, int(time_row), int(server), math.log(ratio))
            pending[4] = ratio = ratio * CENSOR_STEP
            if ratio <= CENSOR_CAP:
                heapq.heappush(self._due, (placed_s + estimate_s * ratio, request_id))

    def _deadline_priority(self, request: RouterRequest) -> int:
        if not self.config.deadline_priority:
            return 0
        return int((request.arrival_s + request.deadline_s) * 1000.0)

    def observe(self, feedback: Feedback) -> None:
        if self.times is None or self.energy is None or feedback.decision.arm < 0:
            return
        request = feedback.request
        self.outstanding.remove(request.id)
        crowded = self._crowded.pop(request.id, False)
        self._unanswered.pop(request.id, None)
        if feedback.failed:
            self.times.release(request.id)
            return
        self.lengths.observe(request.service_class, feedback.output_tokens)
        decision = feedback.decision
        if decision.estimate_s > 0 and feedback.processing_s > 0:
            ratio = math.log(feedback.processing_s / decision.estimate_s)
            row = 2 * self._row(request.service_class) + int(crowded)
            self.times.observe(row, decision.server, ratio, key=request.id)
        else:
            self.times.release(request.id)
        if decision.estimate_j > 0 and feedback.energy.inference_j > 0:
            ratio = math.log(feedback.energy.inference_j / decision.estimate_j)
            self.energy.observe(0, decision.server, ratio)

    def forget(self, request: RouterRequest, decision: Decision) -> None:
        self.outstanding.remove(request.id)
        self._crowded.pop(request.id, None)
        self._unanswered.pop(request.id, None)
        if self.times is not None:
            self.times.release(request.id)

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
