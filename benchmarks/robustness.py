"""Robustness over generated clusters nobody tuned on (a quality benchmark).

Run: ``python benchmarks/robustness.py [--clusters 20] [--seeds 2] [--requests 1000]
[--out results-robustness] [--workers N] [--policies a,b] [--param POLICY:KEY=VALUE]
[--variant LABEL=POLICY[:KEY=VALUE,...]] [--set GENERATOR-KEY=VALUE] [--no-bound]
[--executor ray [--ray-address HOST:PORT]] [--resume]``.

Draws ``--clusters`` clusters with ``perllm scenarios generate`` (seeds ``--first-cluster``
onwards; random hardware, links, model mismatch, arrivals and class mix), measures each one's
capacity, and runs every registered non-clairvoyant policy plus ``oracle`` at 0.7x, 1x and 1.5x
capacity with ``--seeds`` seeds. Each run has ``max(--requests, --steady-multiple x the
cluster's concurrent slots)`` requests, at most ``--max-requests`` (the oracle's decisions cost in
proportion to the requests in flight, so it sets the run time).

Prints each policy's win rate on goodput against the others, its geometric-mean goodput and
energy-per-met-request ratios against the strongest *other* policy in each cell (definitions:
:mod:`perllm.experiments.robustness`) and, if the ``perllm.bound`` package is installed, its
mean fraction of the goodput bound. Writes ``robustness.csv``, ``clusters.csv`` and
``robustness.png`` to ``--out``. Parameter sensitivity: e.g. ``--policies cs-ucb,least-loaded
--variant ucb-a1=cs-ucb:exploration=1.0``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from perllm.cli_args import key_value, writable_dir
from perllm.errors import InputError
from perllm.experiments import checkpoint
from perllm.experiments.checkpoint import Call, Checkpoint, run_saving, saved_runs
from perllm.experiments.executors import ExecutorSpec
from perllm.experiments.robustness_report import plot, print_tables, write_csvs
from perllm.experiments.robustness_runs import (
    RunTask,
    bound_available,
    bound_task,
    generate_task,
    run_task,
)
from perllm.experiments.show import progress_bar
from perllm.experiments.sweep_args import add_sweep_arguments, executor_spec, resume_command
from perllm.policies.registry import all_entries, lookup, make_policy

LOADS = (0.7, 1.0, 1.5)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clusters", type=int, default=20)
    parser.add_argument("--first-cluster", type=int, default=0, help="seed of the first cluster")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--loads", default=",".join(map(str, LOADS)), help="x capacity")
    parser.add_argument("--requests", type=int, default=1000, help="least requests per run")
    parser.add_argument(
        "--steady-multiple", type=float, default=2.0, help="requests per run >= this x slots"
    )
    parser.add_argument("--max-requests", type=int, default=2000, help="most requests per run")
    parser.add_argument("--out", default="results-robustness")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--policies", help="comma-separated names (default: all, and oracle)")
    parser.add_argument("--param", action="append", default=[], metavar="POLICY:KEY=VALUE")
    parser.add_argument("--variant", action="append", default=[], metavar="LABEL=POLICY[:K=V,..]")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a cluster generator setting (perllm.clustergen.settings)",
    )
    parser.add_argument("--no-bound", action="store_true", help="skip perllm.bound if installed")
    add_sweep_arguments(parser, "--workers")
    return parser.parse_args()


def _policies(args: argparse.Namespace) -> dict[str, tuple[str, dict[str, Any]]]:
    """Label -> (registered policy, params), from --policies, --param and --variant."""
    chosen: dict[str, tuple[str, dict[str, Any]]] = {
        e.name: (e.name, {}) for e in all_entries() if not e.clairvoyant or e.name == "oracle"
    }
    for spec in args.variant:
        label, _, rest = spec.partition("=")
        policy, _, pairs = rest.partition(":")
        params = chosen.get(label, (policy, {}))[1]
        for pair in filter(None, pairs.split(",")):
            params.update(key_value(pair))
        chosen[label] = (policy, params)
    for spec in args.param:
        label, _, pair = spec.partition(":")
        if label not in chosen:
            sys.exit(f"robustness: --param {spec}: unknown policy {label!r}")
        chosen[label][1].update(key_value(pair))
    if args.policies:
        names = [name.strip() for name in args.policies.split(",")]
        unknown = [name for name in names if name not in chosen]
        if unknown:
            sys.exit(
                f"robustness: --policies: unknown {', '.join(unknown)}; known: {', '.join(chosen)}"
            )
        chosen = {name: chosen[name] for name in names}
    for label, (policy, params) in chosen.items():
        try:
            make_policy(policy, params)  # check names and parameters before any run
        except InputError as err:
            sys.exit(f"robustness: {label}: {err}")
    return chosen


def _contenders(chosen: dict[str, tuple[str, dict[str, Any]]]) -> list[str]:
    return [label for label, (policy, _) in chosen.items() if not lookup(policy).clairvoyant]


def _run(
    args: argparse.Namespace,
    chosen: dict[str, tuple[str, dict[str, Any]]],
    executor: ExecutorSpec,
    saved: Checkpoint,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    settings = _settings(args)
    loads = _loads(args)
    use_bound = _use_bound(args)
    results = saved.results

    def runs(cluster: dict[str, Any]) -> list[tuple[Any, Callable[..., Any], RunTask]]:
        """The runs (and bounds) of a generated cluster that are not saved yet."""
        calls: list[tuple[Any, Callable[..., Any], RunTask]] = []
        for load in loads:
            for seed in range(args.seeds):
                for label_, (policy, params) in chosen.items():
                    task = RunTask(
                        cluster["seed"],
                        cluster["data"],
                        cluster["capacity"]["rate_rps"],
                        load,
                        seed,
                        label_,
                        policy,
                        params,
                    )
                    calls.append((("run", task.cluster, load, seed, label_), run_task, task))
                if use_bound:
                    calls.append((("bound", task.cluster, load, seed), bound_task, task))
        return [call for call in calls if call[0] not in results]

    todo: list[tuple[Any, Callable[..., Any], tuple[Any, ...]]] = []
    for s in _cluster_seeds(args):
        if ("cluster", s) in results:
            todo += [(key, fn, (task,)) for key, fn, task in runs(results["cluster", s])]
        else:
            todo.append((("cluster", s), generate_task, (s, settings)))
    label = f"robustness: {args.clusters} clusters x {len(loads)} loads x {args.seeds} seeds"

    def follow(key: Any, result: Any) -> list[Call]:
        """A generated cluster's runs, once it is generated."""
        return [(k, fn, (task,)) for k, fn, task in runs(result)] if key[0] == "cluster" else []

    with progress_bar(_total_runs(args, chosen), label) as advance:
        run_saving(executor, todo, saved, advance, follow)
    bounds = {key[1:]: result[1] for key, result in results.items() if key[0] == "bound"}
    rows = [row for key, row in results.items() if key[0] == "run"]
    for row in rows:
        row["bound_goodput_rps"] = bounds.get((row["cluster"], row["load"], row["seed"]), math.nan)
    rows.sort(key=lambda r: (r["cluster"], r["load"], r["seed"], list(chosen).index(r["policy"])))
    clusters = sorted(
        (result for key, result in results.items() if key[0] == "cluster"),
        key=lambda c: c["seed"],
    )
    return rows, clusters


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "requests": args.requests,
        "steady-multiple": args.steady_multiple,
        "max-requests": args.max_requests,
    }
    for pair in args.set:
        settings.update(key_value(pair))
    return settings


