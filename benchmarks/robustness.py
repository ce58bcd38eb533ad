"""Robustness over generated clusters nobody tuned on (a quality benchmark).

Run: ``python benchmarks/robustness.py [--clusters 20] [--seeds 2] [--requests 1000]
[--out results-robustness] [--workers N] [--policies a,b] [--param POLICY:KEY=VALUE]
[--variant LABEL=POLICY[:KEY=VALUE,...]] [--set GENERATOR-KEY=VALUE] [--no-bound]
[--family mixed|gpu-edge|gpu-only|all] [--traces azure-conv,azure-code,mooncake|none]
[--sweep KEY=V1,V2,...] [--executor ray [--ray-address HOST:PORT]] [--resume]``.

Draws ``--clusters`` clusters of the cluster family ``--family`` with ``perllm scenarios
generate`` (numbers ``--first-cluster`` onwards; random hardware, links, model mismatch,
arrivals and class mix; the families and their seeds: :mod:`perllm.clustergen.families`;
``all`` runs every family and reports each separately; ``--set`` overrides a family's
settings), measures each one's capacity, and runs every registered non-clairvoyant policy plus
``oracle`` at 0.7x, 1x and 1.5x capacity with ``--seeds`` seeds. Each run has
``max(--requests, --steady-multiple x the cluster's concurrent slots)`` requests, at most
``--max-requests`` (the oracle's decisions cost in proportion to the requests in flight, so it
sets the run time).

Prints, per family, each policy's win rate on goodput against the others, its geometric-mean
goodput and energy-per-met-request ratios against the *other* policy meeting the most deadlines
in each cell, the share of cells where another policy dominates it on both objectives, its
frugal ratio (definitions: :mod:`perllm.experiments.robustness`), the cloud-only check of
CS-UCB and, if the ``perllm.bound`` package is installed, its mean fraction of the goodput
bound. Writes ``robustness.csv``, ``clusters.csv``, ``scores.csv`` and ``robustness.png``
(``robustness-FAMILY.png`` with ``--family all``) to ``--out``. Parameter sensitivity: e.g.
``--policies cs-ucb,least-loaded --variant ucb-a1=cs-ucb:exploration=1.0``.

Trace cells (``--traces``, default all three; ``none``: synthetic cells only): each generated
cluster also replays each shipped production trace (Azure 2023 conversation and code,
Mooncake; ``docs/traces.md``) in place of its own workload, with the trace's service class and
TTFT + TPOT deadlines and the context window enforced. Its capacity is measured on that trace,
and the same loads, seeds and policies run on the trace's first requests, their timestamps
stretched to each load x that capacity (:mod:`perllm.experiments.robustness_traces`). A trace
cell whose requests mostly fit no server is skipped, and the skips are counted. Trace cells are
scored and reported as their own families, ``FAMILY/TRACE`` (e.g. ``gpu-edge/mooncake``), after
the synthetic ones: their tables, rows of ``robustness.csv``, ``clusters.csv`` and
``scores.csv``, and ``robustness-FAMILY-TRACE.png``.
``prefix-affinity`` differs from ``least-loaded`` only where prompts share prefix blocks, so
unless ``--policies`` names it it runs on the Mooncake cells only.

``--sweep KEY=V1,V2,...`` (at most 5 values) runs CS-UCB at each value of its parameter KEY, as
variants ``cs-ucb[KEY=V]``, and every other chosen policy once; the variants are scored against
the baselines (not against one another) and each family gets a table of the sweep and of how
often CS-UCB's frontier dominates each baseline (:mod:`perllm.experiments.robustness_sweep`),
``sweep-FAMILY.png`` and ``sweep.csv``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import yaml

from perllm.cli_args import key_value, writable_dir
from perllm.clustergen.families import (
    FAMILIES,
    FAMILY_SEED_STRIDE,
    SHORT_RUNS,
    cluster_seed,
    family_overrides,
)
from perllm.clustergen.settings import settings_from
from perllm.errors import InputError
from perllm.experiments import checkpoint
from perllm.experiments.checkpoint import Call, Checkpoint, run_saving, saved_runs
from perllm.experiments.executors import ExecutorSpec
from perllm.experiments.robustness import cloud_check
from perllm.experiments.robustness_plan import (
    Chosen,
    Collected,
    cell_policies,
    collect,
    decode,
    result_key,
)
from perllm.experiments.robustness_report import (
    FamilyScores,
    plot,
    print_cloud_checks,
    print_tables,
    print_trace_heading,
    write_csvs,
    write_scores,
)
from perllm.experiments.robustness_runs import (
    RunTask,
    bound_available,
    bound_task,
    generate_task,
    run_task,
)
from perllm.experiments.robustness_sweep import (
    MAX_SWEEP_VALUES,
    SweepPoint,
    SweepSummary,
    plot_sweep,
    print_sweep,
    summarize_sweep,
    sweep_label,
    write_sweep_csv,
)
from perllm.experiments.robustness_traces import (
    TRACES,
    TraceCluster,
    trace_cluster_task,
    trace_label,
)
from perllm.experiments.rows import GeneratedCluster, RunRow
from perllm.experiments.show import progress_bar
from perllm.experiments.sweep_args import add_sweep_arguments, executor_spec, resume_command
from perllm.policies.registry import all_entries, lookup, make_policy

LOADS = (0.7, 1.0, 1.5)
SWEPT = "cs-ucb"  # the policy --sweep varies


def _fail(message: str) -> NoReturn:
    """Bad input: one line on standard error, exit status 2."""
    print(f"robustness: {message}", file=sys.stderr)
    sys.exit(2)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clusters", type=int, default=20)
    parser.add_argument("--first-cluster", type=int, default=0, help="seed of the first cluster")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--loads", default=",".join(map(str, LOADS)), help="x capacity")
    parser.add_argument(
        "--requests", type=int, default=SHORT_RUNS["requests"], help="least requests per run"
    )
    parser.add_argument(
        "--steady-multiple",
        type=float,
        default=SHORT_RUNS["steady-multiple"],
        help="requests per run >= this x slots",
    )
    parser.add_argument(
        "--max-requests", type=int, default=SHORT_RUNS["max-requests"], help="most requests per run"
    )
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
    parser.add_argument(
        "--family",
        default="mixed",
        metavar="|".join([*FAMILIES, "all"]),
        help="the cluster family (perllm.clustergen.families); all: each, reported separately",
    )
    parser.add_argument(
        "--traces",
        default=",".join(TRACES),
        metavar="|".join([",".join(TRACES), "none"]),
        help="the production traces of the trace cells (docs/traces.md); none: no trace cells",
    )
    parser.add_argument(
        "--sweep",
        metavar="KEY=V1,V2,...",
        help=f"run {SWEPT} at each value (at most {MAX_SWEEP_VALUES}) of its parameter KEY",
    )
    add_sweep_arguments(parser, "--workers")
    return parser.parse_args()


def _sweep(args: argparse.Namespace) -> tuple[str, list[SweepPoint]] | None:
    """``--sweep``'s key and points, checked (a known parameter, 1 to 5 distinct values)."""
    if args.sweep is None:
        return None
    key, sep, rest = args.sweep.partition("=")
    key, values = key.strip(), [v.strip() for v in rest.split(",")]
    if not sep or not key or not all(values):
        _fail(f"--sweep: expected KEY=V1,V2,... (e.g. confidence=0.5,1,2), got {args.sweep!r}")
    config = lookup(SWEPT).config.model_fields
    known = sorted(field.alias or name for name, field in config.items())
    if key not in known:
        _fail(f"--sweep: {SWEPT} has no parameter {key!r}; its parameters: {', '.join(known)}")
    if len(values) > MAX_SWEEP_VALUES:
        _fail(f"--sweep: at most {MAX_SWEEP_VALUES} values, got {len(values)}")
    if len(set(values)) < len(values):
        _fail(f"--sweep: a value repeats in {rest!r}")
    return key, [SweepPoint(sweep_label(key, v), v) for v in values]


