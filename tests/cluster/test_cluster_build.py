"""The one builder: scenario server groups and gateway backends become specs the same way."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
import yaml

from perllm.cluster import scenario
from perllm.cluster.build import (
    ServerDescription,
    fit_problem,
    link_spec,
    resolve_profile,
    server_spec,
)
from perllm.cluster.parts import LinkConfig, PowerConfig
from perllm.cluster.profile import write_profile
from perllm.domain import LinkSpec, PowerSpec, ServerPerf
from perllm.errors import InputError
from perllm.gateway.config import load_config, parse_config
from perllm.gateway.view import build_specs
from perllm.perf.model import deployment

PERF = ServerPerf(0.05, 0.0004, 0.001, 0.03, 1e-6, 0.0)
XEON = {"hardware": "xeon-silver-4214r", "model": "llama-2-7b", "dtype": "q4"}


def _profile(path: Path, power: PowerSpec | None = None, max_batch: int = 2) -> Path:
    write_profile(
        path,
        {
            "perllm_profile": 1,
            "max_batch": max_batch,
            "perf": asdict(PERF),
            "power": asdict(power) if power is not None else None,
        },
    )
    return path


def _server(**changes: Any) -> ServerDescription:
    base = ServerDescription(name="s", tier="edge", link="l", max_batch=4, **XEON)
    return dataclasses.replace(base, **changes)


def test_a_catalog_server_is_its_deployment() -> None:
    spec = server_spec(_server())
    dep = deployment("xeon-silver-4214r", "llama-2-7b", "q4")
    assert spec.perf == dep.perf() and spec.power == dep.power()
    assert spec.kv_capacity_tokens == dep.kv_capacity_tokens()
    assert (spec.name, spec.tier, spec.link, spec.max_batch) == ("s", "edge", "l", 4)


def test_profile_then_power_override_then_time_scale(tmp_path: Path) -> None:
    path = _profile(tmp_path / "p.yaml", PowerSpec(5.0, 20.0, 0.8, 0.05), max_batch=2)
    spec = server_spec(_server(profile=path))
    assert spec.perf == PERF and spec.power == PowerSpec(5.0, 20.0, 0.8, 0.05)
    assert spec.max_batch == 4  # max_batch, unless the profile's is asked for
    assert server_spec(_server(profile=path, max_batch_from_profile=True)).max_batch == 2
    # An explicit power replaces the profile's idle and full-load watts, not its curve.
    spec = server_spec(_server(profile=path, power=PowerConfig(idle_w=7.0, max_w=70.0)))
    assert spec.power == PowerSpec(7.0, 70.0, 0.8, 0.05)
    # A time scale multiplies every perf time, and nothing else.
    scaled = server_spec(_server(profile=path, time_scale=0.5))
    assert scaled.perf == ServerPerf(*(x * 0.5 for x in asdict(PERF).values()))
    assert scaled.power == PowerSpec(5.0, 20.0, 0.8, 0.05)


def test_a_profile_without_power_keeps_the_catalog_power(tmp_path: Path) -> None:
    spec = server_spec(_server(profile=_profile(tmp_path / "p.yaml")))
    assert spec.perf == PERF and spec.power == server_spec(_server()).power


def test_hardware_overrides_change_the_deployment() -> None:
    spec = server_spec(_server(hardware_overrides={"idle_w": 33.0, "memory_gb": 1000.0}))
    base = server_spec(_server())
    assert spec.power.idle_w == 33.0 and spec.power.max_w == base.power.max_w
    assert spec.kv_capacity_tokens > base.kv_capacity_tokens


def test_fit_problem_names_the_sizes_unless_measured(tmp_path: Path) -> None:
    big = _server(hardware="rtx-3090", model="vicuna-33b", dtype="fp16")
    assert fit_problem(big) == "vicuna-33b fp16 needs 65.0 GB, more than rtx-3090's 24 GB"
    assert fit_problem(_server()) is None
    assert fit_problem(dataclasses.replace(big, profile=_profile(tmp_path / "p.yaml"))) is None


def test_link_spec_scales_the_rtt_only() -> None:
    link = LinkConfig(bandwidth_mbps=50.0, rtt_ms=10.0, tx_power_w=2.0)
    assert link_spec("e", link) == LinkSpec("e", 50.0, 0.01, 2.0)
    assert link_spec("e", link, time_scale=0.5) == LinkSpec("e", 50.0, 0.005, 2.0)


def test_relative_profile_is_next_to_the_file_then_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "run").mkdir()
    source = tmp_path / "conf" / "settings.yaml"
    source.write_text("{}")
    monkeypatch.chdir(tmp_path / "run")
    _profile(tmp_path / "run" / "p.yaml")
    assert resolve_profile("p.yaml", str(source), "f") == Path("p.yaml")
    _profile(tmp_path / "conf" / "p.yaml")
    assert resolve_profile("p.yaml", str(source), "f") == tmp_path / "conf" / "p.yaml"
    assert resolve_profile("p.yaml", "built in memory", "f") == Path("p.yaml")
    absolute = str(tmp_path / "run" / "p.yaml")
    assert resolve_profile(absolute, str(source), "f") == Path(absolute)
    with pytest.raises(InputError) as info:
        resolve_profile("none.yaml", str(source), "servers.x.profile")
    assert str(info.value) == (
        f"{source}: field 'servers.x.profile': file not found: {tmp_path / 'conf' / 'none.yaml'}"
    )


def test_a_scenario_group_and_a_gateway_backend_build_the_same_spec(tmp_path: Path) -> None:
    _profile(tmp_path / "node.yaml", PowerSpec(5.0, 20.0, 0.8, 0.05), max_batch=3)
    link = {"bandwidth-mbps": 100, "rtt-ms": 4, "tx-power-w": 2}
    scenario_file = tmp_path / "scenario.yaml"
    scenario_file.write_text(
        yaml.safe_dump(
            {
                "name": "one",
                "links": [{"name": "node", **link}],
                "servers": [
                    {"name": "node", "tier": "edge", "link": "node", "profile": "node.yaml"}
                    | XEON
                    | {"max-batch": 3}
                ],
                "workload": {"arrivals": {"rate-rps": 1.0}, "classes": "personalized"},
            }
        )
    )
    gateway_file = tmp_path / "gateway.yaml"
    gateway_file.write_text(
        yaml.safe_dump(
            {
                "backends": [
                    {
                        "name": "node",
                        "url": "http://127.0.0.1:1",
                        "tier": "edge",
                        "models": ["m"],
                        "profile": "node.yaml",
                        "max-concurrency": 3,
                        "link": link,
                    }
                    | XEON
                ]
            }
        )
    )
    cluster = scenario.load(str(scenario_file))
    servers, links = build_specs(load_config(gateway_file))
    assert servers == cluster.servers
    assert links == cluster.links


@pytest.mark.parametrize(("field", "value"), [("hardware", "tpu"), ("model", "gpt-9")])
def test_one_name_check_for_scenarios_and_gateway_configs(
    tmp_path: Path, field: str, value: str
) -> None:
    backend = {"name": "e", "url": "http://x", "tier": "edge", "models": ["m"], **XEON}
    with pytest.raises(InputError) as gateway_error:
        parse_config({"backends": [backend | {field: value}]}, "gw.yaml")
    group = {"name": "e", "tier": "edge", "link": "l", **XEON}
    data = {
        "name": "t",
        "links": [{"name": "l", "bandwidth-mbps": 1, "tx-power-w": 0}],
        "servers": [group | {field: value}],
        "workload": {"arrivals": {"rate-rps": 1.0}, "classes": "personalized"},
    }
    with pytest.raises(InputError) as scenario_error:
        scenario.parse(data, "s.yaml")
    gateway_problem = str(gateway_error.value).removeprefix(f"gw.yaml: field 'backends.0.{field}'")
    scenario_problem = str(scenario_error.value).removeprefix(f"s.yaml: field 'servers.0.{field}'")
    assert gateway_problem == scenario_problem
    assert gateway_problem.startswith(f": unknown {field} (known: ")
    assert gateway_problem.endswith(f"), got {value!r}")
