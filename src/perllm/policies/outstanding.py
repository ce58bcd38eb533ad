"""What a router knows of each server from its own traffic: the order of its queue (the requests
it has placed there and not yet heard back from, with the priority it gave each one), the
share of its time its recent prefills take, and the share of its answers that come late.

What is kept of each request is its memo in the policy's ledger
(:class:`~perllm.policies.ledger.Placement`); the structures here hold per-server summaries of
them, and the answers still to fall due."""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable
from statistics import NormalDist

import numpy as np
import numpy.typing as npt
from numba.extending import register_jitable

from perllm.domain import LoadArrays
from perllm.policies.kernel_cache import kernel
from perllm.policies.ledger import DROPPED, PENDING, Placement

Array = npt.NDArray[np.float64]
Priorities = npt.NDArray[np.int64]

_STANDARD = NormalDist()
# A class's log-normal length fit, ``(mean, sd)`` of ``ln tokens``, or ``None`` without one.
LengthFit = Callable[[str], tuple[float, float] | None]


class Outstanding:
    """Priorities of the placed, unfinished requests of every server, kept sorted.

    A server serves its queue by priority (lower first). Of its ``queued`` requests, those that
    will go before a new one of priority ``p`` are estimated as the placed requests of lower
    priority less the ``running`` ones (taken to hold the lowest), at most ``queued``:
    :func:`queued_ahead_kernel`. This is the work ahead now; those that will pass the request later
    are counted apart (:func:`~perllm.policies.cs_ucb_kernel.passed_wait`). For a request with a
    loose deadline on a full server it still counts too few, since the running ones need not hold
    the lowest priorities: a server admits the head of its queue whenever a slot frees (the lab
    notebook's "The wait behind a crowded server"). Each placement and each feedback costs ``O(k)``
    for ``k`` requests outstanding on that server; the sorted rows live in one array so that the
    query, on the decision path, is one compiled pass. Which request holds which entry is in its
    memo (:class:`~perllm.policies.ledger.Placement`).
    """

    def __init__(self, n_servers: int) -> None:
        self.priorities: Priorities = np.zeros((n_servers, 8), dtype=np.int64)
        self.counts = np.zeros(n_servers, dtype=np.int64)

    def add(self, server: int, priority: int) -> None:
        if self.counts[server] == self.priorities.shape[1]:
            self.priorities = np.pad(self.priorities, ((0, 0), (0, self.priorities.shape[1])))
        _insert(self.priorities[server], self.counts, server, priority)

    def remove(self, server: int, priority: int) -> None:
        """Remove one entry of ``priority`` from ``server``'s queue (if there)."""
        _delete(self.priorities[server], self.counts, server, priority)


@kernel
def _insert(row: Priorities, counts: Priorities, server: int, priority: int) -> None:
    """Insert ``priority`` into the sorted ``row`` (after equal ones)."""
    i = counts[server]
    while i > 0 and row[i - 1] > priority:
        row[i] = row[i - 1]
        i -= 1
    row[i] = priority
    counts[server] += 1


@kernel
def _delete(row: Priorities, counts: Priorities, server: int, priority: int) -> None:
    """Remove one ``priority`` from the sorted ``row``, if there."""
    count = counts[server]
    i = np.searchsorted(row[:count], priority)
    if i < count and row[i] == priority:
        row[i : count - 1] = row[i + 1 : count]
        counts[server] = count - 1


@kernel
def queued_ahead_kernel(
    priorities: Priorities,
    counts: Priorities,
    running: Array,
    queued: Array,
    priority: int,
    servers: npt.NDArray[np.bool_],
) -> Array:
    """How many of each server's queued requests will be served before one of ``priority``
    (computed where ``servers`` holds; all of them elsewhere), from :class:`Outstanding`'s
    ``priorities`` and ``counts``."""
    ahead = queued.copy()
    for s in range(queued.shape[0]):
        if servers[s] and queued[s] > 0:
            earlier = np.searchsorted(priorities[s, : counts[s]], priority)
            ahead[s] = min(queued[s], max(0.0, earlier - running[s]))
    return ahead


