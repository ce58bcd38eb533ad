"""What the gateway learns from one attempt: timings, tokens and energy, as a ``Feedback``.

Times (seconds, from the view's monotonic clock): ``arrival`` when the call came in, ``sent``
when it went upstream, ``first_byte`` when the first body byte came back, ``end`` at the last.

- processing time = ``end - arrival`` (the deadline is checked against it);
- transfer (estimate) = ``(request_bytes + response_bytes) * 8 / bandwidth + rtt`` with the
  link's current bandwidth estimate, as if alone on the link
  (:func:`perllm.physics.transfer_s`); only its wire part (without the RTT) costs energy;
- streamed calls: prefill = ``first_byte - sent`` (the time to the first token, queueing
  included: the gateway cannot split them, so ``queue_s`` is ``nan``), decode =
  ``end - first_byte``; non-streamed calls leave both ``nan``;
- service time = ``max(end - sent - transfer, 0)``;
- energy (:mod:`perllm.physics`): transmission = ``tx_power_w * (transfer - rtt)``; inference =
  ``P * service / batch``
  where ``P`` is the backend's measured power (Prometheus ``DCGM_FI_DEV_POWER_USAGE``) when
  configured, else the power profile's ``busy_w(batch)``, and ``batch`` the number of this
  gateway's requests in flight on the backend when the call was sent (itself included);
  idle = 0: a gateway does not see a backend's idle periods or the other clients sharing it.

Output tokens come from the upstream ``usage`` when present, else are estimated: one token per
streamed content event, or ``characters / CHARS_PER_TOKEN`` (four) of a non-streamed answer.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from perllm import physics
from perllm.domain import (
    CHARS_PER_TOKEN,
    Decision,
    EnergyParts,
    Feedback,
    LinkSpec,
    RouterRequest,
    ServerSpec,
)

__all__ = ["Attempt", "count_events", "make_feedback", "tokens_from_body", "tokens_from_sse"]


@dataclass(slots=True)
class Attempt:
    """One try of a request on one backend (mutable while it runs).

    ``view_tokens`` counts the output tokens added to the live view's tokens in flight so far
    (removed again, with the prompt, when the attempt ends).
    """

    request: RouterRequest
    decision: Decision
    batch: int
    sent_s: float
    first_byte_s: float = math.nan
    end_s: float = math.nan
    response_bytes: int = 0
    output_tokens: int = 0
    streamed: bool = False
    view_tokens: int = 0


def make_feedback(
    attempt: Attempt,
    spec: ServerSpec,
    link: LinkSpec,
    bandwidth_mbps: float,
    power_w: float | None,
    *,
    failed: bool = False,
) -> Feedback:
    """The :class:`Feedback` of a finished attempt (see the module docstring)."""
    request = attempt.request
    total_bytes = request.request_bytes + attempt.response_bytes
    transfer_s = physics.transfer_s(total_bytes, bandwidth_mbps, link.rtt_s, 1.0, 0.0)
    processing_s = attempt.end_s - request.arrival_s
    service_s = max(attempt.end_s - attempt.sent_s - transfer_s, 0.0)
    batch = max(attempt.batch, 1)
    watts = power_w if power_w is not None else spec.power.busy_w(batch)
    energy = EnergyParts(
        transmission_j=physics.transmission_j(
            link.tx_power_w, physics.wire_s(total_bytes, bandwidth_mbps)
        ),
        inference_j=physics.batch_share_j(watts, service_s, batch),
        idle_j=0.0,
    )
    streamed = attempt.streamed and not math.isnan(attempt.first_byte_s)
    return Feedback(
        request=request,
        decision=attempt.decision,
        processing_s=processing_s,
        transfer_s=transfer_s,
        queue_s=math.nan,
        prefill_s=attempt.first_byte_s - attempt.sent_s if streamed else math.nan,
        decode_s=attempt.end_s - attempt.first_byte_s if streamed else math.nan,
        output_tokens=attempt.output_tokens,
        energy=energy,
        met=not failed and processing_s <= request.deadline_s,
        failed=failed,
    )


def count_events(chunk: bytes) -> int:
    """SSE ``data:`` events in a chunk (an estimate of the tokens it carries)."""
    return chunk.count(b"data:")


def tokens_from_sse(tail: bytes, events: int) -> int:
    """Completion tokens of a stream: its ``usage`` if the tail holds one, else an estimate.

    ``events`` is the count of ``data:`` events seen; the ``[DONE]`` marker and the first
    (role-only) event carry no token.
    """
    for event in reversed(tail.split(b"\n\n")):
        text = event.strip()
        if b'"usage"' not in text or not text.startswith(b"data:"):
            continue
        try:
            usage = json.loads(text[5:]).get("usage")
        except (ValueError, AttributeError):
            continue
        if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
            return int(usage["completion_tokens"])
    return max(events - 2, 0)


def tokens_from_body(content: bytes) -> int:
    """Completion tokens of a non-streamed answer: ``usage`` if present, else
    ``chars / CHARS_PER_TOKEN``."""
    try:
        body: Any = json.loads(content)
    except ValueError:
        return 0
    if not isinstance(body, dict):
        return 0
    usage = body.get("usage")
    if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
        return int(usage["completion_tokens"])
    chars = 0
    for choice in body.get("choices") or []:
        if isinstance(choice, dict):
            message = choice.get("message") or {}
            text = choice.get("text") or (
                message.get("content") if isinstance(message, dict) else ""
            )
            chars += len(text) if isinstance(text, str) else 0
    return math.ceil(chars / CHARS_PER_TOKEN)
