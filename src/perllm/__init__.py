"""perllm: personalized LLM inference scheduling across edge and cloud servers (PerLLM,
arXiv 2405.14636), as a simulator and experiment runner and as a live OpenAI-compatible gateway
running the same policies.

The Python API for scripting experiments::

    import perllm

    cluster = perllm.load_scenario("perllm-paper")          # or a YAML file's path
    result = perllm.simulate(cluster, "cs-ucb", requests=2000, seed=1)
    print(result.summary.goodput_rps, result.summary.energy_per_request_j)

    policy = perllm.make_policy("cs-ucb", {"exploration": 0.5}, seed=1)
    result = perllm.simulate(cluster, policy)                 # or a policy object of your own

A policy of your own implements :class:`Policy` (``select``, ``observe``, ``forget``, ``state``,
``restore``) on the domain types, most simply as a :class:`PolicyBase` subclass that writes only
its ``decide``; register it for the command line and the gateway (the class itself, or a
:class:`PolicyEntry`) under the entry-point group ``perllm.policies``
(:mod:`perllm.policies.registry`). Names are imported on first use, so ``import perllm`` stays
light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from perllm.lazy import lazy_exports

if TYPE_CHECKING:
    from perllm.cluster.scenario import Cluster
    from perllm.cluster.scenario import load as load_scenario
    from perllm.domain import (
        ClusterView,
        Decision,
        EnergyParts,
        Feedback,
        LoadArrays,
        RouterRequest,
        ServerSpec,
    )
    from perllm.errors import InputError
    from perllm.policies.base import Policy, PolicyBase, PolicyConfig, StatelessPolicy
    from perllm.policies.registry import PolicyEntry, all_entries, make_policy
    from perllm.sim.runner import RunResult
    from perllm.sim.runner import run_once as simulate

_EXPORTS: dict[str, tuple[str, str]] = {
    "load_scenario": ("perllm.cluster.scenario", "load"),
    "Cluster": ("perllm.cluster.scenario", "Cluster"),
    "simulate": ("perllm.sim.runner", "run_once"),
    "RunResult": ("perllm.sim.runner", "RunResult"),
    "make_policy": ("perllm.policies.registry", "make_policy"),
    "all_entries": ("perllm.policies.registry", "all_entries"),
    "PolicyEntry": ("perllm.policies.registry", "PolicyEntry"),
    "Policy": ("perllm.policies.base", "Policy"),
    "PolicyBase": ("perllm.policies.base", "PolicyBase"),
    "PolicyConfig": ("perllm.policies.base", "PolicyConfig"),
    "StatelessPolicy": ("perllm.policies.base", "StatelessPolicy"),
    "ClusterView": ("perllm.domain", "ClusterView"),
    "Decision": ("perllm.domain", "Decision"),
    "EnergyParts": ("perllm.domain", "EnergyParts"),
    "Feedback": ("perllm.domain", "Feedback"),
    "LoadArrays": ("perllm.domain", "LoadArrays"),
    "RouterRequest": ("perllm.domain", "RouterRequest"),
    "ServerSpec": ("perllm.domain", "ServerSpec"),
    "InputError": ("perllm.errors", "InputError"),
}

__all__ = [
    "Cluster",
    "ClusterView",
    "Decision",
    "EnergyParts",
    "Feedback",
    "InputError",
    "LoadArrays",
    "Policy",
    "PolicyBase",
    "PolicyConfig",
    "PolicyEntry",
    "RouterRequest",
    "RunResult",
    "ServerSpec",
    "StatelessPolicy",
    "all_entries",
    "load_scenario",
    "make_policy",
    "simulate",
]

__getattr__ = lazy_exports(__name__, _EXPORTS)
