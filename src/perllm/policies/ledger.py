"""What a policy keeps of each request it placed, from the decision to the outcome.

A learning policy remembers, per request, what it decided and estimated, so that it can learn
from the error when the feedback comes (seconds later, after many other decisions). All of it
is one *memo* per request, in one :class:`Ledger` the policy owns, keyed by request id. A memo
is released exactly once: by the request's feedback (answered, or failed) or by ``forget``
(the request ended without an outcome). Released, it records how the request ended
(:attr:`Memo.outcome`), so that a structure still holding it (a deadline watch) can tell an
answered request from a dropped one. The worlds see none of it: a
:class:`~perllm.domain.Decision` carries only what they execute and report.

The memos of the built-in policies: :class:`Placement` (CS-UCB) and :class:`Pull` (the arm
bandits).
"""

from __future__ import annotations

import math
from typing import Generic, TypeVar

__all__ = ["ANSWERED", "DROPPED", "PENDING", "Ledger", "Memo", "Placement", "Pull"]

PENDING, ANSWERED, DROPPED = 0, 1, 2
"""How a request ended, as its memo records it: not yet (still in the ledger), answered, or
dropped (failed, or forgotten: nothing to learn from its time)."""


class Memo:
    """Base of a memo: how its request ended (:data:`PENDING` while in the ledger)."""

    __slots__ = ("outcome",)

    def __init__(self) -> None:
        self.outcome = PENDING


M = TypeVar("M", bound=Memo)


class Ledger(Generic[M]):
    """One memo per request in flight, keyed by request id; each released once."""

    __slots__ = ("_memos",)

    def __init__(self) -> None:
        self._memos: dict[int, M] = {}

    def place(self, request_id: int, memo: M) -> None:
        """Keep ``memo`` for ``request_id`` (a request placed again replaces its memo)."""
        self._memos[request_id] = memo

    def get(self, request_id: int) -> M | None:
        """The memo of a request in flight (``None`` if none), left in the ledger."""
        return self._memos.get(request_id)

    def release(self, request_id: int, outcome: int) -> M | None:
        """Take a request's memo out, recording ``outcome``; ``None`` if it holds none (never
        placed here, or already released)."""
        memo = self._memos.pop(request_id, None)
        if memo is not None:
            memo.outcome = outcome
        return memo

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._memos

    def __len__(self) -> int:
        return len(self._memos)


class Placement(Memo):
    """CS-UCB's memo of a placed request (:mod:`perllm.policies.cs_ucb`).

    ``server`` and ``priority``: where it was queued and with which priority (its entry in
    :class:`~perllm.policies.outstanding.Outstanding`); ``crowded``: its arm was crowded at
    placement; ``service_class``: the request's class; ``expected``: the expected output
    tokens; ``step``: one decode step there, with the prefill stalls; ``prefill``: its prefill
    seconds; ``estimate_s``: the processing time estimated at the expected length (at its link
    share); ``estimate_j``: its inference energy; ``miss_probability``: the chance of a miss the
    decision was scored with; ``queue_s``: the wait in the server's queue estimated at
    placement; ``placed_s``: when it was placed (the router's clock)."""

    __slots__ = (
        "crowded",
        "estimate_j",
        "estimate_s",
        "expected",
        "miss_probability",
        "placed_s",
        "prefill",
        "priority",
        "queue_s",
        "server",
        "service_class",
        "step",
    )

    def __init__(
        self,
        server: int,
        priority: int,
        crowded: bool,
        service_class: str,
        expected: float,
        step: float,
        prefill: float,
        estimate_s: float,
        estimate_j: float,
        miss_probability: float,
        queue_s: float = math.nan,
        placed_s: float = math.nan,
    ) -> None:
        self.outcome = PENDING
        self.server = server
        self.priority = priority
        self.crowded = crowded
        self.service_class = service_class
        self.expected = expected
        self.step = step
        self.prefill = prefill
        self.estimate_s = estimate_s
        self.estimate_j = estimate_j
        self.miss_probability = miss_probability
        self.queue_s = queue_s
        self.placed_s = placed_s


class Pull(Memo):
    """An arm bandit's memo of a placed request: the row (its class) and arm it pulled."""

    __slots__ = ("arm", "row")

    def __init__(self, row: int, arm: int) -> None:
        self.outcome = PENDING
        self.row = row
        self.arm = arm
