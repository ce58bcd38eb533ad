"""The policy interface shared by the simulator and the gateway.

A policy sees the world only through a :class:`~perllm.domain.ClusterView` and learns only from
:class:`~perllm.domain.Feedback`, which arrives late: many requests are in flight before the first
one finishes. Its settings are an immutable pydantic model that validates itself; all its
randomness comes from one ``numpy.random.Generator`` made from the seed it is given.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol, runtime_checkable

from perllm.cluster.settings import KebabModel
from perllm.domain import ClusterView, Decision, Feedback, RouterRequest


class PolicyConfig(KebabModel):
    """Base of every policy's settings: frozen, no unknown keys, kebab-case in YAML/CLI."""


@runtime_checkable
class Policy(Protocol):
    """``select`` chooses a server (and share) for a request; ``observe`` learns from feedback."""

    name: ClassVar[str]

    def select(self, request: RouterRequest, view: ClusterView) -> Decision: ...

    def observe(self, feedback: Feedback) -> None: ...

    def forget(self, request: RouterRequest, decision: Decision) -> None:
        """A request placed by ``decision`` ended without an outcome (its caller went away, or
        the gateway shut down): drop what was kept for it, and learn nothing from it."""
        ...

    def state(self) -> dict[str, Any]:
        """Learned state as JSON-ready data (empty for policies that learn nothing)."""
        ...

    def restore(self, state: dict[str, Any]) -> None: ...


class StatelessPolicy:
    """Mixin for policies that learn nothing from feedback."""

    def observe(self, feedback: Feedback) -> None:
        return None

    def forget(self, request: RouterRequest, decision: Decision) -> None:
        return None

    def state(self) -> dict[str, Any]:
        return {}

    def restore(self, state: dict[str, Any]) -> None:
        return None
