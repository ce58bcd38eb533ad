"""A call's upstream work under watch: cancelled at once if its client goes away, or when its
time limit passes.

:func:`watched` runs the work (scheduling, the upstream call, and for a stream its first
chunk) as a task beside a watcher of the ASGI ``http.disconnect`` message. Whichever comes first
wins: the work's answer, the client's disconnect (the work is cancelled, :class:`Abandoned` is
raised), the time limit (the work is cancelled, a ``504`` :class:`ApiError` is raised), or the
gateway's shutdown once its grace period is over (cancelled, ``503``). The
ticket's ``cancelled_for`` tells the work why it was cancelled before it is. Once a stream's
relay has begun, the streaming response watches for the disconnect and the relay for the limit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from starlette.responses import Response
from starlette.types import Receive

from perllm.gateway.dispatch import RelayResponse
from perllm.gateway.intake import ApiError
from perllm.gateway.outcome import Ticket

__all__ = ["Abandoned", "watched"]


class Abandoned(Exception):
    """The client went away before its answer was ready (its upstream work is cancelled)."""


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _stop(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait for it to end (without swallowing our own cancellation)."""
    task.cancel()
    await asyncio.wait({task})
    if task.cancelled():
        return
    if task.exception() is None:
        result = task.result()
        if isinstance(result, RelayResponse):  # it finished just as it was cancelled
            await result.close()


async def watched(
    work: Coroutine[Any, Any, Response],
    receive: Receive,
    ticket: Ticket,
    stopping: asyncio.Event,
) -> Response:
    """``work``'s response, unless its client goes away first, its time limit passes, or
    ``stopping`` is set (the gateway is shutting down: ``503``)."""
    task = asyncio.create_task(work)
    watcher = asyncio.create_task(_until_disconnect(receive))
    stop = asyncio.create_task(stopping.wait())
    try:
        done, _ = await asyncio.wait(
            {task, watcher, stop},
            timeout=ticket.remaining_s(),
            return_when=asyncio.FIRST_COMPLETED,
        )
    except BaseException:  # this handler itself is cancelled (a forced shutdown)
        ticket.cancelled_for = "shutdown"
        for pending in (task, watcher, stop):
            pending.cancel()
        raise
    await _stop(stop)
    if task in done:
        await _stop(watcher)
        return task.result()
    if watcher in done:
        ticket.cancelled_for = "abandoned"
    else:
        ticket.cancelled_for = "shutdown" if stop in done else "timeout"
    await _stop(task)
    if ticket.cancelled_for == "abandoned":
        raise Abandoned
    await _stop(watcher)
    if ticket.cancelled_for == "shutdown":
        raise ApiError(503, "the gateway is shutting down; call again", "shutting_down")
    raise ApiError(
        504,
        f"the call took longer than its time limit of {ticket.limit_s:.3f} s "
        "(min of timeouts.request-s and timeouts.deadline-factor x its deadline)",
        "timeout",
    )
