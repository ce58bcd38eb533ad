"""Shared pieces of the bandit policies: the UCB index, the reward, per-class arm statistics.

Arms are ``(server, share level)`` pairs, numbered ``server * len(shares) + level``. Statistics
are kept per service class, which is what makes the policies *personalized*. The finished pulls
and reward sums are additive totals (:class:`~perllm.policies.mergeable.LearnedStatistic`), and
so is the reward's energy reference (its sums per class, through
:class:`~perllm.policies.mergeable.NamedSums`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from perllm.domain import EnergyWeights, Feedback
from perllm.policies.mergeable import Totals, add_totals, finite, refuse

Array = npt.NDArray[np.float64]


def ucb_index(mean: Array, count: Array, total: float, exploration: float) -> Array:
    """``mean + exploration * sqrt(2 ln(total) / count)``; ``inf`` where ``count == 0``."""
    bonus = exploration * np.sqrt(2.0 * math.log(max(total, 1.0)) / np.maximum(count, 1.0))
    index: Array = np.where(count > 0, mean + bonus, np.inf)
    return index


class Reward:
    """Reward of one finished request, in ``[-1 - penalty, 0]``.

    ``r = -E / (E + E_ref) - penalty * missed`` where ``E`` is the weighted energy
    ``w_tran E_tran + w_infer E_infer + w_idle E_idle`` and ``E_ref`` the mean weighted energy
    observed so far for the request's class (an energy not measured, ``nan``, counts as that
    mean: -1/2). The ratio normalises energies that differ by orders
    of magnitude between classes and bounds outliers; any met deadline beats any miss when
    ``penalty >= 1``.
    """

    def __init__(self, weights: EnergyWeights | None, penalty: float) -> None:
        self.weights = weights
        self.penalty = penalty
        self._sum: dict[str, float] = {}
        self._count: dict[str, int] = {}

    def weighted_j(self, feedback: Feedback) -> float:
        e = feedback.energy
        weights = self.weights or EnergyWeights()
        return weights.weighted(e.transmission_j, e.inference_j, e.idle_j)

    def __call__(self, feedback: Feedback) -> float:
        energy = self.weighted_j(feedback)
        name = feedback.request.service_class
        if not math.isfinite(energy):  # not measured: counted as the class's mean
            return -0.5 - self.penalty * (not feedback.met)
        self._sum[name] = self._sum.get(name, 0.0) + energy
        self._count[name] = self._count.get(name, 0) + 1
        reference = self._sum[name] / self._count[name]
        normalised = energy / (energy + reference) if energy + reference > 0 else 0.0
        return -normalised - self.penalty * (not feedback.met)

    def state(self) -> dict[str, Any]:
        return {"sum": dict(self._sum), "count": dict(self._count)}

    def restore(self, state: dict[str, Any]) -> None:
        self._sum = {str(k): float(v) for k, v in state.get("sum", {}).items()}
        self._count = {str(k): int(v) for k, v in state.get("count", {}).items()}


class ArmStats:
    """Per-class pull counts (finished and pending) and mean rewards, one row per class.

    ``tried = count + pending`` and the class totals are kept up to date on every pull and
    update, so that a decision reads them without recomputing. The finished pulls and reward
    sums are the totals, named ``ARM|STAT|CLASS`` (``STAT`` one of ``count``, ``reward_sum``);
    pending pulls are this router's own, and stay when totals are adopted.
    """

    def __init__(self, n_arms: int) -> None:
        self.n_arms = n_arms
        self.classes: dict[str, int] = {}
        self.count = np.zeros((0, n_arms))
        self.pending = np.zeros((0, n_arms))
        self.reward_sum = np.zeros((0, n_arms))
        self.mean = np.zeros((0, n_arms))
        self.tried = np.zeros((0, n_arms))
        self.total = np.zeros(0)
        self.untried: list[int] = []

    def row(self, service_class: str) -> int:
        row = self.classes.get(service_class)
        if row is None:
            row = self.classes[service_class] = len(self.classes)
            self._grow(1)
        return row

    def _grow(self, rows: int) -> None:
        pad = np.zeros((rows, self.n_arms))
        self.count = np.vstack([self.count, pad])
        self.pending = np.vstack([self.pending, pad])
        self.reward_sum = np.vstack([self.reward_sum, pad])
        self.mean = np.vstack([self.mean, pad])
        self.tried = np.vstack([self.tried, pad])
        self.total = np.concatenate([self.total, np.zeros(rows)])
        self.untried.extend([self.n_arms] * rows)

    def _tried(self, row: int, arm: int) -> None:
        if self.tried[row, arm] == 0.0:
            self.untried[row] -= 1
        self.tried[row, arm] += 1.0
        self.total[row] += 1.0

    def unpull(self, row: int, arm: int) -> None:
        """Take back a pending pull that will never be answered."""
        if self.pending[row, arm] < 1.0:
            return
        self.pending[row, arm] -= 1.0
        self.tried[row, arm] -= 1.0
        self.total[row] -= 1.0
        if self.tried[row, arm] == 0.0:
            self.untried[row] += 1

    def pull(self, row: int, arm: int) -> None:
        self.pending[row, arm] += 1.0
        self._tried(row, arm)

    def observe(self, key: tuple[int, int], value: float) -> None:
        """The reward ``value`` of a pull of ``(row, arm)`` came back."""
        row, arm = key
        if self.pending[row, arm] >= 1.0:
            self.pending[row, arm] -= 1.0
        else:  # feedback for a pull this router does not hold (its statistics were replaced)
            self._tried(row, arm)
        self.count[row, arm] += 1.0
        self.reward_sum[row, arm] += value
        self.mean[row, arm] = self.reward_sum[row, arm] / self.count[row, arm]

    def bounds(self, key: tuple[int, int]) -> tuple[float, float]:
        """``mean -+ sqrt(2 ln N / n)`` for ``(row, arm)`` (UCB1's confidence width, ``N`` the
        class's finished pulls); unbounded before its first."""
        row, arm = key
        n = float(self.count[row, arm])
        if n <= 0.0:
            return -math.inf, math.inf
        width = math.sqrt(2.0 * math.log(max(float(self.count[row].sum()), 1.0)) / n)
        mean = float(self.mean[row, arm])
        return mean - width, mean + width

    def totals(self) -> Totals:
        out: Totals = {}
        for name, row in self.classes.items():
            for stat, values in (("count", self.count), ("reward_sum", self.reward_sum)):
                for arm in np.flatnonzero(values[row]):
                    out[f"{arm}|{stat}|{name}"] = float(values[row, arm])
        return out

    def merge(self, totals: Mapping[str, float]) -> None:
        self.adopt(add_totals(self.totals(), totals))

    def adopt(self, totals: Mapping[str, float], *, strict: bool = False) -> None:
        """Replace the finished pulls and reward sums by ``totals`` (see
        :class:`~perllm.policies.mergeable.Additive`); classes keep their rows, new ones come
        after, and this router's pending pulls stay."""
        found: list[tuple[str, int, bool, float]] = []
        for name, value in totals.items():
            parts = name.split("|", 2)
            if len(parts) != 3 or parts[1] not in ("count", "reward_sum"):
                refuse(strict, name, "not a name ARM|STAT|CLASS")
            elif not (parts[0].isdecimal() and int(parts[0]) < self.n_arms):
                refuse(strict, name, f"not an arm of {self.n_arms}")
            elif finite(strict, name, value):
                found.append((parts[2], int(parts[0]), parts[1] == "count", value))
        self.count[:] = 0.0
        self.reward_sum[:] = 0.0
        for name, arm, is_count, value in found:
            row = self.row(name)
            (self.count if is_count else self.reward_sum)[row, arm] = value
        self.tried = self.count + self.pending
        self.total = self.tried.sum(axis=1)
        self.untried = [int(n) for n in (self.tried == 0).sum(axis=1)]
        self.mean = self.reward_sum / np.maximum(self.count, 1.0)
