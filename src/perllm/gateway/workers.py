"""``perllm serve --workers N``: N gateway processes on one machine, one listening socket.

The parent binds the socket, then forks the workers; each inherits the socket and runs its own
gateway (its own event loop, policy and upstream clients), and the kernel spreads incoming
connections over the processes accepting on it. The workers share what they learn and their
load through the state store (:mod:`perllm.gateway.shared_state`), which ``--workers`` above 1
therefore requires.

The workers run in their own process group, so a Ctrl-C reaches the parent only; the parent
passes each SIGINT or SIGTERM on to every worker once (the first drains them gracefully, a
second forces them down, as for a single gateway). On the first, the parent also closes its own
copy of the listening socket, so that once the workers have closed theirs a new connection is
refused rather than left unanswered in the kernel's queue. A worker that dies while no stop was
asked for is restarted after :data:`RESTART_DELAY_S`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from types import FrameType

__all__ = ["RESTART_DELAY_S", "run_workers"]

log = logging.getLogger(__name__)

RESTART_DELAY_S = 1.0


def _spawn(index: int, target: Callable[[], None]) -> int:
    pid = os.fork()
    if pid:
        return pid
    code = 0
    try:  # the worker: its own process group, default signal handling until its loop runs
        os.setpgid(0, 0)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        target()
    except BaseException:
        log.exception("worker %d failed", index)
        code = 1
    finally:
        logging.shutdown()
        os._exit(code)


def run_workers(
    count: int, target: Callable[[], None], listener: socket.socket | None = None
) -> int:
    """Run ``target`` in ``count`` forked workers until they stop; returns the exit code.
    ``listener``: the socket they serve, closed here on the first stop signal."""
    children: dict[int, int] = {}
    stopping = False

    def forward(sig: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        if listener is not None:
            listener.close()
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for index in range(count):
            children[_spawn(index, target)] = index
        failed = False
        while children:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            index_or_none = children.pop(pid, None)
            if index_or_none is None:
                continue
            code = os.waitstatus_to_exitcode(status)
            failed = failed or code != 0
            if not stopping:
                log.warning(
                    "worker %d (pid %d) exited with %d: restarting it", index_or_none, pid, code
                )
                time.sleep(RESTART_DELAY_S)
                if not stopping:
                    children[_spawn(index_or_none, target)] = index_or_none
        return 1 if failed and not stopping else 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
