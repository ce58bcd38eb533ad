"""Two gateways that share nothing in front of the same backends, with and without scraping.

Run: ``python benchmarks/shared_backends.py [--requests 500] [--rate 10] [--seeds 0 1 2]``
(``--probe-rates 8 10 12`` runs one gateway alone at each rate instead, to choose ``--rate``:
at 10/s, time scale 0.5, it meets about 99% of deadlines; at 12/s about 94%).

The ``tiny`` scenario's servers (two RTX 3090 edges, one A100 cloud) are emulated in one
subprocess (``perllm emulate``'s engine, sped up by ``--time-scale``) and each gateway is a
``perllm serve`` subprocess with CS-UCB, as in ``benchmarks/replicas.py``, whose machinery this
script reuses. The same request sequence is replayed through every setup, request ``i`` going
to gateway ``i mod G``. The setups:

- ``1 gateway``: one gateway sees every call;
- ``2 gateways``: two gateways, no state store, each receives half of the calls and sees only
  its own load on the backends (the other's is invisible to it);
- ``2 gateways, scraping``: the same two, every backend named ``engine: vllm``, so that each
  gateway scrapes the emulators' ``/metrics`` every ``--scrape-interval-s`` (wall seconds) and
  counts what a backend runs and queues beyond its own calls as others' load
  (:mod:`perllm.gateway.scrape`);
- ``1 gateway, scraping`` (a control, with ``--only``): one gateway that scrapes, where the
  scrape should add nothing.

Printed per setup, means over the seeds (request sequences) with each seed's figure:

- deadlines met: answered with status 200 within the request's deadline (client clock), over
  all requests;
- energy per met request: the growth of the emulators' DCGM energy counters
  (``DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION`` at ``/metrics``, emulated joules, idle included)
  over the replay, over the requests that met their deadline;
- each backend's share of the answers, and what became of the requests.

Then the target: with two unshared gateways at a load where one alone meets at least 95% of
deadlines, scraping should bring them within 2 points of the single gateway's deadlines met.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from replicas import Setup, run_setup, start_emulators, stop
from rich.console import Console
from rich.table import Table

from perllm.cluster import scenario
from perllm.profiling.client import make_prompt
from perllm.workload.generator import generate_requests

SINGLE, UNSHARED, SCRAPING, SINGLE_SCRAPING = (
    "1 gateway",
    "2 gateways",
    "2 gateways, scraping",
    "1 gateway, scraping",
)
SETUPS = {  # name -> (gateways, scraping)
    SINGLE: (1, False),
    UNSHARED: (2, False),
    SCRAPING: (2, True),
    SINGLE_SCRAPING: (1, True),
}
DEFAULT_SETUPS = (SINGLE, UNSHARED, SCRAPING)
TARGET_ALONE = 0.95  # the load: one gateway alone meets at least this share
TARGET_POINTS = 2.0  # scraping brings two gateways within this many points of it


def scraping(base: dict[str, Any], interval_s: float) -> dict[str, Any]:
    """``base`` with every backend an ``engine: vllm`` scraped every ``interval_s``."""
    config = dict(base)
    config["backends"] = [{**backend, "engine": "vllm"} for backend in base["backends"]]
    config["scrape"] = {"interval-s": interval_s, "stale-s": max(5.0, 2 * interval_s)}
    return config


def replay_setups(
    names: list[str],
    rate: float,
    args: argparse.Namespace,
    console: Console,
) -> dict[str, list[dict[str, Any]]]:
    """Each setup of ``names`` run over every seed at ``rate`` (arrivals/s, scenario time), in
    front of one set of emulators started for the purpose."""
    cluster = scenario.load(args.scenario)
    emulator, base, urls = start_emulators(cluster, args)
    configs = {SINGLE: base, UNSHARED: base, SCRAPING: scraping(base, args.scrape_interval_s)}
    configs[SINGLE_SCRAPING] = configs[SCRAPING]
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for seed in args.seeds:
                requests = generate_requests(cluster.workload, args.requests, seed, rate)
                rng = np.random.default_rng(seed)
                prompts = [make_prompt(rng, r.routed.prompt_tokens) for r in requests]
                for db, name in enumerate(names):
                    console.print(f"rate {rate:g}/s, seed {seed}, {name}: {len(requests)} ...")
                    setup = Setup(name, SETUPS[name][0], shared=False)
                    run = run_setup(
                        setup, configs[name], None, db, urls, requests, prompts, args, Path(tmp)
                    )
                    run["seed"] = seed
                    run["energy per met request (J)"] = run["energy (J)"] / max(run["met"], 1)
                    rows[name].append(run)
    finally:
        stop(emulator)
    return rows


def per_seed(values: list[float], fmt: str) -> str:
    """The mean, then each seed's value in brackets."""
    mean = format(float(np.mean(values)), fmt)
    return mean + (f" ({' '.join(format(v, fmt) for v in values)})" if len(values) > 1 else "")


