"""A background task of the gateway's (health checks, scrapes, state syncs): started once,
cancelled and awaited on stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ["STOP_S", "Background"]

log = logging.getLogger(__name__)

STOP_S = 5.0  # how long a cancelled task may take to end


class Background:
    """One named task, run from :meth:`start` until :meth:`stop`."""

    def __init__(self, name: str, run: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self.name = name
        self.run = run
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name=self.name)

    async def stop(self) -> None:
        """Cancel the task and wait for it, at most :data:`STOP_S`. The cancellation is
        repeated until the task ends: a library may swallow one (redis-py's asyncio client can,
        mid-command), and the task would then run on. One still running is left behind, logged
        with where it is."""
        task, self._task = self._task, None
        if task is None:
            return
        deadline = asyncio.get_running_loop().time() + STOP_S
        while not task.done() and asyncio.get_running_loop().time() < deadline:
            task.cancel()
            await asyncio.wait({task}, timeout=0.1)
        if not task.done():
            where = "; ".join(
                f"{f.f_code.co_filename}:{f.f_lineno} {f.f_code.co_name}" for f in task.get_stack()
            )
            log.warning("%s did not stop within %g s (at %s)", self.name, STOP_S, where)
            return
        with contextlib.suppress(asyncio.CancelledError):
            task.result()