class PrefillLoad:
    """The share of each server's time its recent prefills take, as the router sees it:
    ``u_s = P_s / tau``, with ``P_s`` the prefill seconds of the requests ``s`` admitted lately,
    each decayed by ``exp(-age / tau)``. A server prefills newcomers before decoding (no chunked
    prefill), so a request there runs ``1 / (1 - u_s)`` times slower than its batch's steps
    alone say.

    Which requests a server admitted the router does not see, but it can bound them: while the
    server has free batch slots it admits what it is sent (the prefills *placed* on it), and
    while its batch is full, one request for each that finishes (the prefills *done*, counted
    when their responses come back). Row 0 of ``seconds`` and ``at`` holds the placed, row 1
    the done."""

    def __init__(self, n_servers: int, tau_s: float) -> None:
        self.tau_s = tau_s
        self.seconds = np.zeros((2, n_servers))
        self.at = np.zeros((2, n_servers))

    def placed(self, server: int, now: float, prefill_s: float) -> None:
        self._add(0, server, now, prefill_s)

    def done(self, server: int, now: float, prefill_s: float) -> None:
        self._add(1, server, now, prefill_s)

    def _add(self, row: int, server: int, now: float, prefill_s: float) -> None:
        age = max(now - float(self.at[row, server]), 0.0)
        kept = float(self.seconds[row, server]) * math.exp(-age / self.tau_s)
        self.seconds[row, server] = kept + prefill_s
        self.at[row, server] = max(now, float(self.at[row, server]))

    def utilisation(self, now: float, loads: LoadArrays, max_batch: Array) -> Array:
        """``u_s`` now (from the done prefills where the batch is full, else the placed)."""
        return _utilisation(
            self.seconds, self.at, now, self.tau_s, loads.running, loads.queued, max_batch
        )


class Traffic(PrefillLoad):
    """The router's recent traffic with each server, in requests per second: the requests it
    placed there (row 0) and the answers that came back (row 1), each counted ``exp(-age /
    tau)``, the same decayed sums as :class:`PrefillLoad`'s (of requests, not prefill seconds).
    While a server keeps a queue, its answers per second are how fast the queue moves."""

    def placed_one(self, server: int, now: float) -> None:
        self.placed(server, now, 1.0)

    def answered(self, server: int, now: float) -> None:
        self.done(server, now, 1.0)


@register_jitable(inline="always")
def recent_rate(sums: Array, at: Array, s: int, row: int, now: float, tau_s: float) -> float:
    """Server ``s``'s decayed sum of its placed (``row`` 0) or done (1) work, per second:
    ``u_s`` of :class:`PrefillLoad`, or the requests per second of :class:`Traffic`. Compiled
    into the decision's kernels."""
    return float(sums[row, s] * math.exp(-max(now - at[row, s], 0.0) / tau_s) / tau_s)


@kernel
def _utilisation(
    seconds: Array,
    at: Array,
    now: float,
    tau_s: float,
    running: Array,
    queued: Array,
    max_batch: Array,
) -> Array:
    n = seconds.shape[1]
    out = np.empty(n)
    for s in range(n):
        row = 1 if running[s] + queued[s] >= max_batch[s] else 0
        out[s] = recent_rate(seconds, at, s, row, now, tau_s)
    return out


LATE_AFTER = 5
"""Answers due on a server before its share of late ones is trusted."""


