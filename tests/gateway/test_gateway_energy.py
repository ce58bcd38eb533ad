"""Measured energy: power-source readings, the split among calls by busy time, and a live
gateway whose answers carry their energy, measured from an emulator's DCGM energy counter."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from waiting import wait_for

from perllm.gateway import create_app
from perllm.gateway.config import PowerSourceConfig
from perllm.gateway.energy import EnergyAccounts, EnergyLedger
from perllm.gateway.power import EnergyReader, parse_metric
from perllm.policies.registry import make_policy

DCGM = """# TYPE DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION counter
DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{gpu="0",UUID="GPU-a"} 5000
DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{gpu="1",UUID="GPU-b"} 7000
# TYPE DCGM_FI_DEV_POWER_USAGE gauge
DCGM_FI_DEV_POWER_USAGE{gpu="0",UUID="GPU-a"} 120.5
"""


def test_a_metric_is_summed_over_the_label_sets_asked_for() -> None:
    assert parse_metric(DCGM, "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", {}) == 12_000
    assert parse_metric(DCGM, "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", {"gpu": "1"}) == 7000
    assert parse_metric(DCGM, "DCGM_FI_DEV_POWER_USAGE", {}) == 120.5
    rapl = 'node_rapl_package_joules_total{index="0"} 42.5\n'
    assert parse_metric(rapl, "node_rapl_package_joules", {}) == 42.5
    with pytest.raises(ValueError, match="no DCGM_FI_DEV_POWER_USAGE sample with labels"):
        parse_metric(DCGM, "DCGM_FI_DEV_POWER_USAGE", {"gpu": "3"})


def test_counters_are_differenced_and_gauges_integrated() -> None:
    counter = EnergyReader("mJ")
    assert counter.joules(0.0, 1000.0) is None  # the origin
    assert counter.joules(1.0, 4000.0) == pytest.approx(3.0)
    assert counter.joules(2.0, 10.0) is None  # reset: the interval is skipped
    assert counter.joules(3.0, 2010.0) == pytest.approx(2.0)
    gauge = EnergyReader("W")
    assert gauge.joules(0.0, 100.0) is None
    assert gauge.joules(2.0, 300.0) == pytest.approx(400.0)  # trapezoid: (100 + 300) / 2 x 2 s
    rapl = EnergyReader("uJ", wrap=1000.0)
    rapl.joules(0.0, 900.0)
    assert rapl.joules(1.0, 100.0) == pytest.approx(200e-6)  # wrapped once at 1000
    assert EnergyReader("kWh").joules(0.0, 1.0) is None


def test_a_power_source_is_a_metric_with_its_unit_or_a_local_counter() -> None:
    PowerSourceConfig(metric="DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", unit="mJ")
    PowerSourceConfig(local="rapl")
    for bad in ({"metric": "x"}, {}, {"metric": "x", "unit": "W", "local": "nvml"}):
        with pytest.raises(ValueError):
            PowerSourceConfig.model_validate(bad)


def test_the_ledger_splits_each_interval_by_request_seconds() -> None:
    ledger = EnergyLedger(0.0)
    ledger.begin(1.0)  # call A: 1 .. 3
    ledger.reading(2.0, 10.0, others=0.0)  # 1 request-second of A: 10 J per request-second
    ledger.begin(2.0)  # call B: 2 .. 4
    ledger.end(3.0)
    ledger.reading(4.0, 30.0, others=1.0)  # A 1 + B 2 + others 1 x 2 = 5 rs: 6 J per rs
    ledger.end(4.0)
    ledger.reading(5.0, 3.0, others=0.0)  # nothing ran: idle
    assert ledger.between(1.0, 3.0) == pytest.approx(10.0 + 6.0)
    assert ledger.between(2.0, 4.0) == pytest.approx(12.0)
    assert ledger.own_j == pytest.approx(28.0)
    assert ledger.others_j == pytest.approx(12.0)
    assert ledger.idle_j == pytest.approx(3.0)
    assert ledger.own_j + ledger.others_j + ledger.idle_j == pytest.approx(ledger.read_j)


def test_calls_are_settled_once_a_reading_covers_their_end() -> None:
    ledger = EnergyLedger(0.0)
    settled: list[float] = []
    ledger.begin(0.0)
    ledger.reading(1.0, 5.0, others=0.0)
    ledger.end(1.5)
    assert ledger.between(0.0, 1.5) == pytest.approx(7.5)  # provisional: 5 J/s since 1.0
    ledger.settle(0.0, 1.5, settled.append)
    assert settled == []
    ledger.reading(2.0, 1.0, others=0.0)  # 0.5 request-seconds in 1 s: 2 J per rs
    assert settled == [pytest.approx(6.0)]
    ledger.settle(0.0, 1.0, settled.append)  # covered already: at once
    assert settled[-1] == pytest.approx(5.0)


def test_accounts_count_idle_and_settled_energy_by_class() -> None:
    spent: list[tuple[str, str, str, str, float]] = []
    accounts = EnergyAccounts(["a", "b"], [True, False], lambda *row: spent.append(row), now=0.0)
    accounts.reading(0, 1.0, 4.0, others=0.0)
    accounts.begin(0, 1.0)
    assert accounts.provisional_j(0, 1.0, 2.0) is None  # no busy interval measured yet
    accounts.end(0, 1.0, 2.0, "chat")
    accounts.reading(0, 3.0, 6.0, others=0.0)
    assert spent == [
        ("a", "none", "idle", "measured", 4.0),
        ("a", "chat", "inference", "measured", pytest.approx(6.0)),
    ]
    assert accounts.provisional_j(1, 0.0, 1.0) is None  # b has no power source


def _energy(url: str) -> dict[tuple[str, str], float]:
    """``(part, source)`` -> joules of backend ``b`` in the gateway's ``/metrics``."""
    found: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(httpx.get(url + "/metrics").text):
        for sample in family.samples:
            if sample.name == "perllm_energy_joules_total" and sample.labels["backend"] == "b":
                key = (sample.labels["part"], sample.labels["source"])
                found[key] = found.get(key, 0.0) + sample.value
    return found


