"""How each call ends: exactly one outcome per request, counted in ``/metrics`` and logged.

Every completion call ends in exactly one of:

- ``answered``: a full answer (a non-streamed body, or a stream to its end);
- ``error``: an OpenAI-style JSON error (from the gateway, or a backend's own 4xx);
- ``stream-error``: a stream that had begun, ended by an SSE error event (backend broke, or
  the call's time limit passed);
- ``abandoned``: the client went away first; its upstream call was cancelled at once.

A call's :class:`Ticket` carries its request id (the client's ``x-request-id`` when valid,
else a generated one), its time limit and its ending; :meth:`Ticket.end` records the first
ending and ignores any later one.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from perllm.gateway.intake import ApiError

__all__ = ["OUTCOMES", "Outcome", "Ticket", "request_id"]

log = logging.getLogger(__name__)

Outcome = Literal["answered", "error", "stream-error", "abandoned"]
OUTCOMES: tuple[Outcome, ...] = ("answered", "error", "stream-error", "abandoned")
REQUEST_ID_HEADER = "x-request-id"
MAX_REQUEST_ID = 128
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=@-]+")


def request_id(headers: Mapping[str, str]) -> str:
    """The client's ``x-request-id`` if valid, else a fresh one (:class:`ApiError` 400 if bad)."""
    given = headers.get(REQUEST_ID_HEADER)
    if given is None:
        return uuid.uuid4().hex
    if not 1 <= len(given) <= MAX_REQUEST_ID or _REQUEST_ID.fullmatch(given) is None:
        raise ApiError(
            400,
            f"header {REQUEST_ID_HEADER}: expected 1 to {MAX_REQUEST_ID} characters of "
            "letters, digits and ._:/+=@-",
            "bad_header",
        )
    return given


@dataclass(slots=True)
class Ticket:
    """One call's identity, time limit and ending.

    ``on_end(outcome)`` callbacks run once, when the call ends; ``cancelled_for`` says why the
    gateway cancelled the call's upstream work (``abandoned`` or ``timeout``), if it did.
    """

    request_id: str
    limit_s: float
    started_s: float = field(default_factory=time.monotonic)
    on_end: list[Callable[[Outcome], None]] = field(default_factory=list)
    cancelled_for: Literal["abandoned", "timeout", "shutdown"] | None = None
    outcome: Outcome | None = None

    @property
    def deadline_at(self) -> float:
        """When the call's time limit passes (monotonic seconds)."""
        return self.started_s + self.limit_s

    def remaining_s(self) -> float:
        return max(self.deadline_at - time.monotonic(), 0.0)

    def end(self, outcome: Outcome, status: int | str, detail: str = "") -> None:
        """Record how the call ended (only the first call counts)."""
        if self.outcome is not None:
            return
        self.outcome = outcome
        elapsed = time.monotonic() - self.started_s
        log.info(
            "request %s %s (%s) after %.3f s%s",
            self.request_id,
            outcome,
            status,
            elapsed,
            f": {detail}" if detail else "",
        )
        for callback in self.on_end:
            callback(outcome)
