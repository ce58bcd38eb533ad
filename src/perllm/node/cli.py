"""The ``perllm node`` and ``perllm profile`` subcommands (wired by :func:`add_node_commands`)."""

from __future__ import annotations

import argparse
import signal
import time
from pathlib import Path
from types import FrameType

from perllm.cli_args import integer, port, positive_float
from perllm.domain import PowerSpec
from perllm.errors import InputError

__all__ = ["add_node_commands"]


class _Stop(Exception):
    """Raised by the SIGTERM handler to leave the serving loop."""


def _int_list(text: str) -> tuple[int, ...]:
    """Comma-separated integers ``>= 1`` such as ``32,128,512``."""
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected integers >= 1, got {text!r}")
    return values


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise _Stop


def _cmd_node_llamacpp(args: argparse.Namespace) -> int:
    from perllm.node.llamacpp import LlamaCppNode, NodeError

    model = Path(args.model) if args.model else None
    node = LlamaCppNode(args.port, threads=args.threads, model=model, host=args.host)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        with node:
            print(f"llama.cpp node ready: {node.url}/v1 (model {node.alias!r}); Ctrl-C to stop",
                  flush=True)  # fmt: skip
            try:
                while node.process is not None and node.process.poll() is None:
                    time.sleep(0.5)
            except (KeyboardInterrupt, _Stop):
                reading = node.stop()
                energy = (
                    reading.describe()
                    if reading is not None
                    else "energy not measured (RAPL not readable here; `perllm profile "
                    "--hardware NAME` estimates it from the power model)"
                )
                print(f"llama.cpp node stopped; {energy}", flush=True)
                return 0
            code = node.process.returncode if node.process is not None else None
            raise NodeError(f"llama.cpp server exited with code {code}: {node.log_tail()}")
    finally:
        signal.signal(signal.SIGTERM, previous)


def _power(args: argparse.Namespace) -> tuple[PowerSpec | None, str]:
    from perllm.perf.catalog import HARDWARE

    if args.hardware is not None:
        if args.hardware not in HARDWARE:
            raise InputError(f"--hardware: unknown {args.hardware!r}; known: {', '.join(HARDWARE)}")
        hw = HARDWARE[args.hardware]
        spec = PowerSpec(hw.idle_w, hw.max_w, hw.batch1_fraction, hw.log2_slope)
        return spec, f"catalog: {hw.name}"
    if (args.idle_w is None) != (args.max_w is None):
        raise InputError("--idle-w and --max-w: give both or neither")
    if args.idle_w is not None:
        return PowerSpec(args.idle_w, args.max_w), "given: --idle-w/--max-w"
    return None, ""


def _cmd_profile(args: argparse.Namespace) -> int:
    from rich.progress import Progress

    from perllm.cli_args import writable_dir
    from perllm.profiling.measure import SweepPlan
    from perllm.profiling.report import plot_profile, print_profile
    from perllm.profiling.run import profile_endpoint, save_profile

    if not args.endpoint.startswith(("http://", "https://")):
        raise InputError(f"--endpoint: expected an http(s) URL, got {args.endpoint!r}")
    out = Path(args.out)
    writable_dir("--out", out.parent if str(out.parent) else Path("."))
    power, power_source = _power(args)
    plan = SweepPlan(
        prompt_lengths=args.prompt_lengths, concurrency=args.concurrency, repeats=args.repeats,
        prefill_output_tokens=args.prefill_tokens, decode_output_tokens=args.decode_tokens,
        decode_prompt_tokens=min(args.prompt_lengths), seed=args.seed,
    )  # fmt: skip
    with Progress(transient=True) as progress:
        task = progress.add_task(f"profiling {args.endpoint}", total=plan.calls())
        run = profile_endpoint(
            args.endpoint, plan, model=args.model,
            power=power, power_source=power_source,
            advance=lambda n: progress.advance(task, n),
        )  # fmt: skip
    save_profile(run, plan, out)
    png = out.with_suffix(".png")
    plot_profile(run.fit.perf, run.data, png, f"{run.model} at {run.endpoint}")
    print_profile(run.fit.perf, run.data)
    fit = run.fit
    print(f"fit: prefill rms {fit.prefill.rms_rel:.1%}, decode rms {fit.decode.rms_rel:.1%}; "
          f"max batch {fit.max_batch}")  # fmt: skip
    print(f"energy over the sweep: {run.energy.describe()}")
    print(f"profile written to {out}; plot {png}")
    return 0


def add_node_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``perllm node llama-cpp`` and ``perllm profile`` to the ``perllm`` parser."""
    node = sub.add_parser("node", help="run a real LLM server on this machine")
    kinds = node.add_subparsers(dest="node_kind", required=True, parser_class=type(node))
    llama = kinds.add_parser("llama-cpp", help="llama.cpp on Gemma 3 270M (perllm[llamacpp])")
    llama.add_argument("--port", type=port, default=8081)
    llama.add_argument("--threads", type=integer(1), default=1)
    llama.add_argument("--model", help="GGUF file (default: the Gemma 3 270M package)")
    llama.add_argument("--host", default="127.0.0.1")
    llama.set_defaults(func=_cmd_node_llamacpp)

    prof = sub.add_parser("profile", help="measure a live server and fit the perf model")
    prof.add_argument("--endpoint", required=True, help="server root, e.g. http://host:port")
    prof.add_argument("--out", required=True, help="profile YAML to write (a PNG goes beside)")
    prof.add_argument("--model", help="model name (default: the first at /v1/models)")
    prof.add_argument("--prompt-lengths", type=_int_list,
                      default=(32, 128, 256, 512), metavar="N,N,...")  # fmt: skip
    prof.add_argument("--concurrency", type=_int_list, default=(1, 2, 4),
                      metavar="C,C,...")  # fmt: skip
    prof.add_argument("--repeats", type=integer(1), default=3)
    prof.add_argument("--prefill-tokens", type=integer(1), default=16,
                      help="output tokens per prefill call")  # fmt: skip
    prof.add_argument("--decode-tokens", type=integer(1), default=64,
                      help="output tokens per concurrent stream")  # fmt: skip
    prof.add_argument("--hardware", help="catalog hardware whose power model estimates energy")
    prof.add_argument("--idle-w", type=positive_float, help="idle power for the energy estimate")
    prof.add_argument(
        "--max-w", type=positive_float, help="full-load power for the energy estimate"
    )
    prof.add_argument("--seed", type=integer(0), default=0)
    prof.set_defaults(func=_cmd_profile)
