"""The clairvoyant oracle: the yardstick for regret, not a deployable policy.

It is handed a :class:`~perllm.domain.ClairvoyantView`, whose ``predict`` runs the exact server
and link state forward with the true output lengths of every request in the system (but no
future arrivals). For each server it predicts the processing time ``T_s`` and energy parts, and
picks ``argmin_s { w . E_s : T_s <= deadline }``, or ``argmin_s T_s`` (the least late) when no
server meets the deadline.
"""

from __future__ import annotations

from typing import ClassVar, cast

from pydantic import Field

from perllm.domain import ClairvoyantView, ClusterView, Decision, RouterRequest
from perllm.policies.base import PolicyConfig, StatelessPolicy


class OracleConfig(PolicyConfig):
    share: float = Field(1.0, gt=0.0, description="the link share every request's upload gets")


class OraclePolicy(StatelessPolicy):
    """Minimum weighted energy among servers that meet the deadline, known exactly."""

    name: ClassVar[str] = "oracle"
    summary: ClassVar[str] = (
        "clairvoyant: exact state and output lengths, min energy meeting the deadline"
    )
    config_type: ClassVar[type[PolicyConfig]] = OracleConfig
    clairvoyant: ClassVar[bool] = True
    config: OracleConfig

    def decide(self, request: RouterRequest, view: ClusterView) -> Decision:
        predict = getattr(view, "predict", None)
        if predict is None:
            raise TypeError("the oracle needs a clairvoyant view (simulator only)")
        clairvoyant = cast(ClairvoyantView, view)
        weights = view.weights
        best_met: tuple[float, int, float] | None = None
        best_late: tuple[float, int] | None = None
        healthy = view.load_arrays().healthy
        for server in range(len(view.servers)):
            if not healthy[server]:
                continue
            outcome = clairvoyant.predict(request, server, self.config.share)
            e = outcome.energy
            cost = weights.weighted(e.transmission_j, e.inference_j, e.idle_j)
            if outcome.processing_s <= request.deadline_s:
                if best_met is None or cost < best_met[0]:
                    best_met = (cost, server, outcome.processing_s)
            elif best_late is None or outcome.processing_s < best_late[0]:
                best_late = (outcome.processing_s, server)
        if best_met is not None:
            return Decision(server=best_met[1], share=self.config.share, estimate_s=best_met[2])
        assert best_late is not None
        return Decision(server=best_late[1], share=self.config.share, estimate_s=best_late[0])
