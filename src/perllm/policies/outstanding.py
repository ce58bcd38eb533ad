"""What a router knows of the order of each server's queue: the requests it has placed there and
not yet heard back from, with the priority it gave each one."""

from __future__ import annotations

from bisect import bisect_left, insort

import numpy as np
import numpy.typing as npt

from perllm.domain import LoadArrays

Array = npt.NDArray[np.float64]


class Outstanding:
    """Priorities of the placed, unfinished requests of every server, kept sorted.

    A server serves its queue by priority (lower first). Of its ``queued`` requests, those that
    will go before a new one of priority ``p`` are estimated as the placed requests of lower
    priority less the ``running`` ones (which, served first, hold the lowest), at most
    ``queued``: :meth:`queued_ahead`. Each placement and each feedback costs ``O(k)`` for ``k``
    requests outstanding on that server.
    """

    def __init__(self, n_servers: int) -> None:
        self.by_server: list[list[int]] = [[] for _ in range(n_servers)]
        self.placed: dict[int, tuple[int, int]] = {}

    def add(self, request_id: int, server: int, priority: int) -> None:
        insort(self.by_server[server], priority)
        self.placed[request_id] = (server, priority)

    def remove(self, request_id: int) -> None:
        entry = self.placed.pop(request_id, None)
        if entry is None:
            return
        server, priority = entry
        queue = self.by_server[server]
        index = bisect_left(queue, priority)
        if index < len(queue) and queue[index] == priority:
            del queue[index]

    def queued_ahead(
        self, loads: LoadArrays, priority: int, servers: npt.NDArray[np.bool_]
    ) -> Array:
        """How many of each server's queued requests will be served before one of ``priority``
        (computed where ``servers`` holds; all of them elsewhere)."""
        ahead: Array = loads.queued.copy()
        for server in np.flatnonzero(servers & (loads.queued > 0)):
            earlier = bisect_left(self.by_server[server], priority)
            running = loads.running[server]
            ahead[server] = min(loads.queued[server], max(0.0, earlier - running))
        return ahead
