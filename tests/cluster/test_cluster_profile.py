"""Profile YAML: round trip, one-line errors, and use by a scenario server group."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest
import yaml

from perllm.cluster import scenario
from perllm.cluster.profile import read_profile, write_profile
from perllm.domain import PowerSpec, ServerPerf
from perllm.errors import InputError

PERF = ServerPerf(0.05, 0.0004, 0.001, 0.03, 1e-6, 0.0)


def _write(path: Path, power: PowerSpec | None = None, max_batch: int = 1) -> Path:
    data = {
        "perllm_profile": 1,
        "model": "gemma-3-270m",
        "max_batch": max_batch,
        "perf": asdict(PERF),
        "power": asdict(power) if power is not None else None,
        "points": {"prefill": [{"prompt_tokens": 32, "ttft_s": float("nan")}]},
    }
    write_profile(path, data)
    return path


def test_round_trip(tmp_path: Path) -> None:
    path = _write(tmp_path / "p.yaml", PowerSpec(5.0, 20.0, 0.8, 0.05))
    text = path.read_text()
    assert "prefill-fixed-s" in text and "ttft-s: null" in text
    profile = read_profile(path)
    assert profile.server_perf() == PERF
    assert profile.power_spec() == PowerSpec(5.0, 20.0, 0.8, 0.05)
    assert profile.max_batch == 1 and profile.model == "gemma-3-270m"
    assert read_profile(_write(tmp_path / "q.yaml")).power_spec() is None


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[1, 2]", "must be a YAML mapping"),
        ("perf: {prefill-fixed-s: 1}", "prefill-s-per-token"),
        ("perf: [", "invalid YAML"),
    ],
)
def test_bad_profile_is_one_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    with pytest.raises(InputError, match=message) as info:
        read_profile(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_missing_profile_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read profile"):
        read_profile(tmp_path / "none.yaml")


def _scenario(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "one.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "one",
                "links": [{"name": "lan", "bandwidth-mbps": 1000, "tx-power-w": 0}],
                "servers": [
                    {
                        "name": "node",
                        "tier": "edge",
                        "hardware": "xeon-silver-4214r",
                        "model": "llama-2-7b",
                        "dtype": "q4",
                        "link": "lan",
                        **yaml.safe_load(extra),
                    }
                ],
                "workload": {
                    "arrivals": {"process": "poisson", "rate-rps": 1.0},
                    "classes": "personalized",
                },
            }
        )
    )
    return path


def test_scenario_group_uses_the_profile(tmp_path: Path) -> None:
    _write(tmp_path / "node.yaml", PowerSpec(5.0, 20.0), max_batch=1)
    cluster = scenario.load(str(_scenario(tmp_path, "{profile: node.yaml}")))
    (server,) = cluster.servers
    assert server.perf == PERF
    assert server.power == PowerSpec(5.0, 20.0)
    assert server.max_batch == 1
    cluster = scenario.load(str(_scenario(tmp_path, "{profile: node.yaml, max-batch: 3}")))
    assert cluster.servers[0].max_batch == 3


def test_scenario_without_power_in_profile_keeps_the_catalog_power(tmp_path: Path) -> None:
    _write(tmp_path / "node.yaml")
    catalog = scenario.load(str(_scenario(tmp_path, "{}"))).servers[0]
    profiled = scenario.load(str(_scenario(tmp_path, "{profile: node.yaml}"))).servers[0]
    assert profiled.power == catalog.power and profiled.perf == PERF


def test_scenario_missing_profile_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="profile': file not found"):
        scenario.load(str(_scenario(tmp_path, "{profile: nope.yaml}")))