def _loads(args: argparse.Namespace) -> list[float]:
    return [float(x) for x in args.loads.split(",")]


def _cluster_seeds(args: argparse.Namespace) -> range:
    return range(args.first_cluster, args.first_cluster + args.clusters)


def _use_bound(args: argparse.Namespace) -> bool:
    return bound_available() and not args.no_bound


def _total_runs(args: argparse.Namespace, chosen: dict[str, Any]) -> int:
    per_cluster = (
        len(_loads(args)) * int(args.seeds) * (len(chosen) + (1 if _use_bound(args) else 0))
    )
    return int(args.clusters) * (1 + per_cluster)


def _header(args: argparse.Namespace, chosen: dict[str, Any]) -> dict[str, Any]:
    """What the runs depend on: a resumed benchmark must have the same."""
    return {
        "clusters": list(_cluster_seeds(args)),
        "seeds": args.seeds,
        "loads": _loads(args),
        "settings": _settings(args),
        "policies": chosen,
        "bound": _use_bound(args),
    }


def main() -> None:
    args = _arguments()
    chosen = _policies(args)
    path = Path(args.out) / checkpoint.FILENAME
    try:
        executor = executor_spec(args, args.workers)
        out = writable_dir("--out", Path(args.out))
        started = time.perf_counter()
        with Checkpoint(path, _header(args, chosen), resume=args.resume) as saved:
            rows, clusters = _run(args, chosen, executor, saved)
    except InputError as err:
        print(f"robustness: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        again = resume_command("python", sys.argv)
        total = _total_runs(args, chosen)
        print(
            f"robustness: interrupted; {saved_runs(path)} of {total} runs saved in {path}; "
            f"resume with: {again}",
            file=sys.stderr,
        )
        sys.exit(130)
    elapsed = time.perf_counter() - started
    write_csvs(rows, clusters, out)
    loads = sorted({float(row["load"]) for row in rows})
    contenders = _contenders(chosen)
    results = print_tables(rows, contenders, list(chosen), loads)
    plot(rows, results, contenders, out / "robustness.png")
    total = sum(int(row["requests"]) for row in rows)
    print(
        f"{len(rows)} runs ({total:,} simulated requests) on {len(clusters)} clusters in "
        f"{elapsed:.0f} s ({executor.describe()}); wrote {out}/robustness.csv, "
        f"clusters.csv, robustness.png"
    )


if __name__ == "__main__":
    main()
