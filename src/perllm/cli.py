"""The ``perllm`` command line. Thin: it parses flags and delegates.

Every user error (bad flag, scenario, trace, parameter) ends with one line on stderr naming the
field and the problem, and exit code 2; never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from perllm.cli_args import at_least, integer, key_value, rate_rps, requests, writable_dir
from perllm.errors import InputError, PerllmError

if TYPE_CHECKING:
    from perllm.cluster.scenario import Cluster


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise InputError(message)


def _cmd_simulate(args: argparse.Namespace) -> int:
    from perllm.cluster import scenario
    from perllm.experiments.show import progress_bar, summary_table
    from perllm.metrics.export import write_json, write_records_csv, write_regret_csv
    from perllm.metrics.summary import regret_curve
    from perllm.policies.registry import make_policy
    from perllm.sim.runner import run_once, workload_for

    cluster = _trace_window(scenario.load(args.scenario), args)
    params: dict[str, Any] = {}
    for pair in args.param or []:
        params.update(pair)
    make_policy(args.policy, params)  # check the policy and its parameters before any output
    out = writable_dir("--out", Path(args.out)) if args.out else None
    # The workload first: a bad trace stops the run before any progress is shown.
    reqs = workload_for(cluster, requests=args.requests, rate_rps=args.rate, seed=args.seed)
    n = len(reqs)
    with progress_bar(n, f"simulating {args.policy}", enabled=n >= 2000) as advance:
        result = run_once(
            cluster,
            args.policy,
            requests=n,
            rate_rps=args.rate,
            seed=args.seed,
            policy_params=params,
            progress=advance,
            track_oracle=args.track_oracle,
            workload=reqs,
        )
    summary = result.summary
    if args.track_oracle:
        times, regret = regret_curve(result.recorder, cluster.weights)
        final = float(regret[-1]) if regret.size else 0.0
        summary = dataclasses.replace(summary, regret_vs_oracle=final)
    if out is not None:
        write_records_csv(result.recorder, out / "records.csv")
        write_json(summary.to_json(), out / "summary.json")
        if args.track_oracle:
            write_regret_csv(times, regret, out / "regret.csv")
    if args.json:
        print(json.dumps(summary.to_json(), indent=2))
    else:
        summary_table([summary], title=f"{cluster.name}: {args.policy}")
        refused = len(result.recorder.reasons)
        if refused:
            print(
                f"{refused} requests refused as too long for the servers they could go to "
                "(counted as missed; records.csv says why, column refused_reason)"
            )
        cached, prompt = result.recorder.prefill_saved()
        if cached:
            print(
                f"prefix caches saved the prefill of {cached:,} of {prompt:,} prompt tokens "
                f"({100 * cached / prompt:.1f}%; records.csv column cached_tokens)"
            )
        if out is not None:
            print(f"records and summary written to {out}/")
    return 0


def _trace_window(cluster: Cluster, args: argparse.Namespace) -> Cluster:
    """The cluster with ``--trace-start`` / ``--trace-window`` applied to its trace."""
    changes: dict[str, Any] = {}
    if args.trace_start is not None:
        changes["start_s"] = args.trace_start
    if args.trace_window is not None:
        changes["window"] = args.trace_window
    if not changes:
        return cluster
    trace = cluster.workload.trace
    if trace is None:
        flag = "--trace-start" if args.trace_start is not None else "--trace-window"
        raise InputError(f"{flag}: scenario {cluster.name!r} replays no trace")
    if changes.get("window", trace.window) == "busiest-hour" and changes.get("start_s", 0.0):
        raise InputError("--trace-start: --trace-window busiest-hour chooses its own start")
    if changes.get("window") == "busiest-hour":
        changes["start_s"] = 0.0
    workload = cluster.workload.model_copy(update={"trace": trace.model_copy(update=changes)})
    return dataclasses.replace(cluster, workload=workload)


def _cmd_bound(args: argparse.Namespace) -> int:
    from perllm.bound import bound_for_run
    from perllm.bound.result import print_table
    from perllm.cluster import scenario
    from perllm.experiments.show import stage_status

    cluster = scenario.load(args.scenario)
    n = args.requests or cluster.requests
    with stage_status(enabled=n >= 2000) as say:
        result = bound_for_run(
            cluster, requests=n, rate_rps=args.rate, seed=args.seed, progress=say
        )
    rate = args.rate if args.rate is not None else cluster.workload.arrivals.rate_rps
    if args.json:
        meta = {"scenario": cluster.name, "seed": args.seed, "rate_rps": rate}
        print(json.dumps({**meta, **result.to_json()}, indent=2))
    else:
        print_table(
            result, f"{cluster.name}: bounds ({n} requests, {rate:g} req/s, seed {args.seed})"
        )
    return 0


def _cmd_scenarios(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from perllm.cluster import scenario

    table = Table(title="built-in scenarios")
    for column in ("name", "servers", "description"):
        table.add_column(column)
    for name in scenario.builtin_names():
        cluster = scenario.load(name)
        table.add_row(name, scenario.describe(cluster), cluster.config.description)
    Console().print(table)
    return 0


def _cmd_policies(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from perllm.policies.registry import ENTRIES, all_entries

    table = Table(title="policies (--policy NAME, --param KEY=VALUE)")
    for column in ("name", "description", "parameters"):
        table.add_column(column, overflow="fold")
    for entry in all_entries():
        plugin = "" if entry in ENTRIES else " (plugin)"
        table.add_row(entry.name + plugin, entry.summary, entry.parameters())
    console = Console(width=160)
    console.print(table)
    for entry in all_entries():
        for name, field in entry.config.model_fields.items():
            if field.description:
                console.print(f"{entry.name} {name.replace('_', '-')}: {field.description}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="perllm", description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    sim = sub.add_parser("simulate", help="simulate one policy on one scenario")
    sim.add_argument("--scenario", required=True, help="built-in name or YAML file")
    sim.add_argument("--policy", required=True, help="policy name (see `perllm policies`)")
    sim.add_argument("--param", action="append", type=key_value, metavar="KEY=VALUE")
    sim.add_argument("--requests", type=requests)
    sim.add_argument(
        "--rate", type=rate_rps, help="arrival rate, requests/s (a trace: its timestamps rescaled)"
    )
    sim.add_argument("--seed", type=integer(0), default=0)
    sim.add_argument(
        "--trace-start",
        type=at_least(0.0),
        metavar="SECONDS",
        help="a trace replay starts this long after the trace's first request",
    )
    sim.add_argument(
        "--trace-window",
        choices=("first", "busiest-hour"),
        help="a trace replay from --trace-start (first) or from the hour with most arrivals",
    )
    sim.add_argument("--out", help="directory for records.csv and summary.json")
    sim.add_argument("--json", action="store_true", help="print the summary JSON to stdout")
    sim.add_argument(
        "--track-oracle",
        action="store_true",
        help="also ask the clairvoyant oracle at every decision and report regret against it",
    )
    sim.set_defaults(func=_cmd_simulate)

    bound = sub.add_parser(
        "bound", help="bounds no schedule of the same trace can beat (an LP relaxation)"
    )
    bound.add_argument("--scenario", required=True, help="built-in name or YAML file")
    bound.add_argument("--requests", type=requests)
    bound.add_argument("--rate", type=rate_rps, help="arrival rate, requests/s")
    bound.add_argument("--seed", type=integer(0), default=0)
    bound.add_argument("--json", action="store_true", help="print the bounds as JSON")
    bound.set_defaults(func=_cmd_bound)

    scenarios_parser = sub.add_parser("scenarios", help="list built-in scenarios; generate one")
    scenarios_parser.set_defaults(func=_cmd_scenarios)
    from perllm.clustergen.cli import add_generate

    add_generate(scenarios_parser, _Parser)
    sub.add_parser("policies", help="list policies").set_defaults(func=_cmd_policies)

    from perllm.experiments.cli import add_reproduce

    add_reproduce(sub)

    from perllm.gateway.cli import add_gateway_commands
    from perllm.node.cli import add_node_commands

    add_gateway_commands(sub)
    add_node_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        result: int = args.func(args)
        return result
    except PerllmError as err:
        print(f"perllm: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("perllm: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
