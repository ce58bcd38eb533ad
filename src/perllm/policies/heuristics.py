"""Load- and model-based baselines: least-loaded, cloud-only, edge-only, prefix-affinity,
greedy-latency, greedy-energy, feasible-energy, feasible-latency. None of them learns anything
but the mean output length of each class.

``prefix-affinity`` is the cache-aware routing of llm-d's prefix scorer and SGLang's router:
the server the router sent the longest prefix of the prompt to, unless it is saturated, else
the least loaded. The estimate-based ones count the same prefix signal as less prefill
(:mod:`perllm.policies.estimates`).

``feasible-energy`` and ``feasible-latency`` are what a practitioner would write first with the
same estimates CS-UCB starts from (:mod:`perllm.policies.estimates`): keep the servers whose
estimated processing time meets the deadline (and whose KV cache fits the request), then take
the least marginal weighted energy or the least-loaded among them; with none, the least late.
They are the strong non-learning baselines: CS-UCB must beat them by what it *learns* and by
how it handles overload, not by having better estimates."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
from pydantic import Field

from perllm.domain import ClusterView, Decision, Feedback, LoadArrays, RouterRequest
from perllm.policies.base import PRIOR_OUTPUT_TOKENS, PolicyBase, PolicyConfig, StatelessPolicy
from perllm.policies.estimates import (
    Estimate,
    OutputLengths,
    ServerTable,
    estimate,
    fits_memory,
)


class _Tabled(PolicyBase):
    """Keeps the per-server constant arrays, built again when the server list changes."""

    table: ServerTable

    def on_servers(self, view: ClusterView) -> None:
        self.table = ServerTable.of(view)


def _argmin_masked(values: npt.NDArray[np.float64], mask: npt.NDArray[np.bool_]) -> int:
    """Index of the smallest value where ``mask`` holds (the first on ties); -1 if none."""
    if not mask.any():
        return -1
    return int(np.argmin(np.where(mask, values, np.inf)))


class LoadConfig(PolicyConfig):
    pass


class _LeastLoadedAmong(_Tabled, StatelessPolicy):
    """Join the server with the fewest requests per batch slot, within a tier filter."""

    config_type: ClassVar[type[PolicyConfig]] = LoadConfig
    tier: ClassVar[str | None] = None

    def decide(self, request: RouterRequest, view: ClusterView) -> Decision:
        loads = view.load_arrays()
        table = self.table
        mask = loads.healthy.copy()
        if self.tier is not None:
            mask &= table.is_cloud if self.tier == "cloud" else ~table.is_cloud
        occupancy = (loads.queued + loads.running) / table.max_batch
        server = _argmin_masked(occupancy, mask)
        if server < 0:  # nothing healthy in the tier: fall back to any server
            server = int(np.argmin(occupancy))
        return Decision(server=server)


class LeastLoadedPolicy(_LeastLoadedAmong):
    """Join the shortest queue: fewest queued + running requests per batch slot."""

    name: ClassVar[str] = "least-loaded"
    summary: ClassVar[str] = "join the shortest queue"


class CloudOnlyPolicy(_LeastLoadedAmong):
    """Every request to the cloud (the least-loaded cloud server if several)."""

    name: ClassVar[str] = "cloud-only"
    summary: ClassVar[str] = "every request to the cloud"
    tier: ClassVar[str | None] = "cloud"


class EdgeOnlyPolicy(_LeastLoadedAmong):
    """Every request to the least-loaded edge server."""

    name: ClassVar[str] = "edge-only"
    summary: ClassVar[str] = "every request to the least-loaded edge"
    tier: ClassVar[str | None] = "edge"


class PrefixAffinityConfig(PolicyConfig):
    min_match: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="share of the prompt a server must be expected to hold in its prefix "
        "cache for the request to follow the prefix there rather than go to the least loaded "
        "server (SGLang's cache threshold)",
    )


class PrefixAffinityPolicy(_Tabled, StatelessPolicy):
    """The healthy server the router sent the longest prefix of the prompt to, when that prefix
    is at least ``min-match`` of the prompt and the server has a free batch slot (ties: the
    least loaded); otherwise the least loaded (queued + running per batch slot)."""

    name: ClassVar[str] = "prefix-affinity"
    summary: ClassVar[str] = "longest cached prefix unless saturated, then least loaded"
    config_type: ClassVar[type[PolicyConfig]] = PrefixAffinityConfig
    config: PrefixAffinityConfig

    def decide(self, request: RouterRequest, view: ClusterView) -> Decision:
        loads = view.load_arrays()
        occupancy = (loads.queued + loads.running) / self.table.max_batch
        cached = view.prefix_tokens(request)
        enough = cached >= self.config.min_match * request.prompt_tokens
        follow = loads.healthy & enough & (cached > 0.0) & (occupancy < 1.0)
        if follow.any():
            longest = follow & (cached == cached[follow].max())
            return Decision(server=_argmin_masked(occupancy, longest))
        server = _argmin_masked(occupancy, loads.healthy)
        return Decision(server=server if server >= 0 else int(np.argmin(occupancy)))


class GreedyConfig(PolicyConfig):
    prior_output_tokens: float = Field(128.0, gt=0.0, description=PRIOR_OUTPUT_TOKENS)


class _Greedy(_Tabled):
    """Learns the mean output length of each class; nothing is kept per request."""

    config_type: ClassVar[type[PolicyConfig]] = GreedyConfig
    config: GreedyConfig

    def __init__(self, config: GreedyConfig, seed: int) -> None:
        super().__init__(config, seed)
        self.lengths = OutputLengths(config.prior_output_tokens)

    def observe(self, feedback: Feedback) -> None:
        self.lengths.observe(feedback.request.service_class, feedback.output_tokens)

    def learned_state(self) -> dict[str, Any]:
        return {"lengths": self.lengths.state()}

    def apply_state(self, state: dict[str, Any]) -> None:
        self.lengths.restore(state.get("lengths", {}))

    def _estimate(self, request: RouterRequest, view: ClusterView, loads: LoadArrays) -> Estimate:
        return estimate(
            self.table,
            loads,
            request,
            self.lengths.expected(request.service_class),
            weights=view.weights,
            cached_tokens=view.prefix_tokens(request),
        )


class GreedyLatencyPolicy(_Greedy):
    """Minimum estimated processing time (transfer + queueing + inference)."""

    name: ClassVar[str] = "greedy-latency"
    summary: ClassVar[str] = "minimum estimated processing time"

    def decide(self, request: RouterRequest, view: ClusterView) -> Decision:
        loads = view.load_arrays()
        times = self._estimate(request, view, loads).processing_s[0]
        server = max(_argmin_masked(times, loads.healthy), 0)
        return Decision(server=server, estimate_s=float(times[server]))


class GreedyEnergyPolicy(_Greedy):
    """Minimum estimated energy (transmission + inference); deadlines ignored."""

    name: ClassVar[str] = "greedy-energy"
    summary: ClassVar[str] = "minimum estimated energy, deadlines ignored"

    def decide(self, request: RouterRequest, view: ClusterView) -> Decision:
        loads = view.load_arrays()
        est = self._estimate(request, view, loads)
        server = max(_argmin_masked(est.energy_j[0], loads.healthy), 0)
        return Decision(server=server, estimate_s=float(est.processing_s[0, server]))


class _Feasible(_Greedy):
    """Among servers estimated to meet the deadline (and fit the request), the best by
    :meth:`score`; with none, the least late."""

    def score(self, est: Estimate, view: ClusterView) -> npt.NDArray[np.float64]:
        raise NotImplementedError

    def decide(self, request: RouterRequest, view: ClusterView) -> Decision:
        loads = view.load_arrays()
        table = self.table
        expected = self.lengths.expected(request.service_class)
        est = self._estimate(request, view, loads)
        times = est.processing_s[0]
        usable = loads.healthy & fits_memory(table, loads, request, expected)
        server = _argmin_masked(self.score(est, view), usable & (times <= request.deadline_s))
        if server < 0:
            server = max(_argmin_masked(times, usable), _argmin_masked(times, loads.healthy), 0)
        return Decision(server=server, estimate_s=float(times[server]))


class FeasibleEnergyPolicy(_Feasible):
    """Least estimated marginal weighted energy among servers estimated to meet the deadline;
    with none, the least late."""

    name: ClassVar[str] = "feasible-energy"
    summary: ClassVar[str] = (
        "least estimated marginal energy among servers estimated to meet the deadline"
    )

    def score(self, est: Estimate, view: ClusterView) -> npt.NDArray[np.float64]:
        marginal: npt.NDArray[np.float64] = est.marginal_j[0]
        return marginal


class FeasibleLatencyPolicy(_Feasible):
    """Least-loaded (queued + running per batch slot) among servers estimated to meet the
    deadline; with none, the least late."""

    name: ClassVar[str] = "feasible-latency"
    summary: ClassVar[str] = "least-loaded among servers estimated to meet the deadline"

    def score(self, est: Estimate, view: ClusterView) -> npt.NDArray[np.float64]:
        loads = view.load_arrays()
        occupancy: npt.NDArray[np.float64] = (loads.queued + loads.running) / self.table.max_batch
        return occupancy
