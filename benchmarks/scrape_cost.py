"""What scraping 100 backends' vLLM ``/metrics`` costs the gateway's event loop.

Run: ``python benchmarks/scrape_cost.py [--backends 100] [--rounds 20] [--servers 2]``.

A synthesized vLLM v1 ``/metrics`` page (built with prometheus-client, as vLLM builds its own:
40 families, the three load gauges the gateway reads among them, 17 histograms of 5 to 22
buckets labelled ``model_name`` and ``engine``, counters with their ``_created`` series, the
Python and process collectors, and the HTTP metrics of prometheus-fastapi-instrumentator) is
served, one loopback port per backend, by ``--servers`` starlette subprocesses. This process
builds the gateway's :class:`~perllm.gateway.scrape.Scraper` as the gateway does
(:func:`perllm.gateway.app._build`: a :class:`~perllm.gateway.view.LiveView` of a
:class:`~perllm.gateway.config.GatewayConfig` with ``--backends`` ``engine: vllm`` backends,
with its own connection per metrics URL) and times
``Scraper.scrape_all()`` over ``--rounds`` rounds, the first (connections opened) apart:

- wall: the time a full scrape of every backend takes;
- loop CPU per backend: the CPU time of the event loop's thread (``time.thread_time``) over
  the scrape, divided by the backends (the servers run in other processes; the whole
  process's CPU time, threads included, is shown too);
- of which parsing: ``parse_load`` of the page alone, timed apart;
- longest blocking stretch: in rounds of their own, a watchdog task ticks every 1 ms and
  records the longest gap between two ticks beyond the 1 ms it asked for, while the scrape
  runs; the same watchdog without a scrape gives the machine's floor.

Each round is ``--pause-s`` after the previous one (as ``scrape.interval-s`` would space them).
The figures are printed, never asserted: they depend on the machine, printed first.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from machine import header

from perllm.gateway.config import parse_config
from perllm.gateway.health import CircuitBreaker
from perllm.gateway.scrape import ENGINE_METRICS, Scraper, parse_load
from perllm.gateway.view import LiveView

MODEL = "meta-llama/Llama-2-13b-chat-hf"
LATENCY_BUCKETS = (0.3, 0.5, 0.8, 1, 1.5, 2, 2.5, 5, 10, 15, 20, 30, 40, 50, 60, 120, 240, 480,
                   960, 1920, 7680)  # fmt: skip
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5,
                7.5, 10, 20, 40, 80, 160, 640, 2560)  # fmt: skip
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 2.5, 5, 7.5,
                10, 20, 40, 80)  # fmt: skip
ITERATION_BUCKETS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
TOKEN_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 4096)  # 1-2-5 to max-model-len
HTTP_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5,
                5, 7.5, 10, 30, 60)  # fmt: skip
HANDLERS = ("/v1/completions", "/v1/chat/completions", "/health", "/metrics", "/v1/models")


def vllm_page() -> bytes:
    """A vLLM v1 ``/metrics`` page, its histograms holding a few hundred observations."""
    import random

    from prometheus_client import (
        CollectorRegistry,
        Counter,
        Gauge,
        Histogram,
        Summary,
        generate_latest,
    )
    from prometheus_client.gc_collector import GCCollector
    from prometheus_client.platform_collector import PlatformCollector
    from prometheus_client.process_collector import ProcessCollector

    reg = CollectorRegistry()
    GCCollector(registry=reg)
    PlatformCollector(registry=reg)
    ProcessCollector(registry=reg)
    rng = random.Random(0)
    labels = ("model_name", "engine")
    values = (MODEL, "0")

    def gauge(name: str, value: float) -> None:
        Gauge(name, name, labels, registry=reg).labels(*values).set(value)

    gauge("vllm:num_requests_running", 12)
    gauge("vllm:num_requests_waiting", 3)
    gauge("vllm:kv_cache_usage_perc", 0.42)
    gauge("vllm:gpu_cache_usage_perc", 0.42)  # the older name, still exported alongside
    for name, value in (
        ("vllm:prefix_cache_queries", 1.2e6),
        ("vllm:prefix_cache_hits", 4.1e5),
        ("vllm:num_preemptions", 17),
        ("vllm:prompt_tokens", 1.2e6),
        ("vllm:generation_tokens", 3.4e5),
    ):
        Counter(name, name, labels, registry=reg).labels(*values).inc(value)
    success = Counter(
        "vllm:request_success", "finished", (*labels, "finished_reason"), registry=reg
    )
    for reason in ("stop", "length", "abort"):
        success.labels(*values, reason).inc(rng.randint(1, 5000))
    info = ("block_size", "cache_dtype", "gpu_memory_utilization", "num_cpu_blocks",
            "num_gpu_blocks", "enable_prefix_caching", "swap_space_bytes",
            "sliding_window")  # fmt: skip
    Gauge("vllm:cache_config_info", "cache config", info, registry=reg).labels(
        "16", "auto", "0.9", "2048", "27000", "True", "4294967296", "None"
    ).set(1)
    lora = ("running_lora_adapters", "max_lora", "waiting_lora_adapters")
    Gauge("vllm:lora_requests_info", "LoRA", lora, registry=reg).labels("", "0", "").set(0)
    for name, buckets, scale in (
        ("vllm:iteration_tokens_total", ITERATION_BUCKETS, 300.0),
        ("vllm:request_prompt_tokens", TOKEN_BUCKETS, 400.0),
        ("vllm:request_generation_tokens", TOKEN_BUCKETS, 150.0),
        ("vllm:request_max_num_generation_tokens", TOKEN_BUCKETS, 150.0),
        ("vllm:request_params_max_tokens", TOKEN_BUCKETS, 500.0),
        ("vllm:request_params_n", (1, 2, 5, 10, 20), 1.0),
        ("vllm:time_to_first_token_seconds", TTFT_BUCKETS, 0.2),
        ("vllm:time_per_output_token_seconds", TPOT_BUCKETS, 0.03),
        ("vllm:inter_token_latency_seconds", TPOT_BUCKETS, 0.03),
        ("vllm:e2e_request_latency_seconds", LATENCY_BUCKETS, 5.0),
        ("vllm:request_queue_time_seconds", LATENCY_BUCKETS, 0.5),
        ("vllm:request_inference_time_seconds", LATENCY_BUCKETS, 4.0),
        ("vllm:request_prefill_time_seconds", LATENCY_BUCKETS, 0.3),
        ("vllm:request_decode_time_seconds", LATENCY_BUCKETS, 4.0),
    ):
        histogram = Histogram(name, name, labels, buckets=buckets, registry=reg)
        for _ in range(300):
            histogram.labels(*values).observe(rng.expovariate(1.0 / scale))
    http = ("handler", "method", "status")
    requests = Counter("http_requests", "requests", http, registry=reg)
    sizes = [Summary(f"http_{w}_size_bytes", w, ("handler",), registry=reg)
             for w in ("request", "response")]  # fmt: skip
    highr = Histogram("http_request_duration_highr_seconds", "d", buckets=HTTP_BUCKETS,
                      registry=reg)  # fmt: skip
    duration = Histogram("http_request_duration_seconds", "d", ("handler", "method"),
                         buckets=(0.1, 0.5, 1), registry=reg)  # fmt: skip
    for handler in HANDLERS:
        method = "POST" if handler.startswith("/v1/c") else "GET"
        for status in ("2xx", "4xx"):
            requests.labels(handler, method, status).inc(rng.randint(1, 9999))
        for size in sizes:
            size.labels(handler).observe(rng.randint(100, 9999))
        for _ in range(50):
            seconds = rng.expovariate(1.0)
            highr.observe(seconds)
            duration.labels(handler, method).observe(seconds)
    return generate_latest(reg)


def serve(count: int) -> None:
    """Serve the page on ``count`` loopback ports; print the ports (JSON) once listening."""
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    from perllm.serving import bind, serve_apps

    page = vllm_page()

    async def metrics(request: Any) -> Response:
        return Response(page, media_type="text/plain; version=0.0.4; charset=utf-8")

    app = Starlette(routes=[Route("/metrics", metrics)])
    sockets = [bind("127.0.0.1", 0) for _ in range(count)]
    print(json.dumps([sock.getsockname()[1] for sock in sockets]), flush=True)
    asyncio.run(serve_apps([(app, sock) for sock in sockets], log_level="error"))


def config_for(ports: list[int], interval_s: float) -> Any:
    """A gateway config of one ``engine: vllm`` backend per port."""
    backends = [
        {
            "name": f"b{i}",
            "url": f"http://127.0.0.1:{port}",
            "tier": "cloud",
            "models": {"perllm": "llama-2-13b"},
            "hardware": "a100-80gb",
            "model": "llama-2-13b",
            "engine": "vllm",
        }
        for i, port in enumerate(ports)
    ]
    data = {"backends": backends, "scrape": {"interval-s": interval_s}}
    return parse_config(data, "scrape_cost")


async def timed(work: Callable[[], Awaitable[None]]) -> tuple[float, float, float]:
    """Run ``work`` once: its wall time, and the CPU time of this thread (the event loop's)
    and of the whole process, in seconds."""
    wall, thread, process = time.perf_counter(), time.thread_time(), time.process_time()
    await work()
    return time.perf_counter() - wall, time.thread_time() - thread, time.process_time() - process


async def blocking(work: Callable[[], Awaitable[None]] | None, idle_s: float) -> float:
    """The longest gap beyond 1 ms between a watchdog's 1 ms ticks while ``work`` runs (or for
    ``idle_s`` when ``work`` is ``None``)."""
    worst = 0.0
    done = False

    async def watchdog() -> None:
        nonlocal worst
        last = time.perf_counter()
        while not done:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            worst = max(worst, now - last - 0.001)
            last = now

    task = asyncio.create_task(watchdog())
    await asyncio.sleep(0.005)  # let it tick
    worst = 0.0
    if work is None:
        await asyncio.sleep(idle_s)
    else:
        await work()
    done = True
    await task
    return worst


def summary(values: list[float], scale: float, unit: str) -> str:
    """Median, min and max of ``values`` times ``scale``."""
    if not values:
        return "-"
    scaled = [v * scale for v in values]
    return (
        f"median {statistics.median(scaled):.3f} {unit} "
        f"(min {min(scaled):.3f}, max {max(scaled):.3f})"
    )


async def measure(args: argparse.Namespace, ports: list[int]) -> None:
    config = config_for(ports, args.interval_s)
    breakers = [CircuitBreaker(3, 10.0, b.name) for b in config.backends]
    scraper = Scraper(config.backends, LiveView(config, breakers), config.scrape)
    n = len(ports)
    try:
        runs = []
        for _ in range(args.rounds + 1):
            runs.append(await timed(scraper.scrape_all))
            if scraper.errors:
                failed = next(iter(scraper.errors.values()))
                print(f"  {len(scraper.errors)} scrapes failed, e.g. {failed}")
            await asyncio.sleep(args.pause_s)
        gaps = []
        for _ in range(args.rounds):
            gaps.append(await blocking(scraper.scrape_all, 0.0))
            await asyncio.sleep(args.pause_s)
        idle = [await blocking(None, statistics.median(r[0] for r in runs[1:])) for _ in range(5)]
    finally:
        await scraper.stop()  # closes its clients
    cold, warm = runs[0], runs[1:]
    ok = sum(scraper.view.kv_cache_use[i] is not None for i in range(n))
    print(f"backends scraped: {ok} of {n}, {scraper.scrapes} full scrapes")
    print(
        f"first scrape (connections opened): wall {cold[0] * 1e3:.1f} ms, "
        f"loop CPU {cold[1] / n * 1e3:.3f} ms/backend"
    )
    print(f"next {len(warm)} scrapes:")
    print(f"  (a) wall, full scrape of {n}: {summary([r[0] for r in warm], 1e3, 'ms')}")
    print(f"  (b) loop CPU per backend:   {summary([r[1] / n for r in warm], 1e3, 'ms')}")
    print(f"      process CPU per backend: {summary([r[2] / n for r in warm], 1e3, 'ms')}")
    print(f"  (c) longest blocking stretch: {summary(gaps, 1e3, 'ms')}")
    print(f"      the watchdog's floor, no scrape: {summary(idle, 1e3, 'ms')}")
    text = vllm_page().decode()
    start = time.thread_time()
    for _ in range(200):
        parse_load(text, ENGINE_METRICS["vllm"])
    parsing = (time.thread_time() - start) / 200
    print(f"      of which parse_load of one page: {parsing * 1e3:.3f} ms")
    worst = max(r[1] / n for r in warm) * 1e3
    print(
        f"target (<= 1 ms of loop CPU per backend at {n}): median "
        f"{statistics.median(r[1] / n for r in warm) * 1e3:.3f} ms, worst round {worst:.3f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=20, help="timed scrapes (after a first)")
    parser.add_argument("--servers", type=int, default=2, help="server processes")
    parser.add_argument("--pause-s", type=float, default=0.2, help="between scrapes")
    parser.add_argument("--interval-s", type=float, default=1.0, help="scrape.interval-s")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # a server process
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    print(header()[0])
    page = vllm_page()
    lines = page.splitlines()
    types = [line.split()[2] for line in lines if line.startswith(b"# TYPE ")]
    created = sum(name.endswith(b"_created") for name in types)
    histograms = sum(line.endswith(b" histogram") for line in lines if line.startswith(b"# TYPE"))
    print(
        f"page: {len(page):,} bytes, {len(lines)} lines, {len(types) - created} families "
        f"({histograms} histograms, {sum(b'_bucket{' in line for line in lines)} bucket lines; "
        f"plus {created} _created series)"
    )
    counts = [len(part) for part in _split(args.backends, args.servers)]
    servers = [
        subprocess.Popen(
            [sys.executable, __file__, "--serve", str(count)],
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        for count in counts
    ]
    try:
        ports: list[int] = []
        for server in servers:
            assert server.stdout is not None
            ports += json.loads(server.stdout.readline())
        print(
            f"{len(ports)} backends on {len(servers)} server processes; {args.rounds} rounds "
            f"{args.pause_s:g} s apart; scrape.interval-s {args.interval_s:g} s"
        )
        asyncio.run(measure(args, ports))
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            server.wait(30.0)


def _split(n: int, parts: int) -> list[range]:
    """``range(n)`` in ``parts`` nearly equal pieces."""
    return [range(i * n // parts, (i + 1) * n // parts) for i in range(parts)]


if __name__ == "__main__":
    main()
