"""Plain learning baselines on CS-UCB's arms and reward, without constraint satisfaction:
``ucb1`` and ``epsilon-greedy``. Both count pending pulls, as CS-UCB does, so that the
comparison isolates the constraint-satisfaction mechanism."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from perllm.domain import ClusterView, Decision, Feedback, RouterRequest
from perllm.policies.bandit import ArmStats, Reward
from perllm.policies.base import PolicyConfig


class _ArmBandit:
    """Arms ``(server, share)`` per class; subclasses choose an arm from the statistics."""

    name: ClassVar[str] = "arm-bandit"

    def __init__(self, seed: int, penalty: float, shares: tuple[float, ...]) -> None:
        self.rng = np.random.default_rng(seed)
        self.shares = shares
        self.reward = Reward(None, penalty)
        self.arms: ArmStats | None = None
        self._saved: dict[str, Any] | None = None

    def choose(self, row: int, arms: ArmStats) -> int:
        raise NotImplementedError

    def select(self, request: RouterRequest, view: ClusterView) -> Decision:
        if self.arms is None:
            self.arms = ArmStats(len(view.servers) * len(self.shares))
            self.reward.weights = self.reward.weights or view.weights
            if self._saved is not None:
                self.arms.restore(self._saved)
        row = self.arms.row(request.service_class)
        arm = self.choose(row, self.arms)
        self.arms.pull(row, arm)
        server, level = divmod(arm, len(self.shares))
        return Decision(server=server, share=self.shares[level], arm=arm)

    def observe(self, feedback: Feedback) -> None:
        if self.arms is None or feedback.decision.arm < 0:
            return
        row = self.arms.row(feedback.request.service_class)
        self.arms.update(row, feedback.decision.arm, self.reward(feedback))

    def state(self) -> dict[str, Any]:
        arms = self.arms.state() if self.arms is not None else self._saved
        return {"policy": self.name, "arms": arms, "reward": self.reward.state()}

    def restore(self, state: dict[str, Any]) -> None:
        self.reward.restore(state.get("reward", {}))
        if state.get("arms"):
            if self.arms is None:
                self._saved = state["arms"]
            else:
                self.arms.restore(state["arms"])


def _fresh_arm(rng: np.random.Generator, tried: Any) -> int | None:
    fresh = np.flatnonzero(tried == 0)
    return int(rng.choice(fresh)) if fresh.size else None


class Ucb1Config(PolicyConfig):
    exploration: float = Field(0.3, ge=0.0)
    penalty: float = Field(1.0, ge=0.0)
    share_levels: tuple[float, ...] = (0.5, 1.0, 2.0)


class Ucb1Policy(_ArmBandit):
    """UCB1 per class: ``mean + alpha * sqrt(2 ln N / n)`` over every arm, feasible or not."""

    name: ClassVar[str] = "ucb1"

    def __init__(self, config: Ucb1Config, seed: int) -> None:
        super().__init__(seed, config.penalty, config.share_levels)
        self.config = config

    def choose(self, row: int, arms: ArmStats) -> int:
        fresh = _fresh_arm(self.rng, arms.tried[row])
        if fresh is not None:
            return fresh
        return int(np.argmax(arms.index(row, self.config.exploration)))


class EpsilonGreedyConfig(PolicyConfig):
    epsilon: float = Field(0.1, ge=0.0, le=1.0)
    penalty: float = Field(1.0, ge=0.0)
    share_levels: tuple[float, ...] = (0.5, 1.0, 2.0)


class EpsilonGreedyPolicy(_ArmBandit):
    """With probability epsilon a random arm, else the best mean reward (untried arms first)."""

    name: ClassVar[str] = "epsilon-greedy"

    def __init__(self, config: EpsilonGreedyConfig, seed: int) -> None:
        super().__init__(seed, config.penalty, config.share_levels)
        self.config = config

    def choose(self, row: int, arms: ArmStats) -> int:
        fresh = _fresh_arm(self.rng, arms.tried[row])
        if fresh is not None:
            return fresh
        if self.rng.random() < self.config.epsilon:
            return int(self.rng.integers(arms.n_arms))
        return int(np.argmax(np.where(arms.count[row] > 0, arms.mean[row], -np.inf)))


__all__ = ["EpsilonGreedyPolicy", "Ucb1Policy"]
