"""The simulator: a small deterministic event loop, links with fair sharing, LLM servers with
continuous batching, an energy ledger, and scenarios (the YAML a user writes and the cluster
built from it).

- :func:`run_once` simulates a policy (by name or object) on a :class:`Cluster` and returns a
  :class:`RunResult` (summary and records); ``perllm.simulate`` is the same function;
- :func:`load_scenario` loads a built-in scenario (:func:`builtin_names`) or a YAML file;
- :class:`World` is one simulation, :class:`SimView` what a policy sees of it;
- :class:`EventLoop` is the engine; :class:`ClusterTruth` how servers differ from their specs.

Names are imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from perllm.lazy import lazy_exports

if TYPE_CHECKING:
    from perllm.sim.engine import EventLoop
    from perllm.sim.runner import RunResult, run_once
    from perllm.sim.scenario import Cluster, ScenarioConfig, builtin_names
    from perllm.sim.scenario import load as load_scenario
    from perllm.sim.truth import ClusterTruth, DegradeConfig
    from perllm.sim.world import SimView, World

_EXPORTS: dict[str, tuple[str, str]] = {
    "run_once": ("perllm.sim.runner", "run_once"),
    "RunResult": ("perllm.sim.runner", "RunResult"),
    "Cluster": ("perllm.sim.scenario", "Cluster"),
    "ScenarioConfig": ("perllm.sim.scenario", "ScenarioConfig"),
    "load_scenario": ("perllm.sim.scenario", "load"),
    "builtin_names": ("perllm.sim.scenario", "builtin_names"),
    "World": ("perllm.sim.world", "World"),
    "SimView": ("perllm.sim.world", "SimView"),
    "EventLoop": ("perllm.sim.engine", "EventLoop"),
    "ClusterTruth": ("perllm.sim.truth", "ClusterTruth"),
    "DegradeConfig": ("perllm.sim.truth", "DegradeConfig"),
}

__all__ = [
    "Cluster",
    "ClusterTruth",
    "DegradeConfig",
    "EventLoop",
    "RunResult",
    "ScenarioConfig",
    "SimView",
    "World",
    "builtin_names",
    "load_scenario",
    "run_once",
]

__getattr__ = lazy_exports(__name__, _EXPORTS)
