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
- energy (:mod:`perllm.physics`): transmission = ``tx_power_w * (transfer - rtt)`` (modelled);
  inference = the call's share of the energy measured by the backend's ``power-source``
  (:mod:`perllm.gateway.energy`, provisional at the call's end) where there is one and it has
  measured a busy interval; else modelled, ``busy_w(batch) * service / batch`` with the power
  profile and ``batch`` the requests in flight on the backend when the call was sent (itself
  included); idle = 0: a backend's idle energy belongs to no call.

Output tokens come from the upstream ``usage`` when present, else are estimated: one token per
streamed content event, or ``characters / CHARS_PER_TOKEN`` (four) of a non-streamed answer.
The prompt tokens a backend served from its prefix cache come from the same ``usage``
(``prompt_tokens_details.cached_tokens``), else are 0.
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

__all__ = [
    "ENERGY_KEY",
    "Attempt",
    "count_events",
    "energy_j",
    "make_feedback",
    "tokens_from_body",
    "tokens_from_sse",
    "with_energy",
    "with_stream_energy",
]

# The key under ``usage`` where an answer carries its energy: perllm's own, which OpenAI clients
# keep as an unknown field.
ENERGY_KEY = "perllm"


@dataclass(slots=True)
class Attempt:
    """One try of a request on one backend (mutable while it runs).

    ``view_tokens`` counts the output tokens added to the live view's tokens in flight so far
    (removed again, with the prompt, when the attempt ends); ``feedback`` is the attempt's
    :class:`Feedback` once it has been accounted for (``None`` while it runs, and for one
    abandoned).
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
    feedback: Feedback | None = None
    cached_tokens: int = 0


def make_feedback(
    attempt: Attempt,
    spec: ServerSpec,
    link: LinkSpec,
    bandwidth_mbps: float,
    measured_j: float | None,
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
    modelled = physics.batch_share_j(spec.power.busy_w(batch), service_s, batch)
    energy = EnergyParts(
        transmission_j=physics.transmission_j(
            link.tx_power_w, physics.wire_s(total_bytes, bandwidth_mbps)
        ),
        inference_j=modelled if measured_j is None else measured_j,
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
        cached_tokens=attempt.cached_tokens,
    )


def count_events(chunk: bytes) -> int:
    """SSE ``data:`` events in a chunk (an estimate of the tokens it carries)."""
    return chunk.count(b"data:")


def cached_from_usage(usage: Any) -> int:
    """Prompt tokens a backend served from its prefix cache, as OpenAI's ``usage`` reports them
    (``prompt_tokens_details.cached_tokens``, which vLLM and SGLang fill); 0 if absent."""
    details = usage.get("prompt_tokens_details") if isinstance(usage, dict) else None
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return cached if isinstance(cached, int) and cached > 0 else 0


def tokens_from_sse(tail: bytes, events: int) -> tuple[int, int]:
    """Completion tokens of a stream and its prompt tokens served from cache: its ``usage`` if
    the tail holds one, else an estimate (and none cached).

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
            return int(usage["completion_tokens"]), cached_from_usage(usage)
    return max(events - 2, 0), 0


def tokens_from_body(content: bytes) -> tuple[int, int]:
    """Completion tokens of a non-streamed answer and its prompt tokens served from cache:
    ``usage`` if present, else ``chars / CHARS_PER_TOKEN`` (and none cached)."""
    try:
        body: Any = json.loads(content)
    except ValueError:
        return 0, 0
    if not isinstance(body, dict):
        return 0, 0
    usage = body.get("usage")
    if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
        return int(usage["completion_tokens"]), cached_from_usage(usage)
    chars = 0
    for choice in body.get("choices") or []:
        if isinstance(choice, dict):
            message = choice.get("message") or {}
            text = choice.get("text") or (
                message.get("content") if isinstance(message, dict) else ""
            )
            chars += len(text) if isinstance(text, str) else 0
    return math.ceil(chars / CHARS_PER_TOKEN), 0


def energy_j(energy: EnergyParts) -> float:
    """A call's energy as its answer reports it: transmission plus inference, in joules."""
    return round(energy.transmission_j + energy.inference_j, 6)


def _energy_usage(body: Any, energy: EnergyParts, source: str) -> bool:
    usage = body.get("usage") if isinstance(body, dict) else None
    if not isinstance(usage, dict):
        return False
    usage[ENERGY_KEY] = {
        "energy_j": energy_j(energy),
        "inference_j": round(energy.inference_j, 6),
        "transmission_j": round(energy.transmission_j, 6),
        "energy_source": source,
    }
    return True


def with_energy(content: bytes, energy: EnergyParts, source: str) -> bytes:
    """A non-streamed answer with its energy under ``usage.perllm`` (joules in all, by part,
    and whether the inference part is ``measured`` or ``modelled``); unchanged if it has no
    ``usage``."""
    try:
        body = json.loads(content)
    except ValueError:
        return content
    if not _energy_usage(body, energy, source):
        return content
    return json.dumps(body, separators=(",", ":")).encode()


def with_stream_energy(chunk: bytes, energy: EnergyParts, source: str) -> bytes:
    """A chunk of a stream with the energy added to the ``usage`` of its usage event (the one
    ``stream_options.include_usage`` asks for), if it holds that event whole."""
    if b'"usage"' not in chunk:
        return chunk
    events = chunk.split(b"\n\n")
    for i, event in enumerate(events):
        text = event.strip()
        if not text.startswith(b"data:") or b'"usage"' not in text:
            continue
        try:
            body = json.loads(text[5:])
        except ValueError:
            continue
        if _energy_usage(body, energy, source):
            events[i] = b"data: " + json.dumps(body, separators=(",", ":")).encode()
            return b"\n\n".join(events)
    return chunk
