"""Weighted fair sharing of a fluctuating bandwidth: the simulator's links and the gateway's
upload shaping (:mod:`perllm.gateway.shaping`).

Each direction of a link is a :class:`Channel` that serves its active transfers by generalised
processor sharing: transfer ``i`` with weight ``w_i`` gets ``bandwidth * w_i / sum(w)``. We keep
the channel's *virtual time* ``V`` (bits served per unit of weight), which grows at
``bandwidth / sum(w)``. A transfer of ``b`` bits started at ``V0`` ends when ``V = V0 + b / w``,
a value fixed at its start, so finishing order is a heap and every event costs ``O(log k)``.

A link draws its transmission power while it is busy, whatever the number of transfers sharing
it, so each transfer is charged the share of the busy time it held: ``integral of w_i / sum(w)
dt``, its *link seconds* (its bits at the bandwidth, when that holds still). We keep ``U``, the
busy time per unit of weight (it grows at ``1 / sum(w)``); a transfer's link seconds are ``w_i
(U_end - U_start)``.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable
from typing import Any

Done = Callable[[Any], None]
_TOLERANCE_S = 1e-9


class Channel:
    """One direction of a link."""

    __slots__ = (
        "_heap",
        "_seq",
        "bandwidth_bps",
        "busy_per_weight",
        "updated_s",
        "version",
        "virtual",
        "weight_sum",
    )

    def __init__(self, bandwidth_bps: float) -> None:
        self.bandwidth_bps = bandwidth_bps
        self.virtual = 0.0
        self.busy_per_weight = 0.0
        self.weight_sum = 0.0
        self.updated_s = 0.0
        self.version = 0
        self._heap: list[tuple[float, int, float, float, Any]] = []
        self._seq = itertools.count()

    def _advance(self, now: float) -> None:
        if self.weight_sum > 0.0:
            elapsed = now - self.updated_s
            self.virtual += elapsed * self.bandwidth_bps / self.weight_sum
            self.busy_per_weight += elapsed / self.weight_sum
        self.updated_s = now

    def start(self, now: float, bits: float, weight: float, token: Any) -> None:
        """Begin a transfer; ``token`` comes back from :meth:`pop_finished`."""
        self._advance(now)
        finish = self.virtual + bits / weight
        heapq.heappush(self._heap, (finish, next(self._seq), weight, self.busy_per_weight, token))
        self.weight_sum += weight
        self.version += 1

    def set_bandwidth(self, now: float, bandwidth_bps: float) -> None:
        self._advance(now)
        self.bandwidth_bps = bandwidth_bps
        self.version += 1

    def cancel(self, now: float, token: Any) -> None:
        """Remove an unfinished transfer (a gateway's upload whose caller went away)."""
        self._advance(now)
        kept = [entry for entry in self._heap if entry[4] is not token]
        if len(kept) < len(self._heap):
            heapq.heapify(kept)
            self._heap = kept
            self.weight_sum = sum(entry[2] for entry in kept)
            if not kept:  # as in pop_finished: finish tags are relative
                self.weight_sum = self.virtual = self.busy_per_weight = 0.0
            self.version += 1

    def next_finish_s(self) -> float | None:
        """Wall time at which the next transfer ends, if nothing changes before."""
        if not self._heap:
            return None
        gap = max(self._heap[0][0] - self.virtual, 0.0)
        return self.updated_s + gap * self.weight_sum / self.bandwidth_bps

    def pop_finished(self, now: float) -> list[tuple[Any, float]]:
        """Remove and return the transfers finished by ``now``: their tokens and link seconds."""
        self._advance(now)
        done = []
        heap = self._heap
        # Anything due within a nanosecond (or a few units of the clock's resolution at large
        # times, or of the virtual time's own resolution) is done: this absorbs rounding, and
        # guarantees that whatever is left ends strictly after ``now`` (else the next event would
        # fall on ``now`` again, advance nothing, and loop forever).
        slack_s = max(_TOLERANCE_S, 4.0 * math.ulp(now))
        limit = self.virtual + max(
            slack_s * self.bandwidth_bps / max(self.weight_sum, 1e-12), 4.0 * math.ulp(self.virtual)
        )
        while heap and heap[0][0] <= limit:
            _, _, weight, busy_start, token = heapq.heappop(heap)
            self.weight_sum -= weight
            done.append((token, weight * (self.busy_per_weight - busy_start)))
        if not heap:
            self.weight_sum = 0.0
            self.virtual = 0.0  # finish tags are relative: restart to keep precision
            self.busy_per_weight = 0.0
        self.version += 1
        return done

    def predict_finish_s(self, now: float, bits: float, weight: float) -> float:
        """Exact end time of a new transfer started now, if no other starts and bandwidth holds."""
        virtual = self.virtual
        if self.weight_sum > 0.0:
            virtual += (now - self.updated_s) * self.bandwidth_bps / self.weight_sum
        target = virtual + bits / weight
        time, weight_sum = now, self.weight_sum + weight
        for finish, _, w, _, _ in sorted(self._heap):
            if finish >= target:
                break
            time += (finish - virtual) * weight_sum / self.bandwidth_bps
            virtual, weight_sum = finish, weight_sum - w
        return time + (target - virtual) * weight_sum / self.bandwidth_bps

    @property
    def active(self) -> int:
        return len(self._heap)
