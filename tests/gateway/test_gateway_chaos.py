"""Nothing lost, nothing hangs: a short chaos run (see ``benchmarks/chaos_harness.py``).

Backends are emulators in their own processes; one is SIGKILLed after every 15 finished calls
and restarted 5 calls later, and the gateway gets a SIGTERM under load after every 25 finished
calls and is started again on its port (faults follow events, not timers). Every wait in the
run is bounded, so a hang fails the test instead of blocking it. Nothing here reads a clock.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from chaos_harness import ChaosSettings, render, run_chaos


@pytest.mark.chaos
def test_chaos_loses_nothing_and_hangs_nothing(tmp_path: Path) -> None:
    settings = ChaosSettings(
        requests=60,
        concurrency=8,
        kill_every=15,
        restart_after=5,
        gateway_restart_every=25,
        drop_fraction=0.3,
        drain_s=2.0,
        seed=1,
    )
    report = asyncio.run(run_chaos(settings, tmp_path))
    table = render(report)
    assert report.kills == 3 and report.restarts == 3, table
    assert report.gateway_restarts == 2, table
    assert report.client["lost"] == 0 and report.client["hung"] == 0, table
    assert sum(report.client.values()) == settings.requests, table
    # The gateway processes ended every call exactly once, in their log; their counters, read
    # just before each SIGTERM, miss at most the calls ended while draining.
    assert report.logged_once == settings.requests, table
    assert sum(report.gateway_log.values()) == settings.requests, table
    assert sum(report.gateway.values()) <= settings.requests, table
    # Hung-up streams were cancelled (a stream broken by a kill or a shutdown just before its
    # client hung up counts as a stream error instead).
    assert 0 < report.gateway_log["abandoned"] <= report.client["dropped"], table
    assert report.in_flight_after == 0, table
    assert report.exit_codes == {
        "gateway-1": 0,
        "gateway-2": 0,
        "gateway-3": 0,
        "backend-0": 0,
        "backend-1": 0,
        "backend-2": 0,
    }, table
