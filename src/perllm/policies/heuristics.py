"""Load- and model-based baselines: least-loaded, cloud-only, edge-only, greedy-latency,
greedy-energy, feasible-energy, feasible-latency. None of them learns anything but the mean
output length of each class.

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

from perllm.domain import ClusterView, Decision, Feedback, RouterRequest
from perllm.policies.base import PolicyConfig, StatelessPolicy
from perllm.policies.estimates import (
    Estimate,
    OutputLengths,
    ServerTable,
    estimate,
    fits_memory,
)


class _TableCache:
    """Builds the per-server constant arrays once per cluster."""

    _table: ServerTable | None = None
    _servers: object = None

    def table(self, view: ClusterView) -> ServerTable:
        if self._table is None or self._servers is not view.servers:
            self._table = ServerTable.of(view)
            self._servers = view.servers
        return self._table


def _argmin_masked(values: npt.NDArray[np.float64], mask: npt.NDArray[np.bool_]) -> int:
    """Index of the smallest value where ``mask`` holds (the first on ties); -1 if none."""
    if not mask.any():
        return -1
    return int(np.argmin(np.where(mask, values, np.inf)))


class LoadConfig(PolicyConfig):
    pass


class _LeastLoadedAmong(StatelessPolicy, _TableCache):
    """Join the server with the fewest requests per batch slot, within a tier filter."""

    name: ClassVar[str] = "least-loaded"
    tier: str | None = None

    def __init__(self, config: LoadConfig, seed: int) -> None:
        self.config = config

    def select(self, request: RouterRequest, view: ClusterView) -> Decision:
        loads = view.load_arrays()
        table = self.table(view)
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


class CloudOnlyPolicy(_LeastLoadedAmong):
    """Every request to the cloud (the least-loaded cloud server if several)."""

    name: ClassVar[str] = "cloud-only"
    tier = "cloud"


class EdgeOnlyPolicy(_LeastLoadedAmong):
    """Every request to the least-loaded edge server."""

    name: ClassVar[str] = "edge-only"
    tier = "edge"


class GreedyConfig(PolicyConfig):
    prior_output_tokens: float = 128.0


class _Greedy(_TableCache):
    def __init__(self, config: GreedyConfig, seed: int) -> None:
        self.config = config
        self.lengths = OutputLengths(config.prior_output_tokens)

    def observe(self, feedback: Feedback) -> None:
        self.lengths.observe(feedback.request.service_class, feedback.output_tokens)

    def forget(self, request: RouterRequest, decision: Decision) -> None:
        return None  # nothing is kept per request

    def state(self) -> dict[str, Any]:
        return {"lengths": self.lengths.state()}

    def restore(self, state: dict[str, Any]) -> None:
        self.lengths.restore(state.get("lengths", {}))

    def _estimate(self, request: RouterRequest, view: ClusterView) -> tuple[Estimate, Any]:
        loads = view.load_arrays()
        est = estimate(
            self.table(view),
            loads,
            request,
            self.lengths.expected(request.service_class),
            weights=view.weights,
        )
        return est, loads.healthy


class GreedyLatencyPolicy(_Greedy):
    """Minimum estimated processing time (transfer + queueing + inference)."""

    name: ClassVar[str] = "greedy-latency"

    def select(self, request: RouterRequest, view: ClusterView) -> Decision:
        loads = view.load_arrays()
        expected = self.lengths.expected(request.service_class)
        times = estimate(self.table(view), loads, request, expected).processing_s[0]
        server = max(_argmin_masked(times, loads.healthy), 0)
        return Decision(server=server, estimate_s=float(times[server]))


class GreedyEnergyPolicy(_Greedy):
    """Minimum estimated energy (transmission + inference); deadlines ignored."""

    name: ClassVar[str] = "greedy-energy"

    def select(self, request: RouterRequest, view: ClusterView) -> Decision:
        est, healthy = self._estimate(request, view)
        server = max(_argmin_masked(est.energy_j[0], healthy), 0)
        return Decision(server=server, estimate_s=float(est.processing_s[0, server]))


class _Feasible(_Greedy):
    """Among servers estimated to meet the deadline (and fit the request), the best by
    :meth:`score`; with none, the least late."""

    def score(self, est: Estimate, view: ClusterView) -> npt.NDArray[np.float64]:
        raise NotImplementedError

    def select(self, request: RouterRequest, view: ClusterView) -> Decision:
        loads = view.load_arrays()
        table = self.table(view)
        expected = self.lengths.expected(request.service_class)
        est = estimate(table, loads, request, expected, weights=view.weights)
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

    def score(self, est: Estimate, view: ClusterView) -> npt.NDArray[np.float64]:
        marginal: npt.NDArray[np.float64] = est.marginal_j[0]
        return marginal


class FeasibleLatencyPolicy(_Feasible):
    """Least-loaded (queued + running per batch slot) among servers estimated to meet the
    deadline; with none, the least late."""

    name: ClassVar[str] = "feasible-latency"

    def score(self, est: Estimate, view: ClusterView) -> npt.NDArray[np.float64]:
        loads = view.load_arrays()
        occupancy: npt.NDArray[np.float64] = (loads.queued + loads.running) / self.table(
            view
        ).max_batch
        return occupancy