def table(rows: dict[str, list[dict[str, Any]]], title: str) -> Table:
    """One row per setup: means over the seeds, each seed's figure in brackets."""
    out = Table(title=title)
    out.add_column("setup")
    for column in ("deadlines met: mean (per seed)", "J / met request: mean (per seed)"):
        out.add_column(column, justify="right")
    out.add_column("shares")
    out.add_column("requests")
    for name, runs in rows.items():
        shares: Counter[str] = Counter()
        fates: Counter[str] = Counter()
        for run in runs:
            shares.update({k: v / len(runs) for k, v in run["share"].items()})
            fates.update(run["fates"])
        out.add_row(
            name,
            per_seed([run["deadline satisfaction"] for run in runs], ".3f"),
            per_seed([run["energy per met request (J)"] for run in runs], ".1f"),
            " ".join(f"{k} {v:.0%}" for k, v in sorted(shares.items())),
            ", ".join(f"{k} {v}" for k, v in sorted(fates.items()) if v),
        )
    return out


def verdict(rows: dict[str, list[dict[str, Any]]], console: Console) -> None:
    """The target, as measured (printed, never asserted)."""
    if SINGLE not in rows or SCRAPING not in rows:
        return
    met = {name: [run["deadline satisfaction"] for run in runs] for name, runs in rows.items()}
    alone = float(np.mean(met[SINGLE]))
    console.print(
        f"one gateway alone meets {alone:.1%} of deadlines "
        f"({'at least' if alone >= TARGET_ALONE else 'BELOW'} {TARGET_ALONE:.0%})"
    )
    for name in (UNSHARED, SCRAPING):
        if name not in met:
            continue
        gaps = [100.0 * (a - b) for a, b in zip(met[SINGLE], met[name], strict=True)]
        console.print(
            f"{name}: one gateway's deadlines met minus these: {float(np.mean(gaps)):+.1f} "
            f"points (per seed {' '.join(f'{g:+.1f}' for g in gaps)})"
        )
    gap = 100.0 * (alone - float(np.mean(met[SCRAPING])))
    if alone < TARGET_ALONE:
        held = f"not tested: the load is too high for one gateway (try a lower --rate); {gap:+.1f}"
    else:
        held = f"{'met' if gap <= TARGET_POINTS else 'MISSED'}: {gap:+.1f}"
    console.print(
        f"target (two gateways scraping within {TARGET_POINTS:g} points of one gateway, at a "
        f"load where it meets >= {TARGET_ALONE:.0%}): {held} points"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Needs no Redis: the two gateways share nothing.",
    )
    parser.add_argument("--scenario", default="tiny")
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--rate", type=float, default=10.0, help="arrivals/s, scenario time")
    parser.add_argument(
        "--time-scale", type=float, default=0.5, help="emulated durations x this (0.5: 2x speed)"
    )
    parser.add_argument("--client-timeout-s", type=float, default=60.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="sequences")
    parser.add_argument(
        "--scrape-interval-s", type=float, default=0.1, help="wall seconds between scrapes"
    )
    parser.add_argument(
        "--only", nargs="*", choices=list(SETUPS), help=f"setups (default: {DEFAULT_SETUPS})"
    )
    parser.add_argument(
        "--probe-rates",
        type=float,
        nargs="+",
        help="instead: run one gateway alone at each of these rates (to choose --rate)",
    )
    args = parser.parse_args()
    console = Console(width=200)
    common = (
        f"{args.scenario}, {args.requests} requests, CS-UCB, time scale {args.time_scale:g}, "
        f"seeds {' '.join(map(str, args.seeds))}"
    )
    if args.probe_rates:
        probe = Table(title=f"one gateway alone: {common}")
        probe.add_column("rate (/s, scenario time)", justify="right")
        probe.add_column("deadlines met: mean (per seed)", justify="right")
        probe.add_column("J / met request", justify="right")
        for rate in args.probe_rates:
            runs = replay_setups([SINGLE], rate, args, console)[SINGLE]
            probe.add_row(
                f"{rate:g}",
                per_seed([run["deadline satisfaction"] for run in runs], ".3f"),
                per_seed([run["energy per met request (J)"] for run in runs], ".1f"),
            )
        console.print(probe)
        return
    names = list(args.only or DEFAULT_SETUPS)
    rows = replay_setups(names, args.rate, args, console)
    title = (
        f"{common}, {args.rate:g} arrivals/s (scenario time); scraping every "
        f"{args.scrape_interval_s:g} s (wall) = {args.scrape_interval_s / args.time_scale:g} s "
        "emulated"
    )
    console.print(table(rows, title))
    verdict(rows, console)
    if os.environ.get("PERLLM_BENCH_JSON"):
        Path(os.environ["PERLLM_BENCH_JSON"]).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
