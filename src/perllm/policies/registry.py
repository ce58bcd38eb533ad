"""The policy registry: the built-in policies in one list, read top to bottom, plus the policies
other packages register under the Python entry-point group ``perllm.policies``.

A plugin package declares, in its ``pyproject.toml``::

    [project.entry-points."perllm.policies"]
    my-policy = "my_package.module:ENTRY"

where ``ENTRY`` is a :class:`PolicyEntry` named ``my-policy`` (its settings model, a subclass of
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
from perllm.policies.base import Policy, PolicyConfig
from perllm.policies.cs_ucb import CsUcbConfig, CsUcbPolicy
from perllm.policies.heuristics import (
    CloudOnlyPolicy,
    EdgeOnlyPolicy,
    FeasibleEnergyPolicy,
    FeasibleLatencyPolicy,
    GreedyConfig,
    GreedyEnergyPolicy,
    GreedyLatencyPolicy,
    LeastLoadedPolicy,
    LoadConfig,
)
from perllm.policies.learning import (
    EpsilonGreedyConfig,
    EpsilonGreedyPolicy,
    Ucb1Config,
    Ucb1Policy,
)
from perllm.policies.oracle import OracleConfig, OraclePolicy
from perllm.policies.planned import PlannedConfig, PlannedPolicy
from perllm.policies.simple import RandomConfig, RandomPolicy, RoundRobinConfig, RoundRobinPolicy


@dataclass(frozen=True, slots=True)
class PolicyEntry:
    name: str
    summary: str
    config: type[PolicyConfig]
    factory: Callable[[Any, int], Policy]
    clairvoyant: bool = False

    def parameters(self) -> str:
        """``name=default`` for each parameter, kebab-case."""
        fields = self.config.model_fields
        return ", ".join(f"{k.replace('_', '-')}={v.default}" for k, v in fields.items())


ENTRIES: tuple[PolicyEntry, ...] = (  # the built-in policies
    PolicyEntry(
        "cs-ucb",
        "PerLLM: per-class UCB over (server, share) arms with constraint satisfaction",
        CsUcbConfig,
        CsUcbPolicy,
    ),
    PolicyEntry("random", "uniformly random server", RandomConfig, RandomPolicy),
    PolicyEntry("round-robin", "servers in turn", RoundRobinConfig, RoundRobinPolicy),
    PolicyEntry("least-loaded", "join the shortest queue", LoadConfig, LeastLoadedPolicy),
    PolicyEntry("cloud-only", "every request to the cloud", LoadConfig, CloudOnlyPolicy),
    PolicyEntry("edge-only", "every request to the least-loaded edge", LoadConfig, EdgeOnlyPolicy),
    PolicyEntry(
        "greedy-latency", "minimum estimated processing time", GreedyConfig, GreedyLatencyPolicy
    ),
    PolicyEntry(
        "greedy-energy",
        "minimum estimated energy, deadlines ignored",
        GreedyConfig,
        GreedyEnergyPolicy,
    ),
    PolicyEntry(
        "feasible-energy",
        "least estimated marginal energy among servers estimated to meet the deadline",
        GreedyConfig,
        FeasibleEnergyPolicy,
    ),
    PolicyEntry(
        "feasible-latency",
        "least-loaded among servers estimated to meet the deadline",
        GreedyConfig,
        FeasibleLatencyPolicy,
    ),
    PolicyEntry("ucb1", "plain UCB1 on CS-UCB's arms and reward", Ucb1Config, Ucb1Policy),
    PolicyEntry(
        "epsilon-greedy",
        "epsilon-greedy on CS-UCB's arms",
        EpsilonGreedyConfig,
        EpsilonGreedyPolicy,
    ),
    PolicyEntry(
        "oracle",
        "clairvoyant: exact state and output lengths, min energy meeting the deadline",
        OracleConfig,
        OraclePolicy,
        clairvoyant=True,
    ),
    PolicyEntry(
        "planner",
        "clairvoyant: a plan of the whole trace, made offline and repaired by re-simulation",
        PlannedConfig,
        PlannedPolicy,
        clairvoyant=True,
    ),
)

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
        if not isinstance(entry, PolicyEntry):
            raise InputError(f"{where}: is a {type(entry).__name__}, not a PolicyEntry")
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
