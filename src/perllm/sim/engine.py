"""A small, deterministic discrete-event loop.

The heap holds ``(time, priority, seq, handler, arg)``; ``seq`` comes from the loop's own counter,
so events at the same time and priority run in the order they were scheduled.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Any

Handler = Callable[[Any], None]

# Priorities at equal times: link and server progress first, then arrivals, so that an arrival
# sees every change that happened at the same instant.
PRIORITY_PROGRESS = 0
PRIORITY_ARRIVAL = 1
PRIORITY_ENVIRONMENT = 2


class EventLoop:
    """Owns ``now`` and the event heap. Events handle themselves; the loop only pops and calls."""

    __slots__ = ("_heap", "_seq", "now", "stopped")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, int, Handler, Any]] = []
        self._seq = itertools.count()
        self.now = 0.0
        self.stopped = False

    def schedule(self, time: float, priority: int, handler: Handler, arg: Any = None) -> None:
        """Run ``handler(arg)`` at ``time`` (never before ``now``)."""
        heapq.heappush(self._heap, (max(time, self.now), priority, next(self._seq), handler, arg))

    def run(self) -> None:
        """Pop and handle events until the heap is empty or :meth:`stop` is called."""
        heap = self._heap
        pop = heapq.heappop
        while heap and not self.stopped:
            time, _, _, handler, arg = pop(heap)
            self.now = time
            handler(arg)

    def stop(self) -> None:
        self.stopped = True

    def __len__(self) -> int:
        return len(self._heap)
