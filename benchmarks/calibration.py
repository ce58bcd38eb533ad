"""How well CS-UCB's estimates are calibrated (a quality benchmark).

Run: ``python benchmarks/calibration.py [--clusters 6] [--first-cluster 0] [--loads 0.7,1,1.5]
[--set GENERATOR-KEY=VALUE] [--param KEY=VALUE]``.

Runs CS-UCB on generated clusters (:mod:`perllm.clustergen`, the robustness benchmark's
generator) and, for every request it placed, compares what it predicted at the decision with what
happened:

- the *miss probability* ``P`` (:mod:`perllm.policies.cs_ucb`, stage 4) by decile of ``P``
  against the observed share of those requests that missed their deadline, and the Brier score
  ``mean (P - missed)^2`` against that of a constant forecast (the overall miss rate). ``P`` is
  pessimistic by design (the time bound ``F``, not the mean); beside it, the same probability
  at the arm's own record (``exp`` of its mean log-ratio, with the server's drift), the model's
  best guess, which is the one that should match the observed rate;
- the processing time: the estimate at the class's mean output length against the observed
  time (the median and the 10th and 90th percentiles of ``observed / estimated``), and the
  wait in the server's queue, predicted against observed, by the request's slack at placement
  (its deadline less its estimated processing time: the queue is served by deadline, so a
  request with slack waits behind later arrivals with less, by design);
- the inference energy: the request's share of its batch's energy, estimated at the decision
  against the one the world reports (the 10th, 50th and 90th percentiles of the ratio).

Deflected requests (placed behind every request that can still make it) are counted apart: their
wait is by design. A well-calibrated ``P`` has each decile's observed miss rate near its mean
``P``. What the policy predicted for a request is its memo in the policy's ledger
(:class:`~perllm.policies.ledger.Placement`), read as the feedback arrives, before the policy
learns from it and releases the memo.
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
from typing import Any

import numpy as np

from perllm.cli_args import key_value
from perllm.clustergen.families import SHORT_RUNS
from perllm.domain import DEFERRED_PRIORITY, ClusterView, Decision, Feedback, RouterRequest
from perllm.errors import InputError
from perllm.experiments.robustness_runs import cluster_of, generate_task
from perllm.policies.cs_ucb import CsUcbPolicy
from perllm.policies.ledger import Placement
from perllm.policies.miss import miss_probability
from perllm.policies.registry import make_policy
from perllm.sim.runner import run_once

Seen = list[tuple[Feedback, Placement, float]]  # with P at the arm's own record


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clusters", type=int, default=6)
    parser.add_argument("--first-cluster", type=int, default=0)
    parser.add_argument("--loads", default="0.7,1,1.5", help="x capacity")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
    return parser.parse_args()


def _collect(args: argparse.Namespace) -> Seen:
    settings: dict[str, Any] = dict(SHORT_RUNS)
    params: dict[str, Any] = {}
    for pair in args.set:
        settings.update(key_value(pair))
    for pair in args.param:
        params.update(key_value(pair))
    loads = [float(x) for x in args.loads.split(",")]
    seen: Seen = []
    for seed in range(args.first_cluster, args.first_cluster + args.clusters):
        generated = generate_task(seed, settings)
        cluster = cluster_of(seed, generated.data)
        for load in loads:
            policy = make_policy("cs-ucb", params, seed=args.seed)
            assert isinstance(policy, CsUcbPolicy)
            learn, decide, ledger = policy.observe, policy.decide, policy.ledger
            at_mean: dict[int, float] = {}

            def decide_and_note(
                request: RouterRequest,
                view: ClusterView,
                decide: Any = decide,
                policy: CsUcbPolicy = policy,
                at_mean: dict[int, float] = at_mean,
            ) -> Decision:
                decision: Decision = decide(request, view)
                memo = policy.ledger.get(request.id)
                if memo is not None:
                    at_mean[request.id] = _miss_at_own_record(policy, request, memo, view.now())
                return decision

            def observe(
                feedback: Feedback,
                learn: Any = learn,
                ledger: Any = ledger,
                at_mean: dict[int, float] = at_mean,
            ) -> None:
                memo = ledger.get(feedback.request.id)  # released by learn()
                if memo is not None:
                    seen.append((feedback, memo, at_mean.pop(feedback.request.id, math.nan)))
                learn(feedback)

            policy.decide = decide_and_note  # type: ignore[method-assign]
            policy.observe = observe  # type: ignore[method-assign]
            rate = load * float(generated.capacity.rate_rps)
            run_once(cluster, policy, requests=cluster.requests, rate_rps=rate, seed=args.seed)
    return seen


def _miss_at_own_record(
    policy: CsUcbPolicy, request: RouterRequest, memo: Placement, now: float
) -> float:
    """The chance of a miss the decision's own inputs give at the arm's own record, ``exp`` of
    its mean log-ratio times the server's drift, instead of the pessimistic bound ``F``."""
    times = policy.times
    assert times is not None
    row = times.group(memo.service_class) + int(memo.crowded)
    drift = max(policy.drift.faded(memo.server, now), 0.0)
    factor = float(times.own[row, memo.server]) * math.exp(drift)
    fit = policy.lengths.log_fit(memo.service_class)
    mu_o, sd_o = fit or (math.log(max(memo.expected, 1.0)), 0.0)
    fixed = memo.estimate_s - memo.expected * memo.step
    spread = float(times.spread[row, memo.server])
    return float(miss_probability(request.deadline_s, factor, fixed, memo.step, mu_o, sd_o, spread))


