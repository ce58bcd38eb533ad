"""Scheduling policies, pure: they see only :mod:`perllm.domain` types, never ``sim/`` or
``gateway/``, so the same object runs in the simulator and in the live gateway.

- the interface and the base that owns the plumbing: :class:`Policy`, :class:`PolicyBase`,
  :class:`StatelessPolicy`, :class:`PolicyConfig` (:mod:`perllm.policies.base`);
- the registry, built from the policy classes plus installed plugins: :func:`make_policy`,
  :func:`lookup`, :func:`all_entries`, :class:`PolicyEntry` (:mod:`perllm.policies.registry`);
- the built-in policies and their settings.

Names are imported on first use (CS-UCB compiles numba kernels), so importing this package is
cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from perllm.lazy import lazy_exports

if TYPE_CHECKING:
    from perllm.policies.base import Policy, PolicyBase, PolicyConfig, StatelessPolicy
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
        PrefixAffinityConfig,
        PrefixAffinityPolicy,
    )
    from perllm.policies.learning import (
        EpsilonGreedyConfig,
        EpsilonGreedyPolicy,
        Ucb1Config,
        Ucb1Policy,
    )
    from perllm.policies.oracle import OracleConfig, OraclePolicy
    from perllm.policies.planned import PlannedConfig, PlannedPolicy
    from perllm.policies.registry import (
        BUILT_IN,
        PolicyEntry,
        all_entries,
        lookup,
        make_policy,
    )
    from perllm.policies.simple import (
        RandomConfig,
        RandomPolicy,
        RoundRobinConfig,
        RoundRobinPolicy,
    )

_MODULES: dict[str, tuple[str, ...]] = {
    "base": ("Policy", "PolicyBase", "PolicyConfig", "StatelessPolicy"),
    "registry": ("BUILT_IN", "PolicyEntry", "all_entries", "lookup", "make_policy"),
    "cs_ucb": ("CsUcbConfig", "CsUcbPolicy"),
    "heuristics": (
        "CloudOnlyPolicy",
        "EdgeOnlyPolicy",
        "FeasibleEnergyPolicy",
        "FeasibleLatencyPolicy",
        "GreedyConfig",
        "GreedyEnergyPolicy",
        "GreedyLatencyPolicy",
        "LeastLoadedPolicy",
        "LoadConfig",
        "PrefixAffinityConfig",
        "PrefixAffinityPolicy",
    ),
    "learning": ("EpsilonGreedyConfig", "EpsilonGreedyPolicy", "Ucb1Config", "Ucb1Policy"),
    "oracle": ("OracleConfig", "OraclePolicy"),
    "planned": ("PlannedConfig", "PlannedPolicy"),
    "simple": ("RandomConfig", "RandomPolicy", "RoundRobinConfig", "RoundRobinPolicy"),
}

_EXPORTS: dict[str, tuple[str, str]] = {
    name: (f"perllm.policies.{module}", name)
    for module, names in _MODULES.items()
    for name in names
}

__all__ = [
    "BUILT_IN",
    "CloudOnlyPolicy",
    "CsUcbConfig",
    "CsUcbPolicy",
    "EdgeOnlyPolicy",
    "EpsilonGreedyConfig",
    "EpsilonGreedyPolicy",
    "FeasibleEnergyPolicy",
    "FeasibleLatencyPolicy",
    "GreedyConfig",
    "GreedyEnergyPolicy",
    "GreedyLatencyPolicy",
    "LeastLoadedPolicy",
    "LoadConfig",
    "OracleConfig",
    "OraclePolicy",
    "PlannedConfig",
    "PlannedPolicy",
    "Policy",
    "PolicyBase",
    "PolicyConfig",
    "PolicyEntry",
    "PrefixAffinityConfig",
    "PrefixAffinityPolicy",
    "RandomConfig",
    "RandomPolicy",
    "RoundRobinConfig",
    "RoundRobinPolicy",
    "StatelessPolicy",
    "Ucb1Config",
    "Ucb1Policy",
    "all_entries",
    "lookup",
    "make_policy",
]

__getattr__ = lazy_exports(__name__, _EXPORTS)
