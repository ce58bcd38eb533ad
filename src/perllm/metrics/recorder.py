"""The metrics recorder, shared by the simulator and the gateway.

Every hook takes the time as an argument (virtual seconds in the simulator, wall seconds in the
gateway), so the recorder never reads a clock itself.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from perllm.domain import Feedback, RouterRequest, ServerSpec

# Columns of a per-request record, in export order.
COLUMNS: tuple[str, ...] = (
    "id",
    "service_class",
    "server",
    "tier",
    "arrival_s",
    "finish_s",
    "processing_s",
    "deadline_s",
    "met",
    "rejected",
    "failed",
    "transfer_s",
    "queue_s",
    "prefill_s",
    "decode_s",
    "prompt_tokens",
    "output_tokens",
    "transmission_j",
    "inference_j",
    "idle_j",
    "oracle_weighted_j",
    "oracle_met",
)


@dataclass(slots=True)
class Recorder:
    """Collects one record per request, column-wise (cheap to append, cheap to summarise)."""

    servers: Sequence[ServerSpec]
    columns: dict[str, list[float | int | str | bool]] = field(init=False)
    server_extra_idle_j: dict[str, float] = field(default_factory=dict)
    horizon_s: float = 0.0
    # Why a request was refused, by id, where a reason was given (e.g. it fits no server).
    reasons: dict[int, str] = field(default_factory=dict)
    # Prompt tokens a server took from its prefix cache instead of prefilling, by id (where any).
    cached_tokens: dict[int, int] = field(default_factory=dict)
    _oracle: dict[int, tuple[float, bool]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.columns = {name: [] for name in COLUMNS}

    def on_oracle(self, request: RouterRequest, weighted_j: float, met: bool) -> None:
        """What the clairvoyant oracle would have achieved for ``request`` (for regret)."""
        self._oracle[request.id] = (weighted_j, met)

    def on_reject(self, now: float, request: RouterRequest, reason: str = "") -> None:
        """A request refused: by the policy, or (``reason``) because it cannot be served."""
        if reason:
            self.reasons[request.id] = reason
        self._append(request, now, "", "", rejected=True)

    def on_feedback(self, now: float, feedback: Feedback) -> None:
        spec = self.servers[feedback.decision.server]
        self._append(feedback.request, now, spec.name, spec.tier, feedback=feedback)

    def on_end(self, now: float, server_trailing_idle_j: dict[str, float]) -> None:
        """Close the run: its horizon and each server's idle energy not attributed to requests."""
        self.horizon_s = now
        self.server_extra_idle_j = dict(server_trailing_idle_j)

    def _append(
        self,
        request: RouterRequest,
        now: float,
        server: str,
        tier: str,
        *,
        rejected: bool = False,
        feedback: Feedback | None = None,
    ) -> None:
        col = self.columns
        col["id"].append(request.id)
        col["service_class"].append(request.service_class)
        col["server"].append(server)
        col["tier"].append(tier)
        col["arrival_s"].append(request.arrival_s)
        col["finish_s"].append(now)
        col["deadline_s"].append(request.deadline_s)
        col["rejected"].append(rejected)
        col["prompt_tokens"].append(request.prompt_tokens)
        oracle_j, oracle_met = self._oracle.pop(request.id, (math.nan, False))
        col["oracle_weighted_j"].append(oracle_j)
        col["oracle_met"].append(oracle_met)
        if feedback is None:
            for name in ("processing_s", "transfer_s", "queue_s", "prefill_s", "decode_s"):
                col[name].append(math.nan)
            for name in ("transmission_j", "inference_j", "idle_j"):
                col[name].append(0.0)
            col["met"].append(False)
            col["failed"].append(False)
            col["output_tokens"].append(0)
            return
        if feedback.cached_tokens:
            self.cached_tokens[request.id] = feedback.cached_tokens
        col["processing_s"].append(feedback.processing_s)
        col["transfer_s"].append(feedback.transfer_s)
        col["queue_s"].append(feedback.queue_s)
        col["prefill_s"].append(feedback.prefill_s)
        col["decode_s"].append(feedback.decode_s)
        col["met"].append(feedback.met)
        col["failed"].append(feedback.failed)
        col["output_tokens"].append(feedback.output_tokens)
        col["transmission_j"].append(feedback.energy.transmission_j)
        col["inference_j"].append(feedback.energy.inference_j)
        col["idle_j"].append(feedback.energy.idle_j)

    def __len__(self) -> int:
        return len(self.columns["id"])

    def prefill_saved(self) -> tuple[int, int]:
        """Prompt tokens taken from prefix caches, and all the prompt tokens of the requests
        served (refused ones excluded)."""
        col = self.columns
        served = sum(
            int(p) for p, r in zip(col["prompt_tokens"], col["rejected"], strict=True) if not r
        )
        return sum(self.cached_tokens.values()), served
