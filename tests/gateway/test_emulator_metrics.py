"""The emulator's ``/metrics``: vLLM's load gauges and DCGM's power and energy, from its engine."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from waiting import wait_for

from perllm.domain import PowerSpec
from perllm.emulator.app import create_emulator_app
from perllm.emulator.energy import EnergyMeter
from perllm.emulator.engine import BatchEngine
from perllm.emulator.metrics import EmulatorCollector, exposition, kv_usage, metrics_registry
from perllm.perf.model import deployment

ENERGY = "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"
POWER = "DCGM_FI_DEV_POWER_USAGE"
HANG_S = 60.0  # bounds every read against a hang; never a pace


def _scrape(text: str) -> dict[str, tuple[str, dict[str, str], float]]:
    """Family name -> (type, labels, value) of its one sample, parsed by prometheus_client."""
    found = {}
    for family in text_string_to_metric_families(text):
        (sample,) = family.samples
        found[family.name] = (family.type, sample.labels, sample.value)
    return found


def _values(text: str) -> dict[str, float]:
    return {name: value for name, (_, _, value) in _scrape(text).items()}


class OpenStream:
    """A streamed call, opened (its answer's headers received: the server has queued it)."""

    def __init__(self, url: str, max_tokens: int) -> None:
        self.client = httpx.Client(timeout=HANG_S)
        body = {"model": "llama-2-7b", "prompt": "hi", "max_tokens": max_tokens, "stream": True}
        request = self.client.build_request("POST", url + "/v1/completions", json=body)
        self.response = self.client.send(request, stream=True)
        assert self.response.status_code == 200
        self.lines = self.response.iter_lines()

    def read_tokens(self, count: int) -> int:
        """Read ``count`` more token events; returns the index of the last one."""
        index = -1
        for _ in range(count):
            line = next(line for line in self.lines if line.startswith("data:"))
            text = json.loads(line.removeprefix("data: "))["choices"][0]["text"]
            assert text  # a token, not an error event
            index += 1
        return index

    def close(self) -> None:
        self.response.close()
        self.client.close()


@pytest.fixture
def streams() -> Iterator[list[OpenStream]]:
    opened: list[OpenStream] = []
    yield opened
    for stream in opened:
        stream.close()


def test_metrics_follow_the_streams_in_flight(
    serve: Any, kit: Any, streams: list[OpenStream]
) -> None:
    """Two long streams fill a batch of 2 (each has sent a token, so each runs), a third one is
    queued behind them (its headers came back after it was submitted): the gauges say so, the
    KV cache grows with their tokens, and the energy counter only grows."""
    app = create_emulator_app(kit.EDGE, time_scale=1.0, max_batch=2)
    server = serve(app)
    dep = deployment(*kit.EDGE.split(":"))
    capacity = dep.kv_capacity_tokens()
    power = dep.power()

    def scrape() -> str:
        response = httpx.get(server.url + "/metrics", timeout=HANG_S)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
        return response.text

    idle = _scrape(scrape())
    assert idle["vllm:num_requests_running"] == (
        "gauge",
        {"model_name": "llama-2-7b", "engine": "0"},
        0,
    )
    assert _values(scrape())["vllm:num_requests_waiting"] == 0
    assert idle["vllm:kv_cache_usage_perc"][2] == 0
    assert idle[POWER][2] == pytest.approx(power.idle_w)

    first, second = OpenStream(server.url, 100_000), OpenStream(server.url, 100_000)
    streams.extend([first, second])
    first.read_tokens(1)
    second.read_tokens(1)
    streams.append(OpenStream(server.url, 5))

    text = scrape()
    metrics = _scrape(text)
    assert metrics["vllm:num_requests_running"][2] == 2
    assert metrics["vllm:num_requests_waiting"][2] == 1
    assert metrics[POWER][2] == pytest.approx(power.busy_w(2))
    kind, labels, energy_mj = metrics[ENERGY]
    assert kind == "counter"
    assert labels["gpu"] == "0" and labels["device"] == "nvidia0"
    assert labels["modelName"] == "rtx-3090" and labels["UUID"].startswith("GPU-")
    # The text is dcgm-exporter's: the counter's metadata and sample under the field's name.
    assert f"# TYPE {ENERGY} counter\n" in text
    assert any(line.startswith(ENERGY + "{") for line in text.splitlines())
    assert energy_mj > idle[ENERGY][2] > 0

    # The cache holds ``usage * capacity`` tokens; once the first stream alone has more, it grew.
    usage = metrics["vllm:kv_cache_usage_perc"][2]
    held = round(usage * capacity)
    assert held >= 4  # two prompts and at least one token each
    first.read_tokens(held + 1)
    later = _values(scrape())
    assert usage < later["vllm:kv_cache_usage_perc"] <= 1
    assert later[ENERGY] >= energy_mj
    assert later["vllm:num_requests_running"] == 2

    for stream in streams:
        stream.close()

    def settled() -> bool:
        now = _values(scrape())
        return now["vllm:num_requests_running"] == now["vllm:num_requests_waiting"] == 0

    wait_for(settled, "the gauges to count no stream once every caller hung up")
    assert _values(scrape())["vllm:kv_cache_usage_perc"] == 0


@pytest.mark.anyio
async def test_an_instant_emulator_shows_an_idle_node() -> None:
    app = create_emulator_app("instant", model="tiny")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://emu") as client:
        body = {"model": "tiny", "prompt": "x", "max_tokens": 3}
        assert (await client.post("/v1/completions", json=body)).status_code == 200
        text = (await client.get("/metrics")).text
    assert _values(text) == {
        "vllm:num_requests_running": 0,
        "vllm:num_requests_waiting": 0,
        "vllm:kv_cache_usage_perc": 0,
        POWER: 0,
        ENERGY: 0,
    }


class VirtualClock:
    """A clock that moves only when the engine sleeps on it (or a test moves it)."""

    def __init__(self) -> None:
        self.now_s = 1000.0

    def now(self) -> float:
        return self.now_s

    async def sleep(self, seconds: float) -> None:
        self.now_s += seconds
        await asyncio.sleep(0)


async def _drain(stream: Any) -> None:
    while await stream.tokens.get() is not None:
        pass


@pytest.mark.parametrize("time_scale", [0.0, 0.5, 2.0])
@pytest.mark.anyio
async def test_energy_is_the_power_integrated_over_emulated_time(time_scale: float) -> None:
    """A known sequence on a virtual clock: idle, two prefills, two decode steps, idle. The
    counter is each phase's power times its emulated length: the model's duration of each piece
    of work, and an idle period's real length over ``time_scale`` (none at ``0``)."""
    dep = deployment("rtx-3090", "llama-2-7b", "q4")
    perf, power = dep.perf(), dep.power()
    clock = VirtualClock()
    engine = BatchEngine(
        perf, max_batch=2, time_scale=time_scale, power=power, clock=clock.now, sleep=clock.sleep
    )
    idle_emulated = 3.0 / time_scale if time_scale else 0.0

    clock.now_s += 1.5
    assert engine.emulated_s() == pytest.approx(idle_emulated / 2)
    assert engine.energy_j() == pytest.approx(power.idle_w * idle_emulated / 2, rel=1e-12)
    readings = [engine.energy_j()]

    first, second = engine.submit(10, 3), engine.submit(20, 2)
    seen: list[tuple[int, float]] = []  # the gauge's (batch, power) at each step of the loop

    async def watch() -> None:
        while first.generated < 3 or second.generated < 2:
            seen.append((engine.batch, engine.power_w()))
            readings.append(engine.energy_j())
            await asyncio.sleep(0)

    await asyncio.gather(_drain(first), _drain(second), watch())
    work = [  # (batch, model seconds): the prefills, then a step of both and one of the first
        (1, perf.prefill_s(10)),
        (2, perf.prefill_s(20)),
        (2, perf.step_s(2, (10 + 1) + (20 + 1))),
        (1, perf.step_s(1, 10 + 2)),
    ]
    assert {batch for batch, _ in seen} >= {1, 2}
    assert all(watt == power.busy_w(batch) for batch, watt in seen if batch)
    busy_j = sum(power.busy_w(batch) * seconds for batch, seconds in work)
    assert engine.energy_j() == pytest.approx(power.idle_w * idle_emulated / 2 + busy_j, rel=1e-12)
    assert engine.power_w() == power.idle_w

    clock.now_s += 1.5
    readings.append(engine.energy_j())
    assert readings == sorted(readings)  # a counter: it never goes back
    expected_s = idle_emulated + sum(seconds for _, seconds in work)
    assert engine.emulated_s() == pytest.approx(expected_s, rel=1e-12)
    assert readings[-1] == pytest.approx(power.idle_w * idle_emulated + busy_j, rel=1e-12)
    assert clock.now_s - 1000.0 == pytest.approx(3.0 + time_scale * (expected_s - idle_emulated))
    await engine.stop()


@pytest.mark.anyio
async def test_kv_usage_grows_with_tokens_and_stays_a_fraction() -> None:
    """A stream of a 10-token prompt and 40 tokens on a cache of 30: the usage scraped at each
    step grows with its tokens, reads 1 once the cache is full, and 0 once it is done."""
    perf = deployment("rtx-3090", "llama-2-7b", "q4").perf()
    engine = BatchEngine(perf, max_batch=1, time_scale=0.0)
    registry = metrics_registry(EmulatorCollector(engine, "m", 30, "rtx-3090"))
    stream = engine.submit(10, 40)
    usages: list[float] = []

    async def watch() -> None:
        while stream.generated < 40:
            usages.append(_values(exposition(registry).decode())["vllm:kv_cache_usage_perc"])
            await asyncio.sleep(0)

    await asyncio.gather(_drain(stream), watch())
    running = [u for u in usages if u > 0]
    assert running == sorted(running)
    assert running[0] == pytest.approx(10 / 30)  # the prompt, from its prefill on
    assert running[-1] == 1.0 and all(0 <= u <= 1 for u in usages)
    assert len(set(running)) > 10
    assert _values(exposition(registry).decode())["vllm:kv_cache_usage_perc"] == 0
    await engine.stop()


def test_kv_usage_bounds() -> None:
    assert kv_usage(0, 100) == 0
    assert kv_usage(25, 100) == 0.25
    assert kv_usage(100, 100) == kv_usage(250, 100) == 1
    assert kv_usage(1, 0) == 1 and kv_usage(0, 0) == 0
    assert kv_usage(50, None) == 0


def test_energy_meter_integrates_each_interval_at_its_batch() -> None:
    power = PowerSpec(idle_w=10.0, max_w=110.0, batch1_fraction=0.5, log2_slope=0.1)
    meter = EnergyMeter(power, start_s=5.0)
    changes = [(1, 7.0), (4, 7.5), (4, 8.0), (2, 11.0), (0, 11.25)]
    expected, last_batch, last_s = 0.0, 0, 5.0
    for batch, at_s in changes:
        expected += (power.busy_w(last_batch) if last_batch else power.idle_w) * (at_s - last_s)
        meter.update(batch, at_s)
        assert meter.energy_j(at_s) == pytest.approx(expected, rel=1e-12)
        last_batch, last_s = batch, at_s
    assert meter.energy_j(13.25) == pytest.approx(expected + 2 * power.idle_w, rel=1e-12)
    # A reading mid-interval closes it; an earlier time adds nothing and takes nothing back.
    meter.update(3, 14.0)
    middle = meter.energy_j(15.0)
    assert meter.energy_j(14.5) == middle
    meter.update(0, 14.5)
    assert meter.energy_j(16.0) == pytest.approx(middle + power.idle_w, rel=1e-12)
    assert EnergyMeter(None).energy_j(100.0) == 0
