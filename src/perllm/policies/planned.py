"""``planner``: follows a plan made offline from the whole trace (a clairvoyant reference).

The policy itself is trivial and pure: it looks each request's server up in a plan,
``request id -> server index`` (``-1`` rejects). The plan is made by
:func:`perllm.planner.plan_trace`, which knows the future (every arrival and true output
length), so this is a yardstick, not a deployable policy: the runner builds the plan before
the run when the policy's name is ``planner``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from pydantic import Field

from perllm.domain import REJECT, ClusterView, Decision, RouterRequest
from perllm.policies.base import PolicyConfig, StatelessPolicy


class PlannedConfig(PolicyConfig):
    repair_rounds: int = Field(
        2,
        ge=0,
        le=20,
        description="how many times the planner re-plans after simulating its plan",
    )


class PlannedPolicy(StatelessPolicy):
    """Send each request where the plan says."""

    name: ClassVar[str] = "planner"
    summary: ClassVar[str] = (
        "clairvoyant: a plan of the whole trace, made offline and repaired by re-simulation"
    )
    config_type: ClassVar[type[PolicyConfig]] = PlannedConfig
    clairvoyant: ClassVar[bool] = True
    config: PlannedConfig

    def __init__(self, config: PlannedConfig, seed: int) -> None:
        super().__init__(config, seed)
        self._plan: dict[int, int] | None = None
        self._priorities: dict[int, int] = {}

    def load_plan(
        self, plan: Mapping[int, int], priorities: Mapping[int, int] | None = None
    ) -> None:
        """Install the plan (``request id -> server index``, ``-1`` to reject) and each
        request's queue priority (0 where none is given)."""
        self._plan = dict(plan)
        self._priorities = dict(priorities or {})

    def select(self, request: RouterRequest, view: ClusterView) -> Decision:
        # No plumbing to run: the plan alone decides (the view is not even read).
        if self._plan is None:
            raise TypeError("the planner needs a plan of the whole trace (simulator only)")
        server = self._plan[request.id]
        if server < 0:
            return REJECT
        return Decision(server=server, priority=self._priorities.get(request.id, 0))
