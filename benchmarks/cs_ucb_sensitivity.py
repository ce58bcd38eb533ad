"""How CS-UCB's goodput and energy depend on its parameters (a quality benchmark).

Run: ``python benchmarks/cs_ucb_sensitivity.py [--requests N] [--seeds K] [--jobs J]``.
Each variant runs on the three model deployments at nominal load and bandwidth; the table shows
the mean over seeds, next to cloud-only and least-loaded on the same workloads. The defaults in
``CsUcbConfig`` were chosen from this table.
"""

from __future__ import annotations

import argparse
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from perllm.experiments.grid import DEPLOYMENTS, cluster_for
from perllm.sim.runner import run_once

VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "cs-ucb (defaults)": ("cs-ucb", {}),
    "target 1.25": ("cs-ucb", {"target": 1.25}),
    "pressure 0 (no capacity price)": ("cs-ucb", {"pressure": 0.0}),
    "pressure 4": ("cs-ucb", {"pressure": 4.0}),
    "shares 0.5/1/2": ("cs-ucb", {"share-levels": [0.5, 1.0, 2.0]}),
    "target 1.0": ("cs-ucb", {"target": 1.0}),
    "exploration 0.1": ("cs-ucb", {"exploration": 0.1}),
    "exploration 1.0": ("cs-ucb", {"exploration": 1.0}),
    "cloud-only": ("cloud-only", {}),
    "least-loaded": ("least-loaded", {}),
}


def _run(
    args: tuple[str, str, dict[str, Any], str, int, int],
) -> tuple[str, str, float, float, float]:
    label, policy, params, deployment, seed, requests = args
    summary = run_once(
        cluster_for(deployment, "nominal"),
        policy,
        requests=requests,
        seed=seed,
        policy_params=params,
    ).summary
    return (
        label,
        deployment,
        summary["goodput_rps"],
        summary["deadline_satisfaction"],
        summary["energy_per_request_j"],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    work = [
        (label, policy, params, dep, seed, args.requests)
        for label, (policy, params) in VARIANTS.items()
        for dep in DEPLOYMENTS
        for seed in range(args.seeds)
    ]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(args.jobs, mp_context=context) as pool:
        results = list(pool.map(_run, work))
    table = Table(
        title=f"goodput req/s | deadlines met | J/request (mean of {args.seeds} seeds, "
        f"{args.requests} requests, nominal load)"
    )
    table.add_column("variant")
    for dep in DEPLOYMENTS:
        table.add_column(dep, justify="right")
    for label in VARIANTS:
        cells = []
        for dep in DEPLOYMENTS:
            mine = np.array([r[2:] for r in results if r[0] == label and r[1] == dep])
            g, s, e = mine.mean(axis=0)
            cells.append(f"{g:.2f} | {s:.3f} | {e:.0f}")
        table.add_row(label, *cells)
    Console(width=140).print(table)


if __name__ == "__main__":
    main()
