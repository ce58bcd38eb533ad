"""From a cluster and a trace to the bound's data: which request may meet its deadline where,
inside which interval its work must fall, and what it costs at the least.

For request ``i`` (arrival ``a``, deadline ``D``) on server ``s`` behind link ``l`` (RTT ``rtt``):

- its upload starts at ``a`` and ends no earlier than ``up = C_l^{-1}(C_l(a) + bits_up)``; it
  reaches the server at ``ready = up + rtt / 2`` at the earliest;
- its response must reach the user by ``a + D``, so its last token must come by
  ``due = C_l^{-1}(C_l(a + D - rtt / 2) - bits_down)`` (the download alone at full bandwidth);
- on the server it takes at least ``alone`` (:func:`~perllm.bound.charges.alone_processing_s`),
  so it is *eligible* there only if ``ready + alone <= due``; its upload must end by
  ``due - alone - rtt / 2``.

Times get a slack of ``TOLERANCE_S`` in the request's favour (the simulator finishes a step
``1e-6`` steps early and a transfer 1 ns early to absorb rounding).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from perllm.bound.bandwidth import LinkCapacity, true_links
from perllm.bound.charges import EnergyCharge, alone_processing_s, best_time_charge
from perllm.cluster.scenario import Cluster
from perllm.domain import Request

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

TOLERANCE_S = 1e-5


@dataclass(frozen=True, slots=True)
class Pairs:
    """Eligible (request, server) pairs, one entry each."""

    request: IntArray
    server: IntArray
    ready_s: FloatArray
    due_s: FloatArray
    work_s: FloatArray
    energy_j: FloatArray
    upload_bits: FloatArray
    upload_due_s: FloatArray


@dataclass(frozen=True, slots=True)
class Instance:
    """Everything the LP needs about one trace on one cluster."""

    arrival_s: FloatArray
    pairs: Pairs
    unmet_energy_j: FloatArray
    base_energy_j: float
    horizon_s: float
    links: dict[str, LinkCapacity]
    server_links: tuple[str, ...]

    @property
    def n(self) -> int:
        return len(self.arrival_s)


def _columns(requests: Sequence[Request]) -> dict[str, FloatArray]:
    def col(values: list[float]) -> FloatArray:
        return np.array(values, dtype=np.float64)

    routed = [r.routed for r in requests]
    return {
        "arrival_s": col([r.arrival_s for r in routed]),
        "deadline_s": col([r.deadline_s for r in routed]),
        "prompt_tokens": col([r.prompt_tokens for r in routed]),
        "output_tokens": col([r.output_tokens for r in requests]),
        "request_bytes": col([r.request_bytes for r in routed]),
        "response_bytes": col([r.response_bytes for r in requests]),
    }


def build_instance(
    cluster: Cluster,
    requests: Sequence[Request],
    world_seed: int,
    *,
    done_by_s: float = np.inf,
    serve_all: bool | None = None,
) -> Instance:
    """The bound's data for ``requests`` as the simulator would run them with ``world_seed``.

    Parameters
    ----------
    done_by_s
        Count a request as met only if its response also arrives by this time (the goodput
        window's end); requests that cannot are left out.
    serve_all
        Whether every request is served (so an unmet one still costs its cheapest service and
        the horizon reaches every request's earliest completion). Default: when the scenario
        has no admission control.
    """
    if serve_all is None:
        serve_all = not cluster.admission_control
    c = _columns(requests)
    a, p, o = c["arrival_s"], c["prompt_tokens"], c["output_tokens"]
    up_bits = np.maximum(c["request_bytes"] * 8.0, 1.0)
    down_bits = np.maximum(c["response_bytes"] * 8.0, 1.0)
    deadline = np.minimum(a + c["deadline_s"], done_by_s)
    until = float(np.max(a + c["deadline_s"], initial=0.0)) + 1.0
    links = true_links(cluster, world_seed, until)
    weights = cluster.weights
    parts: list[Pairs] = []
    unmet = np.full(len(a), np.inf)
    earliest_done = np.full(len(a), np.inf)
    base = 0.0
    for s, spec in enumerate(cluster.servers):
        link = links[spec.link]
        half_rtt = cluster.links[spec.link].rtt_s / 2.0
        tx_w = weights.transmission * cluster.links[spec.link].tx_power_w
        up_end = link.earliest_end(a, up_bits)
        ready = up_end + half_rtt
        alone = alone_processing_s(spec, p, o)
        done = link.earliest_end(ready + alone, down_bits) + half_rtt
        due = link.latest_start(deadline - half_rtt, down_bits)
        charge = EnergyCharge.make(spec, weights)
        energy = charge.request_j(spec, p, o) + tx_w * (up_end - a + down_bits / link.max_bps)
        unmet = np.minimum(unmet, energy)
        earliest_done = np.minimum(earliest_done, done)
        base += charge.base_w
        rows = np.flatnonzero(ready + alone <= due + TOLERANCE_S)
        time_charge = best_time_charge(spec, p[rows], o[rows])
        parts.append(
            Pairs(
                request=rows.astype(np.int64),
                server=np.full(len(rows), s, dtype=np.int64),
                ready_s=ready[rows] - TOLERANCE_S,
                due_s=due[rows] + TOLERANCE_S,
                work_s=time_charge.work_s(spec, p[rows], o[rows]),
                energy_j=energy[rows],
                upload_bits=up_bits[rows],
                upload_due_s=due[rows] - alone[rows] - half_rtt + TOLERANCE_S,
            )
        )
    pairs = Pairs(
        *(np.concatenate([getattr(part, name) for part in parts]) for name in Pairs.__slots__)
    )
    last_arrival = float(a.max(initial=0.0))
    horizon = last_arrival
    if serve_all and len(a):
        horizon = max(horizon, float(earliest_done.max()) - TOLERANCE_S)
    return Instance(
        arrival_s=a,
        pairs=pairs,
        unmet_energy_j=unmet if serve_all else np.zeros(len(a)),
        base_energy_j=base * horizon,
        horizon_s=horizon,
        links=links,
        server_links=tuple(spec.link for spec in cluster.servers),
    )
