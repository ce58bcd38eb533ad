"""The flags every sweep shares: where its runs execute (``--executor``, ``--ray-address``) and
whether it picks up an interrupted run (``--resume``); and the command line a sweep records.
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Sequence

from perllm.cli_args import MAX_PORT
from perllm.errors import InputError
from perllm.experiments.executors import EXECUTORS, ExecutorSpec, preflight

__all__ = [
    "add_sweep_arguments",
    "executor_spec",
    "ray_address",
    "recorded_command",
    "resume_command",
]


def ray_address(text: str) -> str:
    """``auto`` (the cluster started on this machine) or ``HOST:PORT`` of a Ray head node."""
    if text == "auto":
        return text
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= MAX_PORT:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT or auto, got {text!r}")
    return text


def add_sweep_arguments(
    parser: argparse.ArgumentParser, workers_flag: str, *, resume: bool = True
) -> None:
    """Add ``--executor``, ``--ray-address`` and (with ``resume``) ``--resume``.

    ``workers_flag`` names the flag that sets the local workers (processes or Ray CPUs).
    """
    group = parser.add_argument_group("where the runs execute")
    group.add_argument(
        "--executor",
        choices=EXECUTORS,
        default="process",
        help=f"process: a local process pool ({workers_flag} workers, the default); "
        "ray: one Ray task per run",
    )
    group.add_argument(
        "--ray-address",
        type=ray_address,
        metavar="HOST:PORT",
        help="with --executor ray: a running Ray cluster (`ray start --head` prints the address; "
        f"auto: the one on this machine); without it, Ray starts here with {workers_flag} CPUs",
    )
    if not resume:
        return
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep the runs an interrupted sweep saved in its output directory; run the others",
    )


def executor_spec(args: argparse.Namespace, workers: int) -> ExecutorSpec:
    """The executor the flags ask for, checked (Ray installed, its cluster reachable)."""
    if args.ray_address is not None and args.executor != "ray":
        raise InputError("--ray-address: only with --executor ray")
    spec = ExecutorSpec(args.executor, workers, args.ray_address)
    preflight(spec)
    return spec


# Flags that change where and how a sweep runs, never its results: left out of the recorded
# command, so that outputs do not depend on them. The value: how many arguments follow the flag.
EXECUTION_FLAGS = {"--executor": 1, "--ray-address": 1, "--resume": 0}


def recorded_command(
    program: str, argv: Sequence[str], extra_flags: dict[str, int] | None = None
) -> str:
    """``program argv`` without the execution flags (and ``extra_flags``, such as ``--jobs``)."""
    flags = {**EXECUTION_FLAGS, **(extra_flags or {})}
    kept: list[str] = []
    skip = 0
    for arg in argv:
        if skip:
            skip -= 1
            continue
        name = arg.partition("=")[0]
        if name in flags:
            skip = flags[name] if "=" not in arg else 0
            continue
        kept.append(arg)
    return " ".join([program, shlex.join(kept)]) if kept else program


def resume_command(program: str, argv: Sequence[str]) -> str:
    """The command line that resumes the sweep ``program argv``."""
    args = list(argv) if "--resume" in argv else [*argv, "--resume"]
    return f"{program} {shlex.join(args)}"