def _deciles(p: np.ndarray, missed: np.ndarray) -> None:
    """Mean ``p`` against the observed miss rate by decile of ``p``, and the Brier score."""
    if not p.size:
        return
    edges = np.quantile(p, np.linspace(0.0, 1.0, 11))
    bins = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, 9)
    for d in range(10):
        chosen = bins == d
        if chosen.any():
            print(
                f"  decile {d + 1:2d}: P {p[chosen].mean():.3f}  missed "
                f"{missed[chosen].mean():.3f}  ({int(chosen.sum()):,})"
            )
    brier = float(np.mean((p - missed) ** 2))
    base = float(np.mean((missed.mean() - missed) ** 2))
    print(f"  mean P {p.mean():.3f}, observed miss rate {missed.mean():.3f}")
    print(f"  Brier score {brier:.4f} (a constant forecast: {base:.4f})")


def _report(seen: Seen) -> None:
    placed = [(f, m, a) for f, m, a in seen if not f.failed and math.isfinite(m.miss_probability)]
    deflected = [(f, m) for f, m, _ in placed if m.priority >= DEFERRED_PRIORITY]
    queued = [(f, m) for f, m, _ in placed if m.priority < DEFERRED_PRIORITY]
    missed = np.array([0.0 if f.met else 1.0 for f, _, _ in placed])
    print(f"{len(placed):,} requests placed ({len(deflected):,} deflected)")
    if not placed:
        return
    print("\nmiss probability by decile of P   (mean P, observed miss rate, requests)")
    _deciles(np.array([m.miss_probability for _, m, _ in placed]), missed)
    print("  (P is the policy's pessimistic bound, so it leans high where the model is right)")
    at_mean = np.array([a for _, _, a in placed])
    known = np.isfinite(at_mean)
    print(
        "\nthe same at the arm's own record (its mean correction and drift, not the bound), "
        "by decile"
    )
    _deciles(at_mean[known], missed[known])
    ratio = np.array([f.processing_s / m.estimate_s for f, m in queued if m.estimate_s > 0])
    if ratio.size:
        q10, q50, q90 = np.quantile(ratio, (0.1, 0.5, 0.9))
        print(
            f"\nprocessing time, observed / estimated at the mean length (placed by deadline): "
            f"p10 {q10:.2f}  median {q50:.2f}  p90 {q90:.2f}"
        )
    energy = np.array(
        [f.energy.inference_j / m.estimate_j for f, m, _ in placed if m.estimate_j > 0]
    )
    energy = energy[np.isfinite(energy) & (energy > 0)]
    if energy.size:
        q10, q50, q90 = np.quantile(energy, (0.1, 0.5, 0.9))
        print(
            f"inference energy, observed / estimated at the mean length (all placed): "
            f"p10 {q10:.2f}  median {q50:.2f}  p90 {q90:.2f}"
        )
    _waits(queued)


# Slack (deadline less the estimated processing time) at which queue waits are compared: in a
# queue served by deadline, a request with slack is overtaken by later ones with less.
SLACK_EDGES_S = (-math.inf, 1.0, 3.0, 10.0, 30.0, math.inf)


def _waits(queued: list[tuple[Feedback, Placement]]) -> None:
    """Queue wait predicted against observed, by the request's slack at placement."""
    rows = [
        (m.queue_s, f.queue_s, f.request.deadline_s - m.estimate_s, f.met)
        for f, m in queued
        if math.isfinite(f.queue_s) and math.isfinite(m.queue_s)
    ]
    if not rows:
        return
    predicted, observed, slack, met = (np.array(x, dtype=float) for x in zip(*rows, strict=True))
    print("\nqueue wait by slack at placement (mean predicted, mean observed, miss rate, requests)")
    for low, high in itertools.pairwise(SLACK_EDGES_S):
        chosen = (slack >= low) & (slack < high)
        if chosen.any():
            print(
                f"  slack {low:>5g} to {high:<4g} s: predicted {predicted[chosen].mean():.2f} s  "
                f"observed {observed[chosen].mean():.2f} s  missed "
                f"{1.0 - met[chosen].mean():.3f}  ({int(chosen.sum()):,})"
            )


def main() -> None:
    args = _arguments()
    try:
        seen = _collect(args)
    except (InputError, ValueError) as err:
        print(f"calibration: {err}", file=sys.stderr)
        sys.exit(2)
    _report(seen)


if __name__ == "__main__":
    main()
