"""Plain learning baselines on bandit arms ``(server, share)`` per class and the shared reward,
without constraint satisfaction or any model of the servers: ``ucb1`` and ``epsilon-greedy``.

- ``ucb1`` is the textbook UCB1 (Auer et al. 2002): ``mean + alpha sqrt(2 ln N / n)`` with ``n``
  the arm's *finished* pulls. It ignores pending pulls on purpose, as the textbook does, so it
  shows what delayed feedback does to a bandit that does not account for it.
- ``epsilon-greedy`` accounts for its pending pulls: each pending pull is imputed the class's
  worst mean reward so far until its feedback arrives, so that an arm that just received many
  requests looks worse until they come back (without it, delayed feedback piles every request
  of a burst onto one arm).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from perllm.domain import ClusterView, Decision, Feedback, RouterRequest
from perllm.policies.bandit import ArmStats, Reward, ucb_index
from perllm.policies.base import PolicyConfig, StatisticsPolicy
from perllm.policies.ledger import ANSWERED, DROPPED, Ledger, Pull
from perllm.policies.mergeable import NamedSums, StatisticSet

_PENALTY = (
    "the reward a missed deadline loses; an energy costs at most 1, so at 1 or more any met "
    "deadline beats any miss"
)
_SHARE_LEVELS = "the link shares each server is tried at: one arm per server and share"


class Ucb1Config(PolicyConfig):
    exploration: float = Field(
        0.3, ge=0.0, description="alpha, the weight of UCB1's bonus alpha sqrt(2 ln N / n)"
    )
    penalty: float = Field(1.0, ge=0.0, description=_PENALTY)
    share_levels: tuple[float, ...] = Field((0.5, 1.0, 2.0), description=_SHARE_LEVELS)


class EpsilonGreedyConfig(PolicyConfig):
    epsilon: float = Field(
        0.1, ge=0.0, le=1.0, description="the chance of a random arm instead of the best"
    )
    penalty: float = Field(1.0, ge=0.0, description=_PENALTY)
    share_levels: tuple[float, ...] = Field((0.5, 1.0, 2.0), description=_SHARE_LEVELS)


class _ArmBandit(StatisticsPolicy):
    """Arms ``(server, share)`` per class; subclasses choose an arm from the statistics. Its
    learned state: the arms' totals (``a|``) and the reward's energy reference (``r|``); its
    ledger holds the arm each request in flight pulled."""

    config: Ucb1Config | EpsilonGreedyConfig
    size_name: ClassVar[str] = "n_arms"

    def __init__(self, config: Ucb1Config | EpsilonGreedyConfig, seed: int) -> None:
        super().__init__(config, seed)
        self.rng = np.random.default_rng(seed)
        self.shares = config.share_levels
        self.reward = Reward(None, config.penalty)
        self.arms: ArmStats | None = None
        self.ledger: Ledger[Pull] = Ledger()

    def choose(self, row: int, arms: ArmStats) -> int:
        raise NotImplementedError

    def on_begin(self, n_servers: int) -> None:
        self.arms = ArmStats(n_servers * len(self.shares))

    def decide(self, request: RouterRequest, view: ClusterView) -> Decision:
        arms = self.arms
        assert arms is not None
        self.reward.weights = self.reward.weights or view.weights
        row = arms.row(request.service_class)
        arm = self.choose(row, arms)
        arms.pull(row, arm)
        self.ledger.place(request.id, Pull(row, arm))
        server, level = divmod(arm, len(self.shares))
        return Decision(server=server, share=self.shares[level])

    def observe(self, feedback: Feedback) -> None:
        pull = self.ledger.release(feedback.request.id, ANSWERED)
        if pull is not None and self.arms is not None:
            self.arms.observe((pull.row, pull.arm), self.reward(feedback))

    def forget(self, request: RouterRequest, decision: Decision) -> None:
        pull = self.ledger.release(request.id, DROPPED)
        if pull is not None and self.arms is not None:
            self.arms.unpull(pull.row, pull.arm)

    def statistics(self) -> StatisticSet | None:
        if self.arms is None:
            return None
        return self._statistics(self.arms, self.reward)

    def fresh_statistics(self, size: int) -> StatisticSet:
        return self._statistics(ArmStats(size), Reward(None, 0.0))

    @staticmethod
    def _statistics(arms: ArmStats, reward: Reward) -> StatisticSet:
        return StatisticSet({"a": arms, "r": NamedSums(reward, ("sum", "count"), ("count",))})

    def size(self) -> int:
        assert self.arms is not None
        return self.arms.n_arms


def _fresh_arm(rng: np.random.Generator, tried: Any) -> int | None:
    fresh = np.flatnonzero(tried == 0)
    return int(rng.choice(fresh)) if fresh.size else None


class Ucb1Policy(_ArmBandit):
    """Textbook UCB1 per class: ``mean + alpha * sqrt(2 ln N / n)`` over every arm, feasible or
    not, with ``n`` the finished pulls (pending pulls ignored, as in the textbook)."""

    name: ClassVar[str] = "ucb1"
    summary: ClassVar[str] = "plain UCB1 on CS-UCB's arms and reward"
    config_type: ClassVar[type[PolicyConfig]] = Ucb1Config
    config: Ucb1Config

    def choose(self, row: int, arms: ArmStats) -> int:
        fresh = _fresh_arm(self.rng, arms.tried[row])
        if fresh is not None:
            return fresh
        finished = arms.count[row]
        index = ucb_index(arms.mean[row], finished, float(finished.sum()), self.config.exploration)
        # An arm tried but not yet back has index inf; among those, the first (textbook: play
        # every arm once, then by index).
        return int(np.argmax(index))


class EpsilonGreedyPolicy(_ArmBandit):
    """With probability epsilon a random arm, else the best mean reward counting each pending
    pull at the class's worst mean so far (untried arms first)."""

    name: ClassVar[str] = "epsilon-greedy"
    summary: ClassVar[str] = "epsilon-greedy on CS-UCB's arms"
    config_type: ClassVar[type[PolicyConfig]] = EpsilonGreedyConfig
    config: EpsilonGreedyConfig

    def choose(self, row: int, arms: ArmStats) -> int:
        fresh = _fresh_arm(self.rng, arms.tried[row])
        if fresh is not None:
            return fresh
        if self.rng.random() < self.config.epsilon:
            return int(self.rng.integers(arms.n_arms))
        count, pending = arms.count[row], arms.pending[row]
        seen = count > 0
        if not seen.any():  # every arm tried, none back yet: the least pending
            return int(np.argmin(pending))
        worst = float(arms.mean[row][seen].min())
        imputed = (arms.reward_sum[row] + pending * worst) / np.maximum(count + pending, 1.0)
        return int(np.argmax(np.where(seen, imputed, -np.inf)))


__all__ = ["EpsilonGreedyPolicy", "Ucb1Policy"]
