"""A cluster's capacity for a workload: the arrival rate it can sustain with deadlines met.

**Definition.** Let ``s(r)`` be the share of deadlines met in steady state when requests arrive
at ``r`` per second (the scenario's own arrival process, class mix and model mismatch; no mid-run
degradation) and are dispatched by ``greedy-latency`` (minimum estimated processing time) that
is given the servers' *true* specs: a simple, strong, deadline-blind dispatcher with a perfect
datasheet. The capacity is the rate at which ``s`` falls to 90% of its value on a nearly idle
cluster, ``0.9 s(r_idle)``: the load at which queueing, not the hardware's speed, starts to cost
deadlines. Relative to the idle share, so that a cluster whose hardware cannot meet some class's
deadline even when idle still has a meaningful capacity. A deadline-aware dispatcher may sustain
more on a cluster that mixes very slow and very fast servers (it can keep tight deadlines off the
slow ones); a best-fit probe of that kind was tried and was erratic (its idle satisfaction
depends on how well its estimates fit), so this capacity is a simple dispatcher's, a lower
estimate of the best one's.

**Method.** Simulations of ``n = max(requests, 8 x slots)`` requests, where ``slots`` is how many
mean-sized requests the servers hold at once (batch and KV limits), so that the system fills up
and stays full; ``s`` counts the second half of the arrivals only (steady state). A short run
of a few hundred requests would measure how large a *burst* the cluster absorbs instead, and on
a big cluster that is a rate 50x too high. Bisection on ``log r`` between ``r_idle = 1%`` and
``150%`` of the *fluid estimate* (the sum over servers of
``b / (O t_step(b) + b (P t_prefill + t_fixed))``, the throughput of a server kept full with
batches of ``b`` mean-sized requests); the upper end doubles while ``s`` still reaches the target
there. The same seed at every rate gives the same requests stretched in time, so ``s`` is close
to monotone.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from perllm.cluster.scenario import Cluster, LinkDynamics
from perllm.cluster.truth import ClusterTruth
from perllm.domain import ServerSpec
from perllm.policies.registry import make_policy
from perllm.sim.runner import seeds_for
from perllm.sim.truth import true_spec
from perllm.sim.world import World
from perllm.workload.generator import generate_requests

__all__ = ["Capacity", "fluid_capacity_rps", "measure_capacity", "truthful"]

IDLE_FRACTION = 0.01  # r_idle as a fraction of the fluid estimate
HIGH_FRACTION = 1.5  # the bisection's upper end, as a fraction of the fluid estimate
TARGET = 0.9  # capacity: where satisfaction falls to this share of the idle one
STEPS = 10  # bisection steps: the bracket (150x) narrows to about 1.6%
EXPANSIONS = 6  # doublings of the upper end at most
SLOTS_MULTIPLE = 8  # requests per simulation, in units of the cluster's concurrent slots
MAX_REQUESTS = 20_000
POLICY = "greedy-latency"


@dataclass(frozen=True, slots=True)
class Capacity:
    """A measured capacity, with what it was measured from."""

    rate_rps: float
    fluid_rps: float
    idle_satisfaction: float
    satisfaction: float
    requests: int
    slots: int
    policy: str = f"{POLICY} (true specs)"


def truthful(cluster: Cluster) -> Cluster:
    """``cluster`` with its specs replaced by its truth: what a perfect datasheet would say
    (degradations dropped)."""
    truth = cluster.truth
    servers = tuple(true_spec(s, truth.server(i)) for i, s in enumerate(cluster.servers))
    links, dynamics = {}, {}
    for name, spec in cluster.links.items():
        factor = truth.bandwidth_factor(name)
        links[name] = dataclasses.replace(spec, bandwidth_mbps=spec.bandwidth_mbps * factor)
        dyn = cluster.dynamics[name]
        points = tuple((t, mbps * factor) for t, mbps in dyn.points)
        dynamics[name] = LinkDynamics(dyn.kind, dyn.amplitude, dyn.period_s, points)
    return dataclasses.replace(
        cluster, servers=servers, links=links, dynamics=dynamics, truth=ClusterTruth()
    )


def _mean_lengths(cluster: Cluster, seed: int) -> tuple[float, float]:
    requests = generate_requests(cluster.workload, 2000, seed, rate_rps=1.0)
    prompt = float(np.mean([r.routed.prompt_tokens for r in requests]))
    return prompt, max(float(np.mean([r.output_tokens for r in requests])), 1.0)


def _batch(spec: ServerSpec, per_request_tokens: float) -> int:
    """Mean-sized requests the server holds at once (its batch and KV-cache limits)."""
    return max(1, min(spec.max_batch, int(spec.kv_capacity_tokens // per_request_tokens)))


def fluid_capacity_rps(cluster: Cluster, seed: int = 0) -> float:
    """Throughput of the cluster's true servers kept full with mean-sized requests.

    Parameters
    ----------
    cluster
        The cluster; its workload gives the mean prompt ``P`` and output ``O`` lengths.
    seed
        Seed of the 2,000 requests the means are taken over.

    Returns
    -------
    float
        Requests per second, summed over servers (links and deadlines ignored).
    """
    prompt, output = _mean_lengths(cluster, seed)
    total = 0.0
    for spec in truthful(cluster).servers:
        batch = _batch(spec, prompt + output)
        step_s = spec.perf.step_s(batch, batch * (prompt + output / 2.0))
        prefill_s = prompt * spec.perf.prefill_s_per_token + spec.perf.prefill_fixed_s
        total += batch / (output * step_s + batch * prefill_s)
    return total


def _satisfaction(cluster: Cluster, rate_rps: float, requests: int, seed: int) -> float:
    workload_seed, policy_seed, world_seed = seeds_for(seed)
    batch = generate_requests(cluster.workload, requests, workload_seed, rate_rps)
    policy = make_policy(POLICY, None, policy_seed)
    columns = World(cluster, policy, batch, seed=world_seed).run().columns
    # Ids follow arrival order: the second half of the arrivals is the steady state.
    steady = [
        bool(met)
        for rid, met in zip(columns["id"], columns["met"], strict=True)
        if int(rid) >= requests // 2
    ]
    return sum(steady) / max(len(steady), 1)


def measure_capacity(cluster: Cluster, requests: int = 400, seed: int = 0) -> Capacity:
    """Measure the capacity of ``cluster`` (see the module docstring).

    Parameters
    ----------
    cluster
        The cluster as the policies would be given it (nominal specs and its truth).
    requests
        The least number of requests per simulation (at most ``1 + EXPANSIONS + STEPS``).
    seed
        Seed of every simulation.

    Returns
    -------
    Capacity
        If no deadline is met even on an idle cluster, the fluid estimate.
    """
    fluid = fluid_capacity_rps(cluster, seed=seed)
    prompt, output = _mean_lengths(cluster, seed)
    true = truthful(cluster)
    slots = sum(_batch(spec, prompt + output) for spec in true.servers)
    n = min(max(requests, SLOTS_MULTIPLE * slots), MAX_REQUESTS)
    low, high = fluid * IDLE_FRACTION, fluid * HIGH_FRACTION
    idle = _satisfaction(true, low, n, seed)
    if idle <= 0.0:
        return Capacity(fluid, fluid, idle, 0.0, n, slots)
    target = TARGET * idle
    at_low = idle
    for _ in range(EXPANSIONS):
        at_high = _satisfaction(true, high, n, seed)
        if at_high < target:
            break
        low, at_low, high = high, at_high, high * 2.0
    else:
        return Capacity(low, fluid, idle, at_low, n, slots)
    for _ in range(STEPS):
        mid = math.sqrt(low * high)
        value = _satisfaction(true, mid, n, seed)
        if value >= target:
            low, at_low = mid, value
        else:
            high = mid
    return Capacity(low, fluid, idle, at_low, n, slots)
