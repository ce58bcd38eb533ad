"""How each call ends: exactly one outcome per request, counted in ``/metrics`` and logged.

Every completion call ends in exactly one of:

- ``answered``: a full answer (a non-streamed body, or a stream to its end);
- ``error``: an OpenAI-style JSON error (from the gateway, or a backend's own 4xx);
- ``stream-error``: a stream that had begun, ended by an SSE error event (backend broke, or
  the call's time limit passed);
- ``abandoned``: the client went away first; its upstream call was cancelled at once.

The :class:`Ending` is that one record of a call's end, built once by
:meth:`perllm.gateway.call.CallContext.end` and handed to each sink of the call: the
dispatcher (the recorder), the metrics, and the access log (:func:`access_log`). A call's
request id is the client's ``x-request-id`` when valid (:func:`request_id`), else a generated
one.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from perllm.domain import Feedback, RouterRequest
from perllm.gateway.intake import ApiError

__all__ = [
    "NO_BACKEND",
    "OUTCOMES",
    "REQUEST_ID_HEADER",
    "Ending",
    "EndingSink",
    "Outcome",
    "access_log",
    "new_request_id",
    "request_id",
]

log = logging.getLogger(__name__)

Outcome = Literal["answered", "error", "stream-error", "abandoned"]
OUTCOMES: tuple[Outcome, ...] = ("answered", "error", "stream-error", "abandoned")
REQUEST_ID_HEADER = "x-request-id"
MAX_REQUEST_ID = 128
NO_BACKEND = "none"  # the backend of a call that no backend answered
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=@-]+")


def new_request_id() -> str:
    """A fresh request id (for a call whose client sent none)."""
    return uuid.uuid4().hex


def request_id(headers: Mapping[str, str]) -> str:
    """The client's ``x-request-id`` if valid, else a fresh one (:class:`ApiError` 400 if bad)."""
    given = headers.get(REQUEST_ID_HEADER)
    if given is None:
        return new_request_id()
    if not 1 <= len(given) <= MAX_REQUEST_ID or _REQUEST_ID.fullmatch(given) is None:
        raise ApiError(
            400,
            f"header {REQUEST_ID_HEADER}: expected 1 to {MAX_REQUEST_ID} characters of "
            "letters, digits and ._:/+=@-",
            "bad_header",
        )
    return given


@dataclass(frozen=True, slots=True)
class Ending:
    """How one call ended.

    ``status`` is the HTTP status the client got, or for a stream that had begun why it ended
    (``200``, ``error``, ``timeout``, ``shutdown``, ``client-gone``), or why no answer went out
    (``client-gone``, ``cancelled``). ``backend`` names the backend whose answer the client got
    (:data:`NO_BACKEND` when none did). ``responded`` says whether an answer went out (a status
    line, or the beginning of a stream): only those are counted per backend and status.

    ``feedback`` is the call's outcome for the recorder: the attempt a backend answered, or the
    last one that failed when every backend failed (``None`` when the call ended without
    either); ``rejected`` is the request refused before any attempt (no backend, or admission
    control). ``settled_s`` is when either was settled, on the live view's clock.
    """

    request_id: str
    outcome: Outcome
    status: int | str
    detail: str
    elapsed_s: float
    backend: str = NO_BACKEND
    responded: bool = True
    feedback: Feedback | None = None
    rejected: RouterRequest | None = None
    settled_s: float = 0.0


EndingSink = Callable[[Ending], None]


def access_log(ending: Ending) -> None:
    """The access log's line for a call (a sink of its ending): its request id, outcome,
    status, duration and what ended it."""
    log.info(
        "request %s %s (%s) after %.3f s%s",
        ending.request_id,
        ending.outcome,
        ending.status,
        ending.elapsed_s,
        f": {ending.detail}" if ending.detail else "",
    )
