"""``perllm scenarios generate``: draw a random cluster and write it as a scenario YAML."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from perllm.cli_args import integer, key_value, positive_float
from perllm.errors import InputError


def _cmd_generate(args: argparse.Namespace) -> int:
    from perllm.clustergen import generate, settings_from

    changes: dict[str, Any] = {}
    for pair in args.set or []:
        changes.update(pair)
    if args.load is not None:
        changes["load"] = args.load
    if args.requests is not None:
        changes["requests"] = args.requests
    settings = settings_from(changes, "--set")
    generated = generate(args.seed, settings)
    text = generated.yaml_text()
    if args.out is None:
        sys.stdout.write(text)
        return 0
    path = Path(args.out)
    try:
        path.write_text(text)
    except OSError as err:
        raise InputError(f"--out: cannot write {str(path)!r}: {err.strerror}") from None
    capacity = generated.capacity.rate_rps
    print(
        f"{path}: {generated.data['description']}; capacity {capacity:.4g} req/s, "
        f"arrival rate {settings.load:g} x capacity"
    )
    return 0


def add_generate(scenarios: argparse.ArgumentParser, parser_class: type[Any]) -> None:
    """Add ``generate`` under the ``perllm scenarios`` command."""
    sub = scenarios.add_subparsers(dest="scenarios_command", parser_class=parser_class)
    gen = sub.add_parser(
        "generate",
        help="draw a random edge-cloud cluster (with model mismatch) as a scenario YAML",
        description=(
            "Draw a random but realistic edge-cloud cluster from the catalog, measure its "
            "capacity and write a scenario whose arrival rate is --load x capacity."
        ),
    )
    gen.add_argument("--seed", required=True, type=integer(0), help="same seed, same scenario")
    gen.add_argument("--out", help="YAML file to write (default: standard output)")
    gen.add_argument("--load", type=positive_float, help="arrival rate / capacity (default 1)")
    gen.add_argument("--requests", type=integer(10), help="the scenario's run length")
    gen.add_argument(
        "--set",
        action="append",
        type=key_value,
        metavar="KEY=VALUE",
        help="a generator setting, e.g. servers=[2,10] or speed-mismatch=0.2 "
        "(see perllm.clustergen.settings)",
    )
    gen.set_defaults(func=_cmd_generate)
