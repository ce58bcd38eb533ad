"""The policy interface shared by the simulator and the gateway, and the base that owns the
plumbing every built-in policy shares.

A policy sees the world only through a :class:`~perllm.domain.ClusterView` and learns only from
:class:`~perllm.domain.Feedback`, which arrives late: many requests are in flight before the first
one finishes. Its settings are an immutable pydantic model that validates itself; all its
randomness comes from one ``numpy.random.Generator`` made from the seed it is given.

:class:`PolicyBase` is a template: its ``select`` rebuilds what the policy keeps per server when
the server list changes (:meth:`~PolicyBase.on_servers`), sizes the learned statistics at the
first decision, when the number of servers is known (:meth:`~PolicyBase.on_begin`), applies
state restored before then (:meth:`~PolicyBase.apply_state`), and only then asks the policy's
own algorithm for a decision (:meth:`~PolicyBase.decide`). The class also says how the policy is
registered (``name``, ``summary``, ``config_type``, ``clairvoyant``):
:mod:`perllm.policies.registry` reads them, and nothing repeats them.
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


class PolicyBase:
    """A policy's plumbing, written once; a subclass keeps only its algorithm.

    Class attributes (what the registry reads): ``name`` (kebab-case, as on the command line),
    ``summary`` (one line for ``perllm policies``), ``config_type`` (its settings model) and
    ``clairvoyant`` (it reads the simulator's ground truth, so it cannot route live requests).

    Hooks, each optional but :meth:`decide`:

    - :meth:`decide`: the decision itself, called by :meth:`select` once the plumbing is done;
    - :meth:`on_servers`: rebuild what is kept per server, before the first decision and
      whenever the view's server list is another object;
    - :meth:`on_begin`: make the learned statistics for ``n_servers`` servers, once, at the
      first decision (or when :meth:`begin` is called early, as a replica adopting shared
      statistics does);
    - :meth:`apply_state` and :meth:`learned_state`: the learned state in and out.
      :meth:`restore` before the first decision holds the state (and :meth:`state` returns it
      as it was given) until :meth:`on_begin` has run, then applies it.
    """

    name: ClassVar[str]
    summary: ClassVar[str] = ""
    config_type: ClassVar[type[PolicyConfig]] = PolicyConfig
    clairvoyant: ClassVar[bool] = False

    # Plumbing state, as class-level defaults so that a subclass's __init__ need not call ours.
    _servers: object = None  # the server list the per-server tables were built for
    _begun: bool = False
    _pending: dict[str, Any] | None = None  # restored before the first decision

    def __init__(self, config: Any, seed: int) -> None:
        self.config = config

    def select(self, request: RouterRequest, view: ClusterView) -> Decision:
        if view.servers is not self._servers:
            self._servers = view.servers
            self.on_servers(view)
        if not self._begun:
            self.begin(len(view.servers))
        return self.decide(request, view)

    def begin(self, n_servers: int) -> None:
        """Make the learned statistics for ``n_servers`` servers and apply any held state (once;
        later calls do nothing)."""
        if self._begun:
            return
        self._begun = True
        self.on_begin(n_servers)
        pending, self._pending = self._pending, None
        if pending is not None:
            self.apply_state(pending)

    def state(self) -> dict[str, Any]:
        if self._pending is not None:
            return dict(self._pending)
        return self.learned_state()

    def restore(self, state: dict[str, Any]) -> None:
        """Restore learned state; applied now, or at the first decision if none was made yet.
        A state of the wrong shape is refused at once (``ValueError``, see :meth:`check_state`).
        """
        self.check_state(state)
        if self._begun:
            self.apply_state(state)
        else:
            self._pending = state

    # The hooks.

    def decide(self, request: RouterRequest, view: ClusterView) -> Decision:
        raise NotImplementedError(f"{type(self).__name__} must implement decide()")

    def on_servers(self, view: ClusterView) -> None:
        return None

    def on_begin(self, n_servers: int) -> None:
        return None

    def learned_state(self) -> dict[str, Any]:
        return {}

    def apply_state(self, state: dict[str, Any]) -> None:
        return None

    def check_state(self, state: dict[str, Any]) -> None:
        """Raise ``ValueError`` (one line) if ``state`` is not a state this policy saves."""
        return None

    def observe(self, feedback: Feedback) -> None:
        return None

    def forget(self, request: RouterRequest, decision: Decision) -> None:
        return None


class StatelessPolicy(PolicyBase):
    """Base of policies that learn nothing from feedback: no state in, none out."""

    def state(self) -> dict[str, Any]:
        return {}

    def restore(self, state: dict[str, Any]) -> None:
        return None