class LateAnswers:
    """How many of each server's answers come later than planned, as the router sees it: a
    server that slows down shows it in flight, long before its first slow answer comes back.

    Each placed request that is not deflected is *due* when the arm's own record says its
    answer comes at the class's mean output length ``o_mean`` (its estimated queue wait
    included); at that time the router knows whether it has come back (its memo's outcome).
    Output lengths vary, so on a server as fast as its record a request is late with
    probability ``p0 = P(o > o_mean) = 1 - F(o_mean)``, ``F`` the class's log-normal fit (mean
    ``mu`` and sd ``sd`` of ``ln o``) when the request falls due. Each server keeps exponentially
    weighted means (rate ``a``) of the late indicator and of the requests' ``p0``, divided by
    ``1 - (1 - a)^k`` after ``k`` answers due (means that start at 0, unbiased): ``L`` and
    ``P``. A server slower than its record by a factor ``f`` (a decode-bound time) makes late
    every answer longer than ``o_mean / f``, so ``L = 1 - F(o_mean / f)``: ``ln f = ln o_mean -
    mu - sd Phi^-1(1 - L)``, reported once at least :data:`LATE_AFTER` answers were due and
    ``L > P + margin``.

    A request that waited in the queue is late by its queue as much as by its server, and a
    queue served by deadline lets later requests with earlier deadlines pass it, by design. So
    a queued request still out when due counts as late only if its server has answered nothing
    since it was placed: then nothing ahead of it has finished either, the queue has not moved,
    and the server is slower than the wait its record predicted. Otherwise it counts neither
    way; back in time, it counts as on time. A request that failed or was given up (its memo
    dropped), or of a class without a length fit yet, counts neither way. Each placement and
    each answer due costs ``O(log k)`` for ``k`` requests pending."""

    def __init__(self, n_servers: int, rate: float) -> None:
        self.rate = rate
        self.shares = np.zeros((3, n_servers))  # the late and expected sums, answers due
        self.last_answer = [-math.inf] * n_servers  # when each server last answered
        self._due: list[tuple[float, int, int, Placement]] = []
        self._order = itertools.count()  # breaks ties between equal times and ids

    def watch(self, request_id: int, memo: Placement, due_s: float) -> None:
        """Watch a placed request, due at ``due_s``."""
        if memo.expected > 0.0:
            heapq.heappush(self._due, (due_s, request_id, next(self._order), memo))

    def answered(self, server: int, at_s: float) -> None:
        """``server`` answered a request at ``at_s``."""
        self.last_answer[server] = max(self.last_answer[server], at_s)

    def slowdowns(self, now: float, margin: float, fit: LengthFit) -> list[tuple[int, float]]:
        """Take the answers due by ``now`` (late if their memo is still pending), judged by
        each class's length fit ``fit(service_class)`` (``(mu, sd)``, or ``None``); return
        ``(server, ln f)`` for each whose late share then exceeds the expected by more than
        ``margin``."""
        due, shares, a = self._due, self.shares, self.rate
        found: list[tuple[int, float]] = []
        while due and due[0][0] <= now:
            memo = heapq.heappop(due)[3]
            server, pending = memo.server, memo.outcome == PENDING
            if memo.outcome == DROPPED or (
                pending and memo.queue_s > 0.0 and self.last_answer[server] > memo.placed_s
            ):
                continue
            length = fit(memo.service_class)
            if length is None or not length[1] > 0.0:
                continue
            mu, sd = length
            expected = memo.expected
            p0 = 0.5 * math.erfc((math.log(expected) - mu) / (sd * math.sqrt(2.0)))
            shares[0, server] += a * ((1.0 if pending else 0.0) - shares[0, server])
            shares[1, server] += a * (p0 - shares[1, server])
            shares[2, server] += 1.0
            weight = 1.0 - (1.0 - a) ** shares[2, server]  # 0 only at rate 0: nothing learned
            if shares[2, server] < LATE_AFTER or not weight > 0.0:
                continue
            share = float(shares[0, server]) / weight
            if share > shares[1, server] / weight + margin:
                on_time = min(max(1.0 - share, 1e-3), 1.0 - 1e-3)
                found.append((server, math.log(expected) - mu - sd * _STANDARD.inv_cdf(on_time)))
        return found
