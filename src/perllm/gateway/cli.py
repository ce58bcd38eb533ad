"""The ``perllm serve``, ``perllm emulate`` and ``perllm testbed`` subcommands.

Wired into :mod:`perllm.cli` by :func:`add_gateway_commands`. Like every perllm command, a bad
flag, config or port ends with one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from perllm.cli_args import at_least, integer, key_value
from perllm.cli_args import port as port_number

if TYPE_CHECKING:
    from perllm.gateway.config import GatewayConfig

__all__ = ["add_gateway_commands"]

LOG_LEVELS = ("debug", "info", "warning", "error")


def _logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # httpx logs every upstream call and health probe at info: those lines belong to debug.
    logging.getLogger("httpx").setLevel(logging.DEBUG if level == "debug" else logging.WARNING)


def _run(main: Coroutine[Any, Any, None]) -> None:
    """Run a server coroutine on uvloop where it is installed (uvicorn's fast loop), else on
    asyncio's own."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


async def serve_gateway(
    apps: Sequence[tuple[Any, socket.socket]], gateway: Any, config: GatewayConfig, log_level: str
) -> None:
    """Serve ``apps`` (``gateway`` among them) until a stop signal; on it, the gateway keeps
    its open client connections for up to ``timeouts.drain-s`` (each told to close with its
    next answer), then ends the calls still in flight (see :func:`perllm.serving.serve_apps`)."""
    from perllm.gateway.gateway import STOP_GRACE_S
    from perllm.serving import serve_apps

    async def end_calls() -> None:
        await gateway.state.gateway.shutdown(drain_s=0.0)

    await serve_apps(
        apps,
        log_level=log_level,
        graceful_s=STOP_GRACE_S + 1.0,
        keep_alive_s=config.timeouts.keep_alive_s,
        linger_s={gateway: config.timeouts.drain_s},
        on_stop=[end_calls],
    )


def _serve_config(args: argparse.Namespace) -> GatewayConfig:
    """The config, with ``--state-store`` applied and ``--workers`` checked against it."""
    from perllm.errors import InputError
    from perllm.gateway.config import load_config, store_url_problem

    config = load_config(args.config)
    if args.state_store is not None:
        problem = store_url_problem(args.state_store)
        if problem:
            raise InputError(f"--state-store: {problem}, got {args.state_store!r}")
        config = config.model_copy(update={"state_store": args.state_store})
    if args.workers > 1 and config.state_store is None:
        raise InputError(
            f"--workers {args.workers}: workers share what they learn through a state store: "
            "add `state-store: redis://127.0.0.1:6379/0` to the config or pass --state-store "
            "(start one with `redis-server --port 6379`)"
        )
    return config


def _cmd_serve(args: argparse.Namespace) -> int:
    from perllm.cli_args import writable_dir
    from perllm.gateway.app import create_app
    from perllm.gateway.shared_state import redacted
    from perllm.gateway.state import load_state
    from perllm.gateway.workers import run_workers
    from perllm.policies.registry import make_policy
    from perllm.serving import bind

    config = _serve_config(args)

    def build() -> Any:
        policy = make_policy(
            config.policy.type, dict(config.policy.params), config.policy.seed, live=True
        )
        if config.state_file is not None:
            load_state(policy, config.state_file, len(config.backends))
        return create_app(config, policy, restore_state=False)

    if config.state_file is not None:
        writable_dir("state-file", Path(config.state_file).resolve().parent)
    app = build()  # in the parent too: a bad policy or state file is one line here
    sock = bind(args.host, args.port)
    _logging(args.log_level)
    extra = f", {args.workers} workers" if args.workers > 1 else ""
    store = f", state store {redacted(config.state_store)}" if config.state_store else ""
    print(
        f"perllm gateway on http://{args.host}:{args.port}/v1 ({config.policy.type}, "
        f"{len(config.backends)} backends{extra}{store})",
        flush=True,
    )

    def serve(served: Any) -> None:
        _run(serve_gateway([(served, sock)], served, config, args.log_level))

    if args.workers == 1:
        serve(app)
        return 0
    return run_workers(args.workers, lambda: serve(build()), sock)


def _cmd_emulate(args: argparse.Namespace) -> int:
    from perllm.emulator.app import create_emulator_app
    from perllm.serving import bind, serve_apps

    app = create_emulator_app(
        args.profile,
        model=args.model,
        time_scale=args.time_scale,
        max_batch=args.max_batch,
        rtt_ms=args.rtt_ms,
    )
    sock = bind(args.host, args.port)
    _logging(args.log_level)
    print(f"emulated {args.profile} on http://{args.host}:{args.port}/v1", flush=True)
    engine = app.state.engine

    async def drain() -> None:
        await engine.drain(args.drain_s)

    _run(
        serve_apps(
            [(app, sock)], log_level=args.log_level, graceful_s=args.drain_s + 5.0, on_stop=[drain]
        )
    )
    return 0


def _cmd_testbed(args: argparse.Namespace) -> int:
    from perllm.cluster import scenario
    from perllm.emulator.app import create_emulator_app
    from perllm.gateway.app import create_app
    from perllm.gateway.testbed import PUBLIC_MODEL, plan_testbed
    from perllm.policies.registry import make_policy
    from perllm.serving import bind

    cluster = scenario.load(args.scenario)
    params: dict[str, Any] = {}
    for pair in args.param or []:
        params.update(pair)
    policy_spec = {"type": args.policy, "params": params, "seed": args.seed}
    plans, config = plan_testbed(
        cluster, host=args.host, port=args.port, time_scale=args.time_scale, policy=policy_spec
    )
    policy = make_policy(args.policy, params, args.seed, live=True)
    gateway = create_app(config, policy)
    apps = [(gateway, bind(args.host, args.port))]
    for plan in plans:
        emulator = create_emulator_app(
            plan.profile,
            time_scale=args.time_scale,
            max_batch=plan.max_batch,
            rtt_ms=plan.rtt_ms,
        )
        apps.append((emulator, bind(args.host, plan.port)))
    _logging(args.log_level)
    print(
        f"gateway  http://{args.host}:{args.port}/v1  model {PUBLIC_MODEL!r}, policy "
        f"{args.policy}, time-scale {args.time_scale:g}"
    )
    for plan in plans:
        print(
            f"  {plan.name:<12} http://{args.host}:{plan.port}/v1  {plan.profile}  "
            f"rtt {plan.rtt_ms:g} ms"
        )
    print("Ctrl-C to stop", flush=True)
    _run(serve_gateway(apps, gateway, config, args.log_level))
    return 0


def _common(parser: argparse.ArgumentParser, port: int) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=port_number, default=port)
    parser.add_argument("--log-level", choices=LOG_LEVELS, default="warning")


