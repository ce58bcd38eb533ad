"""The policy registry: the built-in policies in one list, read top to bottom, plus the policies
other packages register under the Python entry-point group ``perllm.policies``.

A plugin package declares, in its ``pyproject.toml``::

    [project.entry-points."perllm.policies"]
    my-policy = "my_package.module:ENTRY"

where ``ENTRY`` is either a subclass of :class:`~perllm.policies.base.PolicyBase` whose class
attributes say its ``name`` (``my-policy``), ``summary`` and ``config_type`` (as the built-in
policies do), or a :class:`PolicyEntry` named ``my-policy`` (its settings model, a subclass of
:class:`~perllm.policies.base.PolicyConfig`, and its factory ``(config, seed) -> Policy``).
Once the package is installed, ``perllm simulate --policy my-policy``, ``perllm reproduce
--policies ...`` and ``perllm serve`` (``policy: my-policy``) use it unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points
from typing import Any

from pydantic import ValidationError

from perllm.cluster.settings import validation_message
from perllm.errors import InputError
from perllm.policies.base import Policy, PolicyBase, PolicyConfig
from perllm.policies.cs_ucb import CsUcbPolicy
from perllm.policies.heuristics import (
    CloudOnlyPolicy,
    EdgeOnlyPolicy,
    FeasibleEnergyPolicy,
    FeasibleLatencyPolicy,
    GreedyEnergyPolicy,
    GreedyLatencyPolicy,
    LeastLoadedPolicy,
    PrefixAffinityPolicy,
)
from perllm.policies.learning import EpsilonGreedyPolicy, Ucb1Policy
from perllm.policies.oracle import OraclePolicy
from perllm.policies.planned import PlannedPolicy
from perllm.policies.simple import RandomPolicy, RoundRobinPolicy


@dataclass(frozen=True, slots=True)
class PolicyEntry:
    name: str
    summary: str
    config: type[PolicyConfig]
    factory: Callable[[Any, int], Policy]
    clairvoyant: bool = False

    @classmethod
    def of(cls, policy: type[PolicyBase]) -> PolicyEntry:
        """The entry of a policy class, from its class attributes (``name``, ``summary``,
        ``config_type``, ``clairvoyant``); the class itself is the factory."""
        return cls(policy.name, policy.summary, policy.config_type, policy, policy.clairvoyant)

    def parameters(self) -> str:
        """``name=default`` for each parameter, kebab-case."""
        fields = self.config.model_fields
        return ", ".join(f"{k.replace('_', '-')}={v.default}" for k, v in fields.items())


BUILT_IN: tuple[type[PolicyBase], ...] = (  # the built-in policies, in the order they are listed
    CsUcbPolicy,
    RandomPolicy,
    RoundRobinPolicy,
    LeastLoadedPolicy,
    CloudOnlyPolicy,
    EdgeOnlyPolicy,
    PrefixAffinityPolicy,
    GreedyLatencyPolicy,
    GreedyEnergyPolicy,
    FeasibleEnergyPolicy,
    FeasibleLatencyPolicy,
    Ucb1Policy,
    EpsilonGreedyPolicy,
    OraclePolicy,
    PlannedPolicy,
)

ENTRIES: tuple[PolicyEntry, ...] = tuple(PolicyEntry.of(policy) for policy in BUILT_IN)

REGISTRY: dict[str, PolicyEntry] = {entry.name: entry for entry in ENTRIES}

ENTRY_POINT_GROUP = "perllm.policies"


@cache
def plugins() -> tuple[PolicyEntry, ...]:
    """The policies installed packages register under :data:`ENTRY_POINT_GROUP` (loaded once;
    a broken one is an :class:`InputError` naming it, never skipped in silence)."""
    found: list[PolicyEntry] = []
    for point in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda p: p.name):
        where = f"policy plugin {point.name!r} ({point.value})"
        try:
            entry = point.load()
        except Exception as err:  # a plugin's import can fail in any way: say which and why
            raise InputError(f"{where}: cannot be loaded: {type(err).__name__}: {err}") from None
        if isinstance(entry, type) and issubclass(entry, PolicyBase):
            if not isinstance(getattr(entry, "name", None), str):
                raise InputError(f"{where}: the policy class has no name")
            entry = PolicyEntry.of(entry)
        if not isinstance(entry, PolicyEntry):
            raise InputError(
                f"{where}: is a {type(entry).__name__}, not a PolicyEntry or a PolicyBase subclass"
            )
        if entry.name != point.name:
            raise InputError(f"{where}: its PolicyEntry is named {entry.name!r}")
        if entry.name in REGISTRY:
            raise InputError(f"{where}: the name of a built-in policy")
        if not (isinstance(entry.config, type) and issubclass(entry.config, PolicyConfig)):
            raise InputError(f"{where}: config must be a subclass of PolicyConfig")
        found.append(entry)
    return tuple(found)


def all_entries() -> tuple[PolicyEntry, ...]:
    """Built-in policies, then installed plugins."""
    return ENTRIES + plugins()


def lookup(name: str) -> PolicyEntry:
    """The entry of a built-in or plugin policy (one-line :class:`InputError` if unknown)."""
    entry = REGISTRY.get(name)
    if entry is not None:
        return entry
    for plugin in plugins():
        if plugin.name == name:
            return plugin
    known = ", ".join(e.name for e in all_entries())
    raise InputError(f"--policy: unknown policy {name!r}; known: {known}")


def make_policy(
    name: str, params: dict[str, Any] | None = None, seed: int = 0, *, live: bool = False
) -> Policy:
    """Build a registered policy from its parameters (one-line :class:`InputError` if bad).

    ``live``: the policy will route real requests (the gateway), where clairvoyant policies,
    which read the simulator's ground truth, cannot run.
    """
    entry = lookup(name)
    if live and entry.clairvoyant:
        raise InputError(
            f"policy: {name!r} is clairvoyant (it reads the simulator's ground truth) and cannot "
            "route live requests; choose an online policy (perllm policies)"
        )
    try:
        config = entry.config.model_validate(params or {})
    except ValidationError as err:
        raise InputError(validation_message(err, f"policy {name}")) from None
    return entry.factory(config, seed)
