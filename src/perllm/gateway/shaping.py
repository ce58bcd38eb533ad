"""Link shares made real in the gateway: uploads to a backend paced by weighted fair sharing.

A policy's :attr:`~perllm.domain.Decision.share` is the request's weight on its link. In the
simulator the link serves its transfers by weighted fair sharing; on a real network TCP shares a
bottleneck about equally, whatever the policy chose. With ``shape-uploads`` on a backend's link,
the gateway itself is the bottleneck: it sends the request bodies bound for that backend at the
link's ``bandwidth-mbps`` in all, split among the uploads in progress by their shares, so an
urgent upload passes the lenient ones as it would in the simulator. Set ``bandwidth-mbps`` a
little below what the path really carries, so that the queue forms here, where the shares
decide, rather than in the network, where they do not.

The accounting is the simulator's own (:class:`perllm.fair_share.Channel`, generalised processor
sharing in virtual time): an upload of weight ``w`` started at virtual time ``V0`` may have sent
``b`` bits once the link's virtual time reaches ``V0 + b / w``. The body goes in chunks of
:data:`CHUNK_BYTES`, each sent when the upload has earned it; a chunk's wait is recomputed after
every wake-up, so an upload that starts or ends meanwhile changes the pace from the next chunk
on. The total weight of the uploads in progress is what the policy's view reports as the link's
active weight (``link_active_weight``), as the simulator's view does. An upload whose reader is
slower than its share (the connection's own pace) leaves the accounting once the link has served
its share, and the rest of it goes at the reader's pace, unpaced and uncounted: the link may then
briefly carry more than its budget.

A small share is a long wait: behind one upload of weight 1, one of the least urgent weight
(1e-4) moves a 16 kB chunk about every 13 s on 100 Mbps. A backend or proxy that times out slow
request bodies can then drop it, and each paced upload holds one of the client's connections for
as long as it lasts.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Awaitable, Callable

import anyio

from perllm.fair_share import Channel

__all__ = ["CHUNK_BYTES", "MIN_SHARE", "UploadShaper"]

CHUNK_BYTES = 16 * 1024
"""The pacing grain: 1.3 ms of a 100 Mbps link."""

MIN_SHARE = 1e-6
"""The least weight an upload gets (the simulator's floor too)."""


class UploadShaper:
    """Paces the uploads over one link (see the module docstring).

    Parameters
    ----------
    bandwidth_mbps
        The budget the uploads share.
    clock, sleep
        The time source and the way to wait (injected by tests; ``time.monotonic`` and
        ``anyio.sleep`` by default).
    """

    def __init__(
        self,
        bandwidth_mbps: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        self.channel = Channel(bandwidth_mbps * 1e6)
        self.clock = clock
        self.sleep = sleep
        self._active: set[object] = set()  # uploads the link still owes bandwidth

    def _retire(self, now: float) -> None:
        """Forget the uploads whose share of the link is served by ``now``."""
        for token, _ in self.channel.pop_finished(now):
            self._active.discard(token)

    @property
    def active_weight(self) -> float:
        """The total weight of the uploads in progress."""
        self._retire(self.clock())
        return self.channel.weight_sum

    def start(self, total_bytes: int, share: float, token: object) -> float:
        """Begin an upload of ``total_bytes`` with weight ``share``; returns its starting
        virtual time ``V0``."""
        now = self.clock()
        self._retire(now)
        self.channel.start(now, max(total_bytes * 8.0, 1.0), share, token)
        self._active.add(token)
        return self.channel.virtual

    def due_s(self, token: object, start_virtual: float, share: float, sent_bytes: int) -> float:
        """When, on the clock, the upload ``token`` begun at ``start_virtual`` will have earned
        ``sent_bytes`` (if nothing starts or ends before); now or earlier if it has, or if the
        link has served its whole share already (a reader slower than its share: the rest goes
        as fast as it is read)."""
        channel = self.channel
        now = self.clock()
        self._retire(now)
        if token not in self._active:
            return now
        behind_bits = start_virtual + sent_bytes * 8.0 / share - channel.virtual
        if behind_bits <= 0.0 or channel.weight_sum <= 0.0:
            return now
        return now + behind_bits * channel.weight_sum / channel.bandwidth_bps

    async def paced(self, body: bytes, share: float) -> AsyncGenerator[bytes, None]:
        """``body`` in chunks, each yielded once the upload has earned it; an upload dropped
        half-way (the attempt cancelled) leaves the link at once. A share outside
        ``[MIN_SHARE, 1/MIN_SHARE]`` (a plugin policy's zero, say) is clamped into it, as the
        simulator does, and one that is not a number counts as 1."""
        share = min(max(share, MIN_SHARE), 1.0 / MIN_SHARE) if share == share else 1.0
        token = object()
        start_virtual = self.start(len(body), share, token)
        try:
            for offset in range(0, len(body), CHUNK_BYTES):
                end = min(offset + CHUNK_BYTES, len(body))
                # The wait is computed once and both tested and slept: computed twice (two
                # readings of the clock), time passing between them made the sleep negative.
                while (wait := self.due_s(token, start_virtual, share, end) - self.clock()) > 0:
                    await self.sleep(wait)
                yield body[offset:end]
        finally:
            self.channel.cancel(self.clock(), token)
            self._active.discard(token)