def add_gateway_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``serve``, ``emulate`` and ``testbed`` to the ``perllm`` subcommands."""
    serve = sub.add_parser("serve", help="run the scheduling gateway in front of real backends")
    serve.add_argument("--config", required=True, help="gateway YAML file")
    serve.add_argument(
        "--state-store",
        metavar="URL",
        help="redis://HOST:PORT/DB shared by replicas (overrides the config's state-store)",
    )
    serve.add_argument(
        "--workers",
        type=integer(1, 256),
        default=1,
        help="gateway processes sharing the port (above 1 needs a state store)",
    )
    _common(serve, 8080)
    serve.set_defaults(func=_cmd_serve)

    emulate = sub.add_parser("emulate", help="run an emulated OpenAI-compatible LLM server")
    emulate.add_argument(
        "--profile", required=True, help="HARDWARE:MODEL:DTYPE from the perf catalog, or instant"
    )
    emulate.add_argument("--model", help="model name served (default: the profile's model)")
    emulate.add_argument("--time-scale", type=at_least(0.0), default=1.0)
    emulate.add_argument("--max-batch", type=integer(1), default=32)
    emulate.add_argument("--rtt-ms", type=at_least(0.0), default=0.0)
    emulate.add_argument(
        "--drain-s",
        type=at_least(0.0),
        default=30.0,
        help="on SIGTERM, how long calls in flight may finish before they are cut (seconds)",
    )
    _common(emulate, 8000)
    emulate.set_defaults(func=_cmd_emulate)

    testbed = sub.add_parser("testbed", help="emulate a scenario's servers behind the gateway")
    testbed.add_argument("--scenario", required=True, help="built-in name or YAML file")
    testbed.add_argument("--policy", default="cs-ucb")
    testbed.add_argument("--param", action="append", type=key_value, metavar="KEY=VALUE")
    testbed.add_argument("--seed", type=integer(0), default=0)
    testbed.add_argument("--time-scale", type=at_least(1e-6), default=1.0)
    _common(testbed, 8080)
    testbed.set_defaults(func=_cmd_testbed)
