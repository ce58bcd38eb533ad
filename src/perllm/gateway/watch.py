"""A call's upstream work under watch: cancelled at once if its client goes away, when its time
limit passes, or when the gateway must stop.

:func:`watched` awaits the work (scheduling, the upstream call, and for a stream its first
chunk) in the request's own task, with a watcher of the ASGI ``http.disconnect`` message
beside it and one timer for the time limit. Whichever comes first wins: the work's answer, the
client's disconnect (the work is cancelled, :class:`Abandoned` is raised), the time limit
(cancelled, a ``504`` :class:`ApiError`), or the gateway's shutdown once its grace period is
over (cancelled, ``503``; see :meth:`~perllm.gateway.call.CallContext.interrupt`). The call's
``cancelled_for`` tells the work why it is cancelled before it is. Once a stream's relay has
begun, the streaming response watches for the disconnect and the relay for the limit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, MutableSet

from starlette.responses import Response
from starlette.types import Receive

from perllm.gateway.call import CallContext
from perllm.gateway.intake import ApiError

__all__ = ["Abandoned", "watched"]


class Abandoned(Exception):
    """The client went away before its answer was ready (its upstream work is cancelled)."""


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def watched(
    work: Awaitable[Response],
    receive: Receive,
    ctx: CallContext,
    waiting: MutableSet[CallContext],
) -> Response:
    """``work``'s response, unless its client goes away first, its time limit passes, or the
    gateway interrupts the calls in ``waiting`` (where ``ctx`` is while it waits)."""
    task = asyncio.current_task()
    assert task is not None
    watcher = asyncio.create_task(_until_disconnect(receive))

    def client_gone(done: asyncio.Task[None]) -> None:
        if not done.cancelled():
            ctx.interrupt("abandoned")

    watcher.add_done_callback(client_gone)
    timer = asyncio.get_running_loop().call_later(ctx.remaining_s(), ctx.interrupt, "timeout")
    ctx.task = task
    waiting.add(ctx)
    try:
        return await work
    except asyncio.CancelledError:
        reason = ctx.cancelled_for
        if reason is None or task.uncancel() > 0:  # cancelled from outside: let it through
            raise
        if reason == "abandoned":
            raise Abandoned from None
        if reason == "shutdown":
            raise ApiError(
                503, "the gateway is shutting down; call again", "shutting_down"
            ) from None
        raise ApiError(
            504,
            f"the call took longer than its time limit of {ctx.limit_s:.3f} s "
            "(min of timeouts.request-s and timeouts.deadline-factor x its deadline)",
            "timeout",
        ) from None
    finally:
        ctx.task = None
        waiting.discard(ctx)
        timer.cancel()
        watcher.cancel()
