"""The ``perllm reproduce`` subcommand."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

from perllm.cli_args import integer
from perllm.experiments.sweep_args import add_sweep_arguments


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from perllm.cli_args import writable_dir
    from perllm.experiments.checkpoint import saved_runs
    from perllm.experiments.grid import GridConfig
    from perllm.experiments.reproduce import checkpoint_path, reproduce, total_runs
    from perllm.experiments.show import progress_bar
    from perllm.experiments.sweep_args import executor_spec, recorded_command, resume_command

    executor = executor_spec(args, args.jobs)
    out = writable_dir("--out", Path(args.out))
    grid = GridConfig.preset(args.quick, args.seeds, planner=args.planner)
    if args.requests is not None:
        grid = dataclasses.replace(grid, requests=args.requests)
    if args.policies is not None:
        chosen = _policies(args.policies)
        grid = dataclasses.replace(grid, policies=chosen, trace_policies=chosen)
    if args.no_traces:
        grid = dataclasses.replace(grid, traces=())
    argv = sys.argv[1:] or ["reproduce"]
    command = recorded_command("perllm", argv, {"--jobs": 1})
    total = total_runs(grid)
    label = f"reproduce ({'quick' if args.quick else 'full'} grid, {executor.describe()})"
    try:
        with progress_bar(total, label) as advance:
            report = reproduce(grid, out, executor, advance, command, resume=args.resume)
    except KeyboardInterrupt:
        path = checkpoint_path(out)
        print(
            f"perllm: interrupted; {saved_runs(path)} of {total} runs saved in {path}; "
            f"resume with: {resume_command('perllm', argv)}",
            file=sys.stderr,
        )
        return 130
    print(f"report: {report}")
    print(f"results: {out / 'results.csv'}, {out / 'results.json'}; plots: {out}/*.png")
    return 0


def _policies(names: str) -> tuple[str, ...]:
    """``--policies``: registered names (plugins too), CS-UCB among them."""
    from perllm.errors import InputError
    from perllm.policies.registry import lookup

    chosen = tuple(dict.fromkeys(name.strip() for name in names.split(",") if name.strip()))
    for name in chosen:
        try:
            lookup(name)
        except InputError as err:
            raise InputError(f"--policies: {str(err).removeprefix('--policy: ')}") from None
    if "cs-ucb" not in chosen:
        raise InputError("--policies: must include cs-ucb (the report compares every policy to it)")
    return chosen


def add_reproduce(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser(
        "reproduce", help="run the paper's evaluation grid: tables, ratios and plots"
    )
    parser.add_argument("--quick", action="store_true", help="fewer seeds, rates and conditions")
    parser.add_argument("--out", required=True, help="directory for the results")
    parser.add_argument("--seeds", type=integer(1), help="seeds per grid point")
    parser.add_argument(
        "--jobs", type=integer(1), default=os.cpu_count() or 1, help="parallel runs (CPUs)"
    )
    parser.add_argument("--requests", type=integer(10), help="requests per run")
    parser.add_argument(
        "--policies", help="comma-separated policies, plugins too (default: every built-in)"
    )
    parser.add_argument(
        "--planner", action="store_true", help="also run the clairvoyant planner (slower)"
    )
    parser.add_argument(
        "--no-traces",
        action="store_true",
        help="skip the real-trace block (the shipped traces replayed by each policy)",
    )
    add_sweep_arguments(parser, "--jobs")
    parser.set_defaults(func=_cmd_reproduce)