def _policies(args: argparse.Namespace) -> Chosen:
    """Label -> (registered policy, params), from --policies, --param, --variant and --sweep."""
    chosen: Chosen = {
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
            _fail(f"--param {spec}: unknown policy {label!r}")
        chosen[label][1].update(key_value(pair))
    if args.policies:
        names = [name.strip() for name in args.policies.split(",")]
        unknown = [name for name in names if name not in chosen]
        if unknown:
            _fail(f"--policies: unknown {', '.join(unknown)}; known: {', '.join(chosen)}")
        chosen = {name: chosen[name] for name in names}
    sweep = _sweep(args)
    if sweep is not None:
        key, points = sweep
        base = chosen.pop(SWEPT, (SWEPT, {}))[1]
        swept = {p.label: (SWEPT, {**base, key: yaml.safe_load(p.value)}) for p in points}
        chosen = {**swept, **chosen}
    for label, (policy, params) in chosen.items():
        try:
            make_policy(policy, params)  # check names and parameters before any run
        except InputError as err:
            _fail(f"{label}: {err}")
    return chosen


def _contenders(chosen: Chosen, sweep: list[SweepPoint]) -> list[str]:
    """The non-clairvoyant policies scored against one another (never the sweep's variants)."""
    swept = {p.label for p in sweep}
    return [
        label
        for label, (policy, _) in chosen.items()
        if not lookup(policy).clairvoyant and label not in swept
    ]


def _families(args: argparse.Namespace) -> list[str]:
    if args.family == "all":
        return list(FAMILIES)
    if args.family not in FAMILIES:
        _fail(f"--family: unknown family {args.family!r}; known: {', '.join(FAMILIES)}, all")
    return [args.family]


def _traces(args: argparse.Namespace) -> list[str]:
    """The traces of ``--traces`` (none: an empty list)."""
    if args.traces.strip() == "none":
        return []
    names = [name.strip() for name in args.traces.split(",")]
    if not all(names):
        _fail(f"--traces: expected TRACE,TRACE,... or none, got {args.traces!r}")
    unknown = [name for name in names if name not in TRACES]
    if unknown:
        _fail(f"--traces: unknown {', '.join(unknown)}; known: {', '.join(TRACES)}, none")
    if len(set(names)) < len(names):
        _fail(f"--traces: a trace repeats in {args.traces!r}")
    return names


def _run(
    args: argparse.Namespace, chosen: Chosen, executor: ExecutorSpec, saved: Checkpoint
) -> Collected:
    loads = _loads(args)
    use_bound = _use_bound(args)
    traces = _traces(args)
    results = saved.results
    skipped = [0]  # the runs of the skipped trace cells, for the progress bar

    def runs(cluster: GeneratedCluster, trace: str = "") -> list[Call]:
        """The runs (and bounds) of a generated or trace cell cluster not saved yet."""
        calls: list[tuple[Any, Callable[..., Any], RunTask]] = []
        for load in loads:
            for seed in range(args.seeds):
                for label_, (policy, params) in _cell_policies(args, chosen, trace).items():
                    task = RunTask(
                        cluster.seed,
                        cluster.data,
                        cluster.capacity.rate_rps,
                        load,
                        seed,
                        label_,
                        policy,
                        params,
                        cluster.family,
                        trace,
                    )
                    key = result_key("run", trace, task.cluster, load, seed, label_)
                    calls.append((key, run_task, task))
                if use_bound:
                    key = result_key("bound", trace, task.cluster, load, seed)
                    calls.append((key, bound_task, task))
        return [(key, fn, (task,)) for key, fn, task in calls if key not in results]

    def trace_runs(cell: TraceCluster) -> list[Call]:
        if cell.cluster is None:
            skipped[0] += _cell_runs(args, chosen, cell.trace)
            return []
        return runs(cell.cluster, cell.trace)

    def after(generated: GeneratedCluster) -> list[Call]:
        """A generated cluster's runs and its trace cell clusters (or their runs)."""
        calls = runs(generated)
        settings = _settings(args, generated.family)
        for trace in traces:
            key = result_key("cluster", trace, generated.seed)
            if key in results:
                calls += trace_runs(results[key])
            else:
                calls.append((key, trace_cluster_task, (generated, trace, settings)))
        return calls

    todo: list[Call] = []
    for family, s in _cluster_seeds(args):
        if ("cluster", s) in results:
            todo += after(results["cluster", s])
        else:
            todo.append((("cluster", s), generate_task, (s, _settings(args, family), family)))
    label = (
        f"robustness: {len(_families(args))} x {args.clusters} clusters x {len(loads)} loads "
        f"x {args.seeds} seeds" + (f" (and {len(traces)} traces)" if traces else "")
    )

    def follow(key: Any, result: Any) -> list[Call]:
        """A generated cluster's runs and trace cells, or a trace cell cluster's runs."""
        if key[0] == "cluster":
            return after(result)
        return trace_runs(result) if key[0] == "trace-cluster" else []

    total = _total_runs(args, chosen)
    with progress_bar(total, label) as advance:
        run_saving(executor, todo, saved, lambda n: advance(min(n + skipped[0], total)), follow)
    return collect(results, chosen, traces, named=bool(args.policies))


def _cell_policies(args: argparse.Namespace, chosen: Chosen, trace: str = "") -> Chosen:
    """The policies run on a cell of ``trace`` (empty: synthetic; ``cell_policies``)."""
    return cell_policies(chosen, trace, named=bool(args.policies))


def _settings(args: argparse.Namespace, family: str) -> dict[str, Any]:
    """The generator settings of ``family``, with the run length and ``--set`` on top."""
    settings: dict[str, Any] = {
        "requests": args.requests,
        "steady-multiple": args.steady_multiple,
        "max-requests": args.max_requests,
    }
    for pair in args.set:
        settings.update(key_value(pair))
    return family_overrides(family, settings)


def _loads(args: argparse.Namespace) -> list[float]:
    return [float(x) for x in args.loads.split(",")]


def _cluster_seeds(args: argparse.Namespace) -> list[tuple[str, int]]:
    """Each family's cluster seeds (perllm.clustergen.families.cluster_seed)."""
    numbers = range(args.first_cluster, args.first_cluster + args.clusters)
    return [(f, cluster_seed(f, n)) for f in _families(args) for n in numbers]


def _use_bound(args: argparse.Namespace) -> bool:
    return bound_available() and not args.no_bound


def _cell_runs(args: argparse.Namespace, chosen: Chosen, trace: str = "") -> int:
    """The runs and bounds of one generated or trace cell cluster."""
    policies = len(_cell_policies(args, chosen, trace)) + (1 if _use_bound(args) else 0)
    return len(_loads(args)) * int(args.seeds) * policies


def _total_runs(args: argparse.Namespace, chosen: Chosen) -> int:
    """Every result the benchmark saves: clusters, trace cell clusters, runs and bounds."""
    per_cluster = 1 + _cell_runs(args, chosen)
    per_cluster += sum(1 + _cell_runs(args, chosen, trace) for trace in _traces(args))
    return len(_families(args)) * int(args.clusters) * per_cluster


def _header(args: argparse.Namespace, chosen: Chosen) -> dict[str, Any]:
    """What the runs depend on: a resumed benchmark must have the same. A trace cell's keys
    name its trace, so ``--traces`` is not part of it: a checkpoint resumed with other traces
    keeps every run it holds and reports those asked for."""
    return {
        "family": args.family,
        "clusters": [seed for _, seed in _cluster_seeds(args)],
        "seeds": args.seeds,
        "loads": _loads(args),
        "settings": {f: _settings(args, f) for f in _families(args)},
        "policies": chosen,
        "bound": _use_bound(args),
    }


def _check_settings(args: argparse.Namespace) -> None:
    """Validate each family's settings and cluster numbers ahead of the runs (exit 2 if bad)."""
    if args.first_cluster < 0 or args.first_cluster + args.clusters > FAMILY_SEED_STRIDE:
        _fail(f"--first-cluster/--clusters: cluster numbers must lie in [0, {FAMILY_SEED_STRIDE})")
    for family in _families(args):
        settings_from(_settings(args, family), f"--family {family} --set")


def _report(
    args: argparse.Namespace,
    chosen: Chosen,
    rows: list[RunRow],
    cells: list[TraceCluster],
    out: Path,
) -> list[str]:
    """Print and plot each family's results, then each trace's; return the files written."""
    sweep = _sweep(args)
    points = sweep[1] if sweep else []
    swept = {p.label for p in points}
    families, traces = _families(args), _traces(args)
    groups = [(f, "" if len(families) == 1 else f"-{f}", "") for f in families]
    groups += [(trace_label(f, t), f"-{f}-{t}", t) for t in traces for f in families]
    written: list[str] = []
    scored: list[FamilyScores] = []
    sweeps: list[tuple[str, SweepSummary]] = []
    for index, (family, suffix, trace) in enumerate(groups):
        if index == len(families) and traces:
            print_trace_heading(cells, traces)
        mine = [row for row in rows if row.family == family]
        if not mine:
            continue
        policies = _cell_policies(args, chosen, trace)
        contenders = _contenders(policies, points)
        loads = sorted({float(row.load) for row in mine})
        results = print_tables(mine, contenders, list(policies), loads, family)
        plot(mine, results, contenders, out / f"robustness{suffix}.png")
        written.append(f"robustness{suffix}.png")
        checks = []
        if "cloud-only" in policies:
            ucb = [label for label, (policy, _) in policies.items() if policy == SWEPT]
            checks = [cloud_check(mine, label) for label in ucb]
            print_cloud_checks(checks, family)
        scored.append(FamilyScores(family, results, checks))
        if sweep is not None:
            baselines = [label for label in contenders if label not in swept]
            summary = summarize_sweep(mine, sweep[0], points, baselines)
            print_sweep(summary, family)
            name = family.replace("/", "-")
            plot_sweep(summary, family, out / f"sweep-{name}.png")
            written.append(f"sweep-{name}.png")
            sweeps.append((family, summary))
    write_scores(scored, out / "scores.csv")
    written.append("scores.csv")
    if sweeps:
        write_sweep_csv(sweeps, out / "sweep.csv")
        written.append("sweep.csv")
    return written


def main() -> None:
    args = _arguments()
    _families(args)
    _traces(args)
    chosen = _policies(args)
    path = Path(args.out) / checkpoint.FILENAME
    try:
        _check_settings(args)
        executor = executor_spec(args, args.workers)
        out = writable_dir("--out", Path(args.out))
        started = time.perf_counter()
        header = _header(args, chosen)
        with Checkpoint(path, header, resume=args.resume, decode=decode) as saved:
            collected = _run(args, chosen, executor, saved)
    except InputError as err:
        _fail(str(err))
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
    rows, clusters = collected.rows, collected.clusters
    write_csvs(rows, [*clusters, *(c.cluster for c in collected.cells if c.cluster)], out)
    written = _report(args, chosen, rows, collected.cells, out)
    total = sum(int(row.requests) for row in rows)
    ran = sum(not cell.skipped for cell in collected.cells)
    print(
        f"{len(rows)} runs ({total:,} simulated requests) on {len(clusters)} clusters"
        + (f" and {ran} trace cell clusters" if collected.cells else "")
        + f" in {elapsed:.0f} s ({executor.describe()}); wrote {out}/robustness.csv, clusters.csv, "
        f"{', '.join(written)}"
    )


if __name__ == "__main__":
    main()
