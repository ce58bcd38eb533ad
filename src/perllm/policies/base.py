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
:mod:`perllm.policies.registry` reads them, and nothing repeats them. :class:`StatisticsPolicy`
adds the learned state of a policy whose statistics are additive totals
(:mod:`perllm.policies.mergeable`): saved, checked at restore and shared with other routers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Protocol, runtime_checkable

from perllm.cluster.settings import KebabModel
from perllm.domain import ClusterView, Decision, Feedback, RouterRequest
from perllm.policies.mergeable import StatisticSet


class PolicyConfig(KebabModel):
    """Base of every policy's settings: frozen, no unknown keys, kebab-case in YAML/CLI. Each
    setting states its meaning (``Field(description=...)``), which ``perllm policies`` prints."""


PRIOR_OUTPUT_TOKENS = "a class's expected output tokens until its first answer"
"""The meaning of ``prior-output-tokens``, a setting of every policy that learns output lengths."""


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


class StatisticsPolicy(PolicyBase):
    """Base of a policy whose learned state is additive statistics, a
    :class:`~perllm.policies.mergeable.StatisticSet`: its state, the check of a state restored
    and the totals it shares with other routers
    (:class:`~perllm.policies.mergeable.SharedStatistics`) are written here once.

    The state is ``{"policy": NAME, SIZE: n, "totals": {NAME: number}}``, ``SIZE`` being
    ``size_name`` (what the statistics are sized by: ``n_servers``, or ``n_arms``), and empty
    before the first decision. A state is checked when it is restored: its fields, and every
    total adopted by statistics of its size (:meth:`fresh_statistics`); applied, it must have
    this cluster's size. Hooks: :meth:`statistics`, :meth:`fresh_statistics`, :meth:`size`.
    """

    size_name: ClassVar[str] = "n_servers"

    def statistics(self) -> StatisticSet | None:
        """The learned statistics (``None`` before the first decision)."""
        raise NotImplementedError(f"{type(self).__name__} must implement statistics()")

    def fresh_statistics(self, size: int) -> StatisticSet:
        """Statistics of ``size`` that have learned nothing (to check a state's totals)."""
        raise NotImplementedError(f"{type(self).__name__} must implement fresh_statistics()")

    def size(self) -> int:
        """The size of the learned statistics (after the first decision)."""
        raise NotImplementedError(f"{type(self).__name__} must implement size()")

    def learned_state(self) -> dict[str, Any]:
        statistics = self.statistics()
        if statistics is None:
            return {}
        return {"policy": self.name, self.size_name: self.size(), "totals": statistics.totals()}

    def check_state(self, state: dict[str, Any]) -> None:
        if not state:
            return  # a policy that never decided saves nothing
        fields = ("policy", self.size_name, "totals")
        for field in (*state, *fields):
            if field not in fields:
                raise ValueError(f"{self.name} state: {field}: not a field of it")
            if field not in state:
                raise ValueError(f"{self.name} state: {field}: missing")
        if state["policy"] != self.name:
            raise ValueError(f"{self.name} state: policy: {state['policy']!r}, not {self.name!r}")
        size, totals = state[self.size_name], state["totals"]
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"{self.name} state: {self.size_name}: {size!r}, not a count")
        if not isinstance(totals, dict):
            raise ValueError(f"{self.name} state: totals: not a mapping of names to numbers")
        try:
            self.fresh_statistics(size).adopt(totals, strict=True)
        except ValueError as err:
            raise ValueError(f"{self.name} state: totals: {err}") from None

    def apply_state(self, state: dict[str, Any]) -> None:
        if not state:
            return
        statistics = self.statistics()
        assert statistics is not None
        if state[self.size_name] != self.size():
            noun = self.size_name.removeprefix("n_")
            raise ValueError(
                f"saved state has {state[self.size_name]} {noun}, this cluster has {self.size()}"
            )
        statistics.adopt(state["totals"], strict=True)

    def shared_stats(self) -> dict[str, float]:
        """The learned statistics as additive totals (a state restored but not yet applied:
        its totals)."""
        if self._pending is not None:
            return dict(self._pending.get("totals", {}))
        statistics = self.statistics()
        return statistics.totals() if statistics is not None else {}

    def adopt_shared_stats(self, totals: Mapping[str, float], n_servers: int) -> None:
        """Replace the learned statistics by ``totals`` (for a cluster of ``n_servers``)."""
        self.begin(n_servers)
        statistics = self.statistics()
        assert statistics is not None
        statistics.adopt(totals)
