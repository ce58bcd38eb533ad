"""Simulator fidelity against a real llama.cpp server (Gemma 3 270M, 1 CPU thread).

1. Start a llama.cpp node and profile it (``perllm profile``'s sweep; the profile YAML and PNG
   go to ``profiles/``).
2. Replay one request sequence (Poisson arrivals, mixed prompt and output lengths) against the
   real node through the perllm gateway, recording each request's processing time (arrival to
   last byte) and its true prompt and output token counts.
3. Simulate the same sequence (same arrivals, same token counts) on a one-server scenario whose
   server group names the fitted profile (``profile: PATH``).
4. Print p50 / p95 processing time and throughput of both, and the relative errors.

Run: ``.venv/bin/python benchmarks/fidelity.py [--requests 200] [--load 0.6]`` (a few minutes).
Needs ``perllm[llamacpp]`` (``scripts/build_llama_wheel.sh``).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import time
from pathlib import Path

import httpx
import numpy as np
from rich.console import Console
from rich.table import Table

from perllm.cluster import scenario
from perllm.cluster.profile import read_profile
from perllm.domain import Request
from perllm.node import LlamaCppNode
from perllm.node.gateway import GatewayThread, llama_backend
from perllm.policies.registry import make_policy
from perllm.profiling import SweepPlan, profile_endpoint
from perllm.profiling.client import count_tokens, make_prompt
from perllm.profiling.report import plot_profile, print_profile
from perllm.profiling.run import save_profile
from perllm.sim.world import simulate

PROFILES = Path(__file__).resolve().parent.parent / "profiles"
PROFILE = PROFILES / "gemma3-270m-q4km-llamacpp-1t.yaml"
PLAN = SweepPlan(
    prompt_lengths=(16, 64, 128, 256, 448), concurrency=(1, 2, 3), repeats=3,
    prefill_output_tokens=16, decode_output_tokens=48, decode_prompt_tokens=32,
)  # fmt: skip
PROMPT_WORDS = (4, 120)  # uniform range of random words per prompt
OUTPUT_TOKENS = (4, 40)  # uniform range of max_tokens


def one_server_cluster(profile: Path) -> scenario.Cluster:
    """A scenario with one edge server described by ``profile`` behind a fast LAN."""
    data = {
        "name": "fidelity",
        "links": [{"name": "lan", "bandwidth-mbps": 10000, "tx-power-w": 0}],
        "servers": [
            {"name": "llama", "tier": "edge", "hardware": "xeon-silver-4214r",
             "model": "llama-2-7b", "dtype": "q4", "link": "lan", "profile": str(profile)},
        ],
        "workload": {"arrivals": {"process": "poisson", "rate-rps": 1.0},
                     "classes": "personalized"},
    }  # fmt: skip
    return scenario.build(scenario.parse(data, "fidelity"), "fidelity")


async def replay(
    url: str, model: str, calls: list[tuple[float, str, int]]
) -> list[dict[str, float]]:
    """Send ``(arrival_s, prompt, max_tokens)`` calls on schedule; time each to its last byte."""
    results: list[dict[str, float]] = []
    start = time.monotonic() + 0.5
    async with httpx.AsyncClient(timeout=httpx.Timeout(600.0)) as client:

        async def one(arrival_s: float, prompt: str, max_tokens: int) -> None:
            await asyncio.sleep(max(0.0, start + arrival_s - time.monotonic()))
            body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
            response = await client.post(f"{url}/v1/completions", json=body)
            end = time.monotonic()
            response.raise_for_status()
            usage = response.json().get("usage") or {}
            results.append({
                "arrival_s": arrival_s, "processing_s": end - start - arrival_s,
                "output_tokens": float(usage.get("completion_tokens", max_tokens)),
                "prompt_tokens": float(usage.get("prompt_tokens", -1)),
            })  # fmt: skip

        await asyncio.gather(*(one(*call) for call in calls))
    return sorted(results, key=lambda r: r["arrival_s"])


def summary(processing: np.ndarray, arrivals: np.ndarray, tokens: np.ndarray) -> dict[str, float]:
    span = float(np.max(arrivals + processing) - np.min(arrivals))
    return {
        "p50_s": float(np.percentile(processing, 50)),
        "p95_s": float(np.percentile(processing, 95)),
        "throughput_rps": len(processing) / span,
        "throughput_tok_s": float(np.sum(tokens)) / span,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=150)
    parser.add_argument("--load", type=float, default=0.7, help="target utilisation of the node")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--direct", action="store_true", help="bypass the gateway")
    parser.add_argument("--reuse-profile", action="store_true", help="skip profiling")
    args = parser.parse_args()
    console = Console()
    rng = np.random.default_rng(args.seed)
    with LlamaCppNode(threads=1) as node:
        if not (args.reuse_profile and PROFILE.is_file()):
            console.print(f"node {node.url}; profiling ...")
            run = profile_endpoint(node.url, PLAN)
            PROFILES.mkdir(exist_ok=True)
            save_profile(run, PLAN, PROFILE)
            title = "Gemma 3 270M Q4_K_M, llama.cpp, 1 thread"
            plot_profile(run.fit.perf, run.data, PROFILE.with_suffix(".png"), title)
            print_profile(run.fit.perf, run.data, console)
        perf = read_profile(PROFILE).server_perf()
        with httpx.Client(timeout=30.0) as sync:
            prompts = [
                make_prompt(rng, int(rng.integers(*PROMPT_WORDS))) for _ in range(args.requests)
            ]
            prompt_tokens = [count_tokens(sync, node.url, node.alias, p) or 0 for p in prompts]
        outputs = rng.integers(OUTPUT_TOKENS[0], OUTPUT_TOKENS[1] + 1, size=args.requests)
        mean_service = float(np.mean([
            perf.prefill_s(n) + max(o - 1, 0) * perf.step_s(1, n + o / 2)
            for n, o in zip(prompt_tokens, outputs, strict=True)
        ]))  # fmt: skip
        rate = args.load / mean_service
        arrivals = np.cumsum(rng.exponential(1.0 / rate, size=args.requests))
        calls = [(float(a), p, int(o)) for a, p, o in zip(arrivals, prompts, outputs, strict=True)]
        console.print(f"replaying {args.requests} requests at {rate:.2f} req/s "
                      f"(about {arrivals[-1]:.0f} s) ...")  # fmt: skip
        if args.direct:
            real = asyncio.run(replay(node.url, node.alias, calls))
            route = "direct"
        else:
            with GatewayThread([llama_backend("llama", node.url, node.alias)]) as gw:
                real = asyncio.run(replay(gw.url, gw.model, calls))
            route = "through the perllm gateway"
    n_prompt = {i: t for i, t in enumerate(prompt_tokens)}
    requests = [
        Request.of(i, r["arrival_s"], "fidelity", n_prompt[i], int(r["output_tokens"]), 0, 0, 1e9)
        for i, r in enumerate(real)
    ]
    cluster = one_server_cluster(PROFILE)
    recorder = simulate(cluster, make_policy("round-robin", None, 0), requests)
    sim_processing = np.array(recorder.columns["processing_s"], dtype=float)
    sim_ids = np.array(recorder.columns["id"], dtype=int)
    sim_processing = sim_processing[np.argsort(sim_ids)]
    real_processing = np.array([r["processing_s"] for r in real])
    arr = np.array([r["arrival_s"] for r in real])
    tokens = np.array([r["output_tokens"] for r in real])
    measured, simulated = (
        summary(real_processing, arr, tokens),
        summary(sim_processing, arr, tokens),
    )
    table = Table(title=f"fidelity: {args.requests} requests, real ({route}) vs simulated "
                        f"(max batch {read_profile(PROFILE).max_batch})")  # fmt: skip
    for column in ("metric", "real", "simulated", "relative error"):
        table.add_column(column, justify="right")
    for key in measured:
        table.add_row(key, f"{measured[key]:.3f}", f"{simulated[key]:.3f}",
                      f"{simulated[key] / measured[key] - 1:+.1%}")  # fmt: skip
    console.print(table)
    with (PROFILES / "fidelity-requests.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "arrival_s", "prompt_tokens", "output_tokens", "real_s", "sim_s"])
        for i, r in enumerate(real):
            writer.writerow([i, f"{r['arrival_s']:.4f}", n_prompt[i], int(r["output_tokens"]),
                             f"{r['processing_s']:.4f}", f"{sim_processing[i]:.4f}"])  # fmt: skip
    console.print(f"per-request figures: {PROFILES / 'fidelity-requests.csv'}")


if __name__ == "__main__":
    main()
