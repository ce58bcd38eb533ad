"""The simulator: a small deterministic event loop, links with fair sharing, LLM servers with
continuous batching and an energy ledger, running a cluster that :mod:`perllm.cluster` built
from a scenario (the YAML a user writes).

- :func:`run_once` simulates a policy (by name or object) on a :class:`Cluster` and returns a
  :class:`RunResult` (summary and records); ``perllm.simulate`` is the same function;
- :class:`World` is one simulation, :class:`SimView` what a policy sees of it;
- :class:`EventLoop` is the engine; :func:`true_spec` applies a server's truth
  (:class:`~perllm.cluster.truth.ServerTruth`: how it differs from its spec).

Names are imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from perllm.lazy import lazy_exports

if TYPE_CHECKING:
    from perllm.sim.engine import EventLoop
    from perllm.sim.runner import RunResult, run_once
    from perllm.sim.truth import true_spec
    from perllm.sim.world import SimView, World

_EXPORTS: dict[str, tuple[str, str]] = {
    "run_once": ("perllm.sim.runner", "run_once"),
    "RunResult": ("perllm.sim.runner", "RunResult"),
    "World": ("perllm.sim.world", "World"),
    "SimView": ("perllm.sim.world", "SimView"),
    "EventLoop": ("perllm.sim.engine", "EventLoop"),
    "true_spec": ("perllm.sim.truth", "true_spec"),
}

__all__ = ["EventLoop", "RunResult", "SimView", "World", "run_once", "true_spec"]

__getattr__ = lazy_exports(__name__, _EXPORTS)
