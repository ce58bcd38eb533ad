"""CS-UCB: upper confidence bound with constraint satisfaction (PerLLM's scheduler).

A combinatorial bandit over arms ``(server s, link share z)`` with statistics per service class
``c`` (personalization). For a request ``r`` of class ``c`` at time ``t``:

1. **Estimate** each arm's processing time from the server specs and live load
   (:mod:`perllm.policies.estimates`): ``T_hat(s, z)``.
2. **Correct** it with what was learned: the log-ratio ``l = ln(T_observed / T_hat)`` per
   ``(c, s)`` has mean ``m`` and standard deviation ``sd`` over ``n`` observations; the
   pessimistic time is ``T_ucb = T_hat * exp(m + beta * sd / sqrt(n))`` (``T_hat`` itself before
   any observation, and ``sd = prior_log_sd`` until two are seen).
3. **Constraint satisfaction**: arm ``k`` is feasible when ``T_ucb(k) <= deadline(r)``, the
   server is healthy, and its KV cache can hold ``tokens_in_flight + prompt + expected output``
   (compute and memory), with the link's bandwidth shared as ``z / (z + W)`` (bandwidth).
4. **Explore** every feasible arm of class ``c`` once (random order) before exploiting.
5. **Exploit**: among feasible arms, maximise
   ``U(k) = mean_reward(c, k) + alpha * sqrt(2 ln N_c / (n(c, k) + pending(c, k))) - price(s)``,
   where ``N_c`` counts the class's pulls, finished or not. Counting *pending* pulls shrinks an
   arm's bonus as soon as it is chosen, so delayed feedback does not pile requests onto it.
   ``price(s) = pressure * max(0, occupancy(s) - target)`` with
   ``occupancy = (running + queued) / max_batch`` is the price of the server's computing-power
   constraint: as a server nears its capacity, requests that can meet their deadline elsewhere
   go elsewhere, keeping its capacity for the requests only it can serve in time.
6. **No feasible arm**: reject if the scenario enables admission control; otherwise take the
   arm with the least expected violation, ``argmin T_ucb(k) - deadline``.

Reward on feedback (:class:`perllm.policies.bandit.Reward`):
``-E_w / (E_w + E_ref_c) - penalty * missed`` with ``E_w`` the weighted energy
``w_tran E_tran + w_infer E_infer + w_idle E_idle``.

Each update costs ``O(1)`` and each decision ``O(servers * shares)`` vectorised.

Defaults, and why:

- ``exploration`` (alpha) = 0.3: rewards span about ``[-2, 0]`` with energy gaps between
  servers of ``0.1 - 0.5``; 0.3 keeps the bonus after 20 pulls (~0.2) near those gaps.
- ``penalty`` = 1.0: a missed deadline costs more than any energy difference.
- ``pressure`` = 2.0 and ``target`` = 0.75: at a full batch (occupancy 1) the price is 0.5,
  about the reward gap between an efficient GPU and a CPU server, so lenient requests start
  moving away from a server a little before it must queue. In
  ``benchmarks/cs_ucb_sensitivity.py`` this gives the best goodput of the variants tried on all
  three model deployments (no price: up to 10% less; a target of 1.0 or 1.25: 1-6% less).
- ``share_levels`` = (1.0, 2.0): an equal or a double weight on the link. Text requests are
  small, so the share matters only for large uploads; a third level (0.5) changed nothing in
  ``benchmarks/cs_ucb_sensitivity.py`` but added arms to explore.
- ``confidence`` (beta) = 1.0 standard error and ``prior_log_sd`` = 0.3: time estimates
  are trusted once a few observations agree, and a single bad one does not ban a server.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
from pydantic import Field, field_validator

from perllm.domain import REJECT, ClusterView, Decision, EnergyWeights, Feedback, RouterRequest
from perllm.policies.bandit import ArmStats, Reward
from perllm.policies.base import PolicyConfig
from perllm.policies.estimates import OutputLengths, ServerTable, processing_times


class CsUcbConfig(PolicyConfig):
    exploration: float = Field(0.3, ge=0.0)
    penalty: float = Field(1.0, ge=0.0)
    pressure: float = Field(2.0, ge=0.0)
    target: float = Field(0.75, ge=0.0)
    share_levels: tuple[float, ...] = (1.0, 2.0)
    confidence: float = Field(1.0, ge=0.0)
    prior_log_sd: float = Field(0.3, ge=0.0)
    prior_output_tokens: float = Field(128.0, gt=0.0)
    energy_weights: dict[str, float] | None = None

    @field_validator("share_levels")
    @classmethod
    def _positive_shares(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value or any(not z > 0 for z in value):
            raise ValueError("share levels must be a non-empty list of positive numbers")
        return value


class TimeCorrection:
    """Per (class, server) statistics of ``ln(observed / estimated processing time)`` and the
    pessimistic correction factor they give, kept up to date on every observation."""

    def __init__(self, n_servers: int, confidence: float, prior_sd: float) -> None:
        self.n_servers = n_servers
        self.confidence = confidence
        self.prior_sd = prior_sd
        self.count = np.zeros((0, n_servers))
        self.total = np.zeros((0, n_servers))
        self.total_sq = np.zeros((0, n_servers))
        self.factor = np.ones((0, n_servers))

    def ensure_rows(self, rows: int) -> None:
        missing = rows - self.count.shape[0]
        if missing > 0:
            pad = np.zeros((missing, self.n_servers))
            self.count = np.vstack([self.count, pad])
            self.total = np.vstack([self.total, pad])
            self.total_sq = np.vstack([self.total_sq, pad])
            self.factor = np.vstack([self.factor, pad + 1.0])

    def observe(self, row: int, server: int, log_ratio: float) -> None:
        self.count[row, server] += 1.0
        self.total[row, server] += log_ratio
        self.total_sq[row, server] += log_ratio * log_ratio
        self._refresh(row, server)

    def _refresh(self, row: int, server: int) -> None:
        n = self.count[row, server]
        mean = self.total[row, server] / n
        sd = (
            math.sqrt(max(self.total_sq[row, server] / n - mean * mean, 0.0))
            if n >= 2
            else self.prior_sd
        )
        self.factor[row, server] = math.exp(mean + self.confidence * sd / math.sqrt(n))

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
        self.factor = np.ones_like(self.count)
        for row, server in zip(*np.nonzero(self.count), strict=True):
            self._refresh(int(row), int(server))


class CsUcbPolicy:
    """PerLLM's CS-UCB (see the module docstring for the formulas)."""

    name: ClassVar[str] = "cs-ucb"

    def __init__(self, config: CsUcbConfig, seed: int) -> None:
        self.config = config
        self.rng = np.random.default_rng(seed)
        self.shares = np.array(config.share_levels, dtype=float)
        self.lengths = OutputLengths(config.prior_output_tokens)
        weights = EnergyWeights(**config.energy_weights) if config.energy_weights else None
        self.reward = Reward(weights, config.penalty)
        self._table: ServerTable | None = None
        self._servers: object = None
        self.arms: ArmStats | None = None
        self.times: TimeCorrection | None = None
        self._saved: dict[str, Any] | None = None

    def _setup(self, view: ClusterView) -> tuple[ServerTable, ArmStats, TimeCorrection]:
        if self._table is None or self._servers is not view.servers:
            self._table = ServerTable.of(view)
            self._servers = view.servers
            if self.reward.weights is None:
                self.reward.weights = view.weights
            if self.arms is None or self.times is None:
                n = len(view.servers)
                self.arms = ArmStats(n * len(self.shares))
                self.times = TimeCorrection(n, self.config.confidence, self.config.prior_log_sd)
                if self._saved is not None:
                    self._apply(self._saved)
        assert self.arms is not None and self.times is not None
        return self._table, self.arms, self.times

    def select(self, request: RouterRequest, view: ClusterView) -> Decision:
        table, arms, times = self._setup(view)
        cfg = self.config
        row = arms.row(request.service_class)
        times.ensure_rows(row + 1)
        loads = view.load_arrays()
        expected = self.lengths.expected(request.service_class)
        t_hat = processing_times(table, loads, request, expected, self.shares)
        # Work on (servers, shares) so that arm = server * shares + level after ravel().
        t_ucb = t_hat.T * times.factor[row][:, None]
        fits = loads.tokens_in_flight + request.prompt_tokens + expected <= table.kv_capacity_tokens
        server_ok = (loads.healthy & fits)[:, None]
        feasible = server_ok & (t_ucb <= request.deadline_s)
        if feasible.any():
            fresh = feasible.ravel() & (arms.tried[row] == 0) if arms.untried[row] else None
            if fresh is not None and fresh.any():
                arm = int(self.rng.choice(np.flatnonzero(fresh)))
            else:
                index = arms.index(row, cfg.exploration)
                occupancy = (loads.running + loads.queued) / table.max_batch
                price = cfg.pressure * np.maximum(occupancy - cfg.target, 0.0)
                index = index.reshape(t_ucb.shape) - price[:, None]
                arm = int(np.argmax(np.where(feasible, index, -np.inf)))
        elif view.admission_control:
            return REJECT
        else:
            late = np.where(server_ok, t_ucb, np.inf)
            arm = int(np.argmin(late)) if server_ok.any() else 0
        arms.pull(row, arm)
        server, level = divmod(arm, len(self.shares))
        return Decision(
            server=server,
            share=float(self.shares[level]),
            arm=arm,
            estimate_s=float(t_hat[level, server]),
        )

    def observe(self, feedback: Feedback) -> None:
        if self.arms is None or self.times is None or feedback.decision.arm < 0:
            return
        request = feedback.request
        row = self.arms.row(request.service_class)
        self.times.ensure_rows(row + 1)
        self.lengths.observe(request.service_class, feedback.output_tokens)
        self.arms.update(row, feedback.decision.arm, self.reward(feedback))
        estimate_s = feedback.decision.estimate_s
        if estimate_s > 0 and feedback.processing_s > 0 and not feedback.failed:
            ratio = math.log(feedback.processing_s / estimate_s)
            self.times.observe(row, feedback.decision.server, ratio)

    def state(self) -> dict[str, Any]:
        if self.arms is None or self.times is None:
            return dict(self._saved or {})
        return {
            "policy": self.name,
            "arms": self.arms.state(),
            "times": self.times.state(),
            "lengths": self.lengths.state(),
            "reward": self.reward.state(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Restore learned state; applied now, or at the first decision if none was made yet."""
        self.lengths.restore(state.get("lengths", {}))
        self.reward.restore(state.get("reward", {}))
        if self.arms is None:
            self._saved = state
        else:
            self._apply(state)

    def _apply(self, state: dict[str, Any]) -> None:
        assert self.arms is not None and self.times is not None
        if "arms" not in state:
            return
        self.arms.restore(state["arms"])
        self.times.restore(state["times"])
