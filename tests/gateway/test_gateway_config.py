"""Gateway config, live view, health, testbed planning and the CLI's one-line errors."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from perllm import physics
from perllm.cluster import scenario
from perllm.domain import RouterRequest
from perllm.errors import InputError
from perllm.gateway.cli import add_gateway_commands
from perllm.gateway.config import load_config, parse_config
from perllm.gateway.health import CircuitBreaker, HealthChecker
from perllm.gateway.testbed import PUBLIC_MODEL, plan_testbed
from perllm.gateway.view import LiveView
from perllm.perf.model import deployment


def _prompt(tokens: int) -> RouterRequest:
    """A request of ``tokens`` prompt tokens, as the gateway counts it in flight."""
    return RouterRequest(0, 0.0, "chat", tokens, 4 * tokens, 10.0)


pytestmark = pytest.mark.anyio

GOOD = """
backends:
  - name: edge
    url: http://127.0.0.1:8001/v1
    tier: edge
    models: [llama]
    hardware: rtx-3090
    model: llama-2-7b
    dtype: q4
    link: {bandwidth-mbps: 50, rtt-ms: 10, tx-power-w: 2}
    max-concurrency: 4
policy: {type: cs-ucb, params: {exploration: 0.5}}
time-scale: 0.5
"""


def test_load_good_config(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(GOOD)
    config = load_config(path)
    assert config.backends[0].base_url == "http://127.0.0.1:8001"
    assert config.backends[0].model_map == {"llama": "llama"}
    view = LiveView(config, [CircuitBreaker(3, 10.0)])
    spec = view.servers[0]
    full = deployment("rtx-3090", "llama-2-7b", "q4").perf()
    assert spec.perf.step_weights_s == pytest.approx(full.step_weights_s * 0.5)
    assert view.links["edge"].rtt_s == pytest.approx(0.005)
    assert spec.max_batch == 4
    view.begin(0, _prompt(10))
    for _ in range(4):
        view.begin(0, _prompt(10))
    loads = view.load_arrays()
    assert (loads.running[0], loads.queued[0], loads.tokens_in_flight[0]) == (4, 1, 50)
    view.observe_transfer(0, 1_000_000, 0.1)  # 80 Mbit/s
    weight = physics.BANDWIDTH_EWMA  # the simulator's rate too
    assert view.bandwidth_mbps("edge") == pytest.approx((1 - weight) * 50 + weight * 80)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"colour": "red"}, "field 'colour': Extra inputs are not permitted"),
        ({"backends": []}, "field 'backends'"),
        ({"default-class": "vip"}, "default-class 'vip'"),
        (
            {
                "backends": [
                    {
                        "name": "x",
                        "url": "ftp://x",
                        "tier": "edge",
                        "models": ["m"],
                        "hardware": "rtx-3090",
                        "model": "llama-2-7b",
                    }
                ]
            },
            "backends.0.url",
        ),
        (
            {
                "backends": [
                    {
                        "name": "x",
                        "url": "http://x",
                        "tier": "edge",
                        "models": ["m"],
                        "hardware": "tpu",
                        "model": "llama-2-7b",
                    }
                ]
            },
            r"field 'backends\.0\.hardware': unknown hardware \(known: .*\), got 'tpu'$",
        ),
    ],
)
def test_bad_configs_are_one_line(change: dict[str, Any], message: str) -> None:
    data = {**yaml.safe_load(GOOD), **change}
    with pytest.raises(InputError, match=message) as info:
        parse_config(data, "gw.yaml")
    assert "\n" not in str(info.value) and str(info.value).startswith("gw.yaml: ")


def test_config_file_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="file not found"):
        load_config(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("backends: [\n")
    with pytest.raises(InputError, match=r"bad.yaml:\d+: invalid YAML"):
        load_config(bad)


def test_circuit_breaker() -> None:
    breaker = CircuitBreaker(failure_threshold=2, cooldown_s=10.0)
    breaker.record_failure(0.0)
    assert breaker.state(0.0) == "closed"
    breaker.record_failure(1.0)
    assert breaker.state(5.0) == "open" and not breaker.available(5.0)
    assert breaker.state(11.0) == "half-open" and breaker.available(11.0)
    breaker.record_failure(11.0)  # the trial failed: open again
    assert breaker.state(12.0) == "open"
    breaker.record_success()
    assert breaker.state(12.0) == "closed"


def test_an_opened_circuit_is_logged_with_its_backend(caplog: pytest.LogCaptureFixture) -> None:
    breaker = CircuitBreaker(failure_threshold=1, cooldown_s=10.0, name="edge-7")
    with caplog.at_level("WARNING"):
        breaker.record_failure(0.0)
    assert [r.getMessage() for r in caplog.records] == [
        "circuit of edge-7 opened after 1 consecutive failures"
    ]


def test_a_directory_as_config_is_named_as_one(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"^--config: '.*' is a directory, not a YAML file$"):
        load_config(tmp_path)


def test_testbed_ports_past_65535_are_one_error_naming_the_port() -> None:
    cluster = scenario.load("tiny")
    with pytest.raises(InputError, match=r"^--port: 65535 leaves no room .* above 65535\)"):
        plan_testbed(
            cluster, host="127.0.0.1", port=65535, time_scale=0.1, policy={"type": "cs-ucb"}
        )
    plans, _ = plan_testbed(
        cluster, host="127.0.0.1", port=65532, time_scale=0.1, policy={"type": "cs-ucb"}
    )
    assert plans[-1].port == 65535


async def test_health_checks_open_and_close_the_circuit() -> None:
    config = parse_config(
        {**yaml.safe_load(GOOD), "health": {"failure-threshold": 1, "cooldown-s": 0.01}}, "gw"
    )
    up = {"ok": False}

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200 if up["ok"] else 503)

    breaker = CircuitBreaker(1, 0.01)
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        checker = HealthChecker(config.backends, [breaker], config.health, client)
        assert not await checker.check(0)
        assert breaker.is_open
        up["ok"] = True
        breaker.opened_at -= 1.0  # the cooldown has passed
        assert await checker.check(0)
        assert not breaker.is_open


def test_testbed_plan_from_tiny_scenario() -> None:
    cluster = scenario.load("tiny")
    policy = {"type": "cs-ucb"}
    plans, config = plan_testbed(
        cluster, host="127.0.0.1", port=9000, time_scale=0.1, policy=policy
    )
    assert [p.port for p in plans] == [9001, 9002, 9003]
    assert [p.profile for p in plans] == [
        "rtx-3090:llama-2-7b:q4",
        "rtx-3090:llama-2-7b:q4",
        "a100-80gb:llama-2-13b:fp16",
    ]
    assert plans[2].rtt_ms == pytest.approx(40.0)
    assert config.public_models() == [PUBLIC_MODEL]
    assert config.time_scale == 0.1


def _parser() -> argparse.ArgumentParser:
    from perllm.cli import _Parser

    parser = _Parser(prog="perllm")
    add_gateway_commands(parser.add_subparsers(dest="command", parser_class=_Parser))
    return parser


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve"], "--config"),
        (["emulate", "--profile", "instant", "--port", "x"], "--port: expected an integer"),
        (["emulate", "--profile", "instant", "--time-scale", "-1"], "--time-scale: must be >= 0"),
        (["emulate", "--profile", "instant", "--port", "70000"], "--port: must be <= 65,535"),
        (["testbed", "--scenario", "tiny", "--param", "oops"], "--param: expected KEY=VALUE"),
    ],
)
def test_cli_flag_errors(argv: list[str], message: str) -> None:
    with pytest.raises(InputError, match=message):
        _parser().parse_args(argv)


def test_cli_serve_with_missing_config(tmp_path: Path) -> None:
    args = _parser().parse_args(["serve", "--config", str(tmp_path / "no.yaml")])
    with pytest.raises(InputError, match="file not found"):
        args.func(args)


def test_the_shipped_example_config_loads_with_its_measured_profile() -> None:
    from pathlib import Path

    from perllm.gateway.config import load_config
    from perllm.gateway.view import build_specs

    root = Path(__file__).resolve().parents[2]
    config = load_config(root / "scenarios" / "gateway-example.yaml")
    servers, links = build_specs(config)
    assert [s.tier for s in servers] == ["edge", "edge", "cloud"]
    # The edges take the measured llama.cpp profile, not the catalog's Xeon numbers.
    catalog_cloud = servers[2].perf
    assert servers[0].perf != catalog_cloud
    assert 0.005 < servers[0].perf.prefill_s_per_token < 0.05
    assert links["cloud"].rtt_s == 0.04


def test_the_shipped_measured_config_scrapes_and_measures_every_backend() -> None:
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    config = load_config(root / "scenarios" / "gateway-measured.yaml")
    assert [b.engine for b in config.backends] == ["vllm", "vllm"]
    sources = [b.power_source for b in config.backends]
    assert all(s is not None and s.unit == "mJ" for s in sources)
    assert config.backends[0].scrape_url == "http://127.0.0.1:8101/metrics"
