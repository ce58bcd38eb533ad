"""One completion call, from intake to its ending: :class:`CallContext`.

A call's context owns what the gateway knows of the call: its request id, its time limit and
why the gateway cancelled its upstream work (if it did), the parsed :class:`Call`, the
:class:`~perllm.domain.RouterRequest` the policy schedules, its attempts (one per backend
tried), and the call's outcome for the recorder once it is settled. It ends exactly once, in
:meth:`CallContext.end`, which builds the call's :class:`~perllm.gateway.outcome.Ending` and
hands it to each of the call's sinks in order (see
:meth:`perllm.gateway.gateway.Gateway.open_call`): the dispatcher (the recorder and the
per-backend counts of ``/stats``), the metrics, the access log, then the call's own (its
per-key limit released). A later ``end`` changes nothing.

Who ends a call:

- the dispatcher, for an answer a backend gave: a plain one once its body is read, a stream
  once its relay has ended, however it ended (:mod:`perllm.gateway.dispatch`);
- the route, for a call no backend answered: an error, the client gone before its answer,
  the gateway stopping (:mod:`perllm.gateway.routes.completions`);
- the body limit, for a body refused by its declared size (:mod:`perllm.gateway.app`).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Literal

from perllm.domain import Feedback, RouterRequest
from perllm.gateway.feedback import Attempt
from perllm.gateway.intake import Call
from perllm.gateway.outcome import NO_BACKEND, Ending, EndingSink, Outcome, new_request_id

__all__ = ["CallContext", "Cancel"]

Cancel = Literal["abandoned", "timeout", "shutdown"]


@dataclass(eq=False, slots=True)
class CallContext:
    """One call: what the gateway knows of it, and its one ending (see the module docstring).

    ``sinks`` are handed the call's :class:`~perllm.gateway.outcome.Ending` once, in order;
    ``cancelled_for`` says why the gateway cancelled the call's upstream work (``abandoned``,
    ``timeout`` or ``shutdown``), if it did.
    """

    limit_s: float
    sinks: list[EndingSink] = field(default_factory=list)
    request_id: str = field(default_factory=new_request_id)
    started_s: float = field(default_factory=time.monotonic)
    call: Call | None = None
    request: RouterRequest | None = None
    attempts: list[Attempt] = field(default_factory=list)
    cancelled_for: Cancel | None = None
    task: asyncio.Task[object] | None = None  # the task awaiting the call's upstream work
    ending: Ending | None = None
    _feedback: Feedback | None = None
    _rejected: RouterRequest | None = None
    _settled_s: float = 0.0

    @property
    def deadline_at(self) -> float:
        """When the call's time limit passes (monotonic seconds)."""
        return self.started_s + self.limit_s

    def remaining_s(self) -> float:
        return max(self.deadline_at - time.monotonic(), 0.0)

    def interrupt(self, reason: Cancel) -> None:
        """Cancel the call's upstream work now (once), saying why in ``cancelled_for``."""
        if self.task is None or self.cancelled_for is not None:
            return
        self.cancelled_for = reason
        self.task.cancel()

    def settle(self, now: float, feedback: Feedback) -> None:
        """The call's outcome for the recorder is ``feedback`` (settled at ``now``, on the live
        view's clock): the attempt a backend answered, or the last one that failed when every
        backend failed."""
        self._feedback, self._settled_s = feedback, now

    def reject(self, now: float) -> None:
        """The call's request was refused before any attempt (at ``now``): no backend may take
        it, or admission control said no."""
        self._rejected, self._settled_s = self.request, now

    def end(
        self,
        outcome: Outcome,
        status: int | str,
        detail: str = "",
        *,
        backend: str = NO_BACKEND,
        responded: bool = True,
    ) -> bool:
        """End the call: its :class:`~perllm.gateway.outcome.Ending` to each sink, in order.

        Only the first ending counts: returns whether this one did.
        """
        if self.ending is not None:
            return False
        ending = self.ending = Ending(
            request_id=self.request_id,
            outcome=outcome,
            status=status,
            detail=detail,
            elapsed_s=time.monotonic() - self.started_s,
            backend=backend,
            responded=responded,
            feedback=self._feedback,
            rejected=self._rejected,
            settled_s=self._settled_s,
        )
        for sink in self.sinks:
            sink(ending)
        return True