def test_answers_carry_measured_energy_that_adds_up_to_the_counter(serve: Any, kit: Any) -> None:
    backend = serve(kit.emulator(kit.EDGE, time_scale=0.05))
    source = {"metric": "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "unit": "mJ"}
    config = kit.gateway_config(
        [kit.backend("b", backend.url, **{"power-source": source})],
        scrape={"interval-s": 0.02, "stale-s": 1.0},
    )
    gateway = serve(create_app(config, make_policy("round-robin"), health_checks=False))

    def stats() -> dict[str, float]:
        measured: dict[str, float] = httpx.get(gateway.url + "/stats").json()["backends"]["b"][
            "energy_j"
        ]
        return measured

    wait_for(lambda: stats()["idle"] > 0, "the first idle interval measured")
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}
    with httpx.Client(base_url=gateway.url, timeout=60) as client:
        first = client.post("/v1/chat/completions", json=body)  # the first busy interval
        assert first.status_code == 200
        wait_for(lambda: stats()["own"] > 0, "a busy interval measured")
        answers = [client.post("/v1/chat/completions", json=body) for _ in range(6)]
        stream = client.post(
            "/v1/chat/completions",
            json={**body, "stream": True, "stream_options": {"include_usage": True}},
        )
    for answer in answers:
        usage = answer.json()["usage"]["perllm"]
        assert usage["energy_source"] == "measured" and usage["energy_j"] > 0
        assert float(answer.headers["x-perllm-energy-j"]) == pytest.approx(usage["energy_j"])
    events = [e for e in stream.text.split("\n\n") if e.startswith("data: {")]
    last_usage = json.loads(events[-1].removeprefix("data: "))["usage"]
    assert last_usage["perllm"]["energy_source"] == "measured"
    # Every call's share is settled once a reading follows its end: the measured inference
    # energy of the calls and the idle remainder add up to what the counter read.
    wait_for(
        lambda: (
            _energy(gateway.url).get(("inference", "measured"), 0.0)
            == pytest.approx(stats()["own"], rel=1e-9)
        ),
        "every call settled",
    )
    measured = stats()
    assert measured["others"] == 0.0  # no engine scraped: nobody else is seen
    assert measured["own"] + measured["idle"] == pytest.approx(measured["read"], rel=1e-9)
    assert _energy(gateway.url)[("idle", "measured")] >= measured["idle"] > 0
    # The first call may have ended before any busy interval was measured (then modelled).
    assert first.json()["usage"]["perllm"]["energy_source"] in ("measured", "modelled")


@pytest.mark.slow
def test_cs_ucb_learns_the_measured_energy_where_there_is_one(serve: Any, kit: Any) -> None:
    """Two identical emulated edges; the first's power source reports ten times the energy
    its model would (a fake DCGM exporter whose counter grows ten times faster): CS-UCB's
    learned energy ratio for it is about ten times the other's."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse, Response
    from starlette.routing import Route

    hot = serve(kit.emulator(kit.EDGE, time_scale=0.05))
    cool = serve(kit.emulator(kit.EDGE, time_scale=0.05))

    async def tenfold(request: Request) -> Response:
        text = httpx.get(hot.url + "/metrics").text
        mj = parse_metric(text, "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", {})
        return PlainTextResponse(f"DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION {10 * mj}\n")

    exporter = serve(Starlette(routes=[Route("/metrics", tenfold)]))
    source = {
        "metric": "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
        "unit": "mJ",
        "url": exporter.url + "/metrics",
    }
    config = kit.gateway_config(
        [kit.backend("hot", hot.url, **{"power-source": source}), kit.backend("cool", cool.url)],
        scrape={"interval-s": 0.02, "stale-s": 1.0},
        time_scale=0.05,
    )
    gateway = serve(create_app(config, make_policy("cs-ucb"), health_checks=False))
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 32}

    def power_read() -> bool:
        health = httpx.get(gateway.url + "/health").json()["scrape"]["hot"]
        return health["age_s"] is not None and health["rounds"] >= 3

    # The arms tie at first, and the first wins: the first call goes to "hot". Its power is
    # read a few times before, and the call lasts several readings, so that it carries a
    # measured energy (a reading in a busy interval), whether or not CS-UCB comes back there.
    wait_for(power_read, "the hot backend's power read")
    with httpx.Client(base_url=gateway.url, timeout=60) as client:
        first = client.post("/v1/chat/completions", json={**body, "max_tokens": 256})
        assert first.headers["x-perllm-backend"] == "hot"
        for _ in range(23):  # CS-UCB tries both arms
            answer = client.post("/v1/chat/completions", json=body)
            assert answer.status_code == 200
        totals = client.get("/admin/state").json()["totals"]  # energy corrections: e|0|SERVER|..
    count = [totals.get(f"e|0|{server}|count|", 0.0) for server in range(2)]
    total = [totals.get(f"e|0|{server}|total|", 0.0) for server in range(2)]
    mean = [t / c if c else 0.0 for t, c in zip(total, count, strict=True)]
    assert min(count) > 0, count
    assert mean[0] - mean[1] > 1.5, mean  # log(10) = 2.3 apart, give or take the first calls
