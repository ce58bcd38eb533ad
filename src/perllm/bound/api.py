"""``compute_bound``: the offline optimum of one trace as proven bounds (see the package doc)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

from perllm.bound.instance import build_instance
from perllm.bound.model import build_model, max_met, min_energy
from perllm.bound.result import BoundResult, FrontierPoint
from perllm.cluster.scenario import Cluster
from perllm.domain import Request
from perllm.errors import PerllmError
from perllm.sim.runner import seeds_for
from perllm.workload.generator import generate_requests

FRONTIER_FRACTIONS = (0.5, 0.7, 0.9, 0.95, 0.99)
DELTA_S = 0.25
SLOTS_PER_INTERVAL = 6
# Solver slack: HiGHS meets constraints and optimality to ~1e-7; an upper bound is rounded up
# from (1 + _REL) * value + _ABS, a lower bound down by as much.
_REL, _ABS = 1e-6, 1e-3

Progress = Callable[[str], None]


def _up(value: float) -> int:
    return math.floor(value * (1 + _REL) + _ABS)


def _down(value: float) -> float:
    return max(value * (1 - _REL) - _ABS, 0.0)


def compute_bound(
    cluster: Cluster,
    requests: Sequence[Request],
    world_seed: int,
    *,
    frontier: Sequence[float] = FRONTIER_FRACTIONS,
    delta_s: float = DELTA_S,
    slots_per_interval: int = SLOTS_PER_INTERVAL,
    progress: Progress | None = None,
) -> BoundResult:
    """Upper bounds on deadlines met and goodput, lower bounds on weighted energy.

    Parameters
    ----------
    cluster, requests, world_seed
        The trace exactly as the simulator runs it (``world_seed`` fixes the bandwidth draws:
        ``seeds_for(seed)[2]`` in :mod:`perllm.sim.runner`).
    frontier
        Fractions of all requests at which to bound the energy (those above the bound on
        deadlines met are skipped; the most met is always a point).
    delta_s, slots_per_interval
        Finest time slot, and the most slots one interval spans (:mod:`perllm.bound.flows`).
    progress
        Called with a short description before each stage.

    Returns
    -------
    BoundResult
    """
    say = progress or (lambda _: None)
    n = len(requests)
    clock = time.perf_counter()
    timings: dict[str, float] = {}
    say(f"building the LP of {n:,} requests")
    inst = build_instance(cluster, requests, world_seed)
    model = build_model(inst, delta_s=delta_s, target=slots_per_interval)
    say(f"solving: most deadlines met ({model.stats['variables']:,} variables)")
    best, pair_met = max_met(model)
    best = max(best, 0.0) + 0.0  # no negative zero
    timings["most_met"] = time.perf_counter() - clock
    arrivals = inst.arrival_s
    window = float(arrivals.max() - arrivals.min()) if n >= 2 else 0.0
    goodput_met = _up(best)
    if window > 0:
        say("solving: most deadlines met inside the arrival window (goodput)")
        inside = build_instance(cluster, requests, world_seed, done_by_s=float(arrivals.max()))
        inside_model = build_model(inside, delta_s=delta_s, target=slots_per_interval)
        goodput_met = min(goodput_met, _up(max_met(inside_model)[0]))
    timings["goodput"] = time.perf_counter() - clock - timings["most_met"]
    floor_j = _down(float(inst.unmet_energy_j.sum()) + inst.base_energy_j)
    # The last point is at the most met the LP found feasible.
    found = min(float(pair_met.sum()), best)
    targets = [(f, f * n) for f in frontier if 0 < f * n <= found]
    targets.append((found / max(n, 1), found))
    points: list[FrontierPoint] = []
    for k, (fraction, met) in enumerate(reversed(targets), start=1):
        target = max(met - (_REL * met + _ABS), 0.0)
        # E(m) >= the floor always, and E is non-decreasing: when a larger m's bound is the
        # floor, this one is too, with no LP to solve.
        if points and points[0].energy_lower_bound_j <= floor_j:
            points.insert(0, FrontierPoint(fraction, target, floor_j, 0.0))
            continue
        say(f"solving: least energy, frontier point {k}/{len(targets)}")
        try:
            energy, slope, _ = min_energy(model, inst, target)
        except PerllmError:  # not solved to tolerance: the floor is still a valid bound
            energy, slope = floor_j, 0.0
        safe_slope = max(slope * (1 - _REL), 0.0) + 0.0  # a tangent must not overshoot upwards
        points.insert(0, FrontierPoint(fraction, target, max(_down(energy), floor_j), safe_slope))
    timings["total"] = time.perf_counter() - clock
    return BoundResult(
        requests=n,
        met_upper_bound=_up(best),
        met_lp=best,
        window_s=window,
        goodput_met_upper_bound=goodput_met,
        goodput_upper_bound_rps=goodput_met / window if window > 0 else 0.0,
        energy_lower_bound_j=points[-1].energy_lower_bound_j,
        energy_floor_j=floor_j,
        frontier=tuple(points),
        model={"pairs": len(inst.pairs.request), **model.stats},
        timings_s=timings,
        pair_request=inst.pairs.request,
        pair_server=inst.pairs.server,
        pair_met=pair_met,
    )


def bound_for_run(
    cluster: Cluster,
    *,
    requests: int | None = None,
    rate_rps: float | None = None,
    seed: int = 0,
    frontier: Sequence[float] = FRONTIER_FRACTIONS,
    progress: Progress | None = None,
) -> BoundResult:
    """The bound of the trace :func:`perllm.sim.runner.run_once` runs with these arguments."""
    workload_seed, _, world_seed = seeds_for(seed)
    n = requests if requests is not None else cluster.requests
    trace = generate_requests(cluster.workload, n, workload_seed, rate_rps)
    return compute_bound(cluster, trace, world_seed, frontier=frontier, progress=progress)


__all__ = ["BoundResult", "FrontierPoint", "bound_for_run", "compute_bound"]
