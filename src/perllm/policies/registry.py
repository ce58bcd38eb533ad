"""The policy registry: one list, read top to bottom, of every policy by its string name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from perllm.config_errors import validation_message
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


ENTRIES: tuple[PolicyEntry, ...] = (
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


def make_policy(
    name: str, params: dict[str, Any] | None = None, seed: int = 0, *, live: bool = False
) -> Policy:
    """Build a registered policy from its parameters (one-line :class:`InputError` if bad).

    ``live``: the policy will route real requests (the gateway), where clairvoyant policies,
    which read the simulator's ground truth, cannot run.
    """
    entry = REGISTRY.get(name)
    if entry is None:
        raise InputError(f"--policy: unknown policy {name!r}; known: {', '.join(REGISTRY)}")
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
