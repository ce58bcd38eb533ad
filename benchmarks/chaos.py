"""Nothing lost, nothing hangs: 1,000 calls through the gateway while backends are SIGKILLed
and the gateway itself is stopped with SIGTERM and restarted under load.

Run: ``python benchmarks/chaos.py [--requests 1000] [--concurrency 32] [--kill-every 80]
[--gateway-restart-every 250] [--seed 0]``.

Three emulated backends (``perllm emulate``, 20x faster than real time) and the gateway
(``perllm serve``, CS-UCB) run as separate processes on loopback. Clients send streamed and
non-streamed calls with mixed ``max_tokens`` (a few over every backend's cap); a tenth of the
streams hang up after their first token. After every ``--kill-every`` finished calls a backend
is SIGKILLed, and restarted ``--restart-after`` calls later; after every
``--gateway-restart-every`` finished calls the gateway gets one SIGTERM while the clients go on
calling, and is started again on its port once it has exited (calls refused meanwhile are sent
again). The table counts how calls ended as the clients saw them, as the gateway's ``/metrics``
counted them and as its log recorded them; see ``benchmarks/chaos_harness.py``. Deadlines follow
the emulated backends' speed plus this machine's measured cost of a call; the report names the
CPU and its cores, since its timings depend on them. It stops by itself (every wait is bounded)
and exits 1 unless lost = 0 and hung = 0, every request id is logged once, and every process
exits 0 on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

from chaos_harness import ChaosSettings, render, run_chaos


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--kill-every", type=int, default=80)
    parser.add_argument("--restart-after", type=int, default=20)
    parser.add_argument(
        "--gateway-restart-every",
        type=int,
        default=250,
        help="SIGTERM and restart the gateway after every N finished calls",
    )
    parser.add_argument("--drain-s", type=float, default=5.0, help="the gateway's drain-s")
    parser.add_argument("--time-scale", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", help="where logs go (default: a temporary directory)")
    args = parser.parse_args()
    settings = ChaosSettings(
        requests=args.requests,
        concurrency=args.concurrency,
        kill_every=args.kill_every,
        restart_after=args.restart_after,
        gateway_restart_every=args.gateway_restart_every,
        drain_s=args.drain_s,
        time_scale=args.time_scale,
        seed=args.seed,
    )
    with tempfile.TemporaryDirectory(prefix="perllm-chaos-") as tmp:
        workdir = Path(args.workdir) if args.workdir else Path(tmp)
        report = asyncio.run(run_chaos(settings, workdir))
        print(render(report))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
