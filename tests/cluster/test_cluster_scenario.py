"""Scenarios: the built-ins, loading by path, and one-line errors for bad YAML."""

from __future__ import annotations

from pathlib import Path

import pytest

from perllm.cluster import scenario
from perllm.errors import InputError
from perllm.testing import MINIMAL_SCENARIO, scenario_with, write_yaml

# -- built-ins ----------------------------------------------------------------------------------


def test_builtin_names_include_the_shipped_scenarios() -> None:
    names = scenario.builtin_names()
    assert {"perllm-paper", "tiny"} <= set(names)
    for name in names:
        cluster = scenario.load(name)
        assert cluster.name == name
        assert cluster.servers and cluster.links
        assert {s.link for s in cluster.servers} <= set(cluster.links)
        assert set(cluster.dynamics) == set(cluster.links)


def test_perllm_paper_is_five_xeon_edges_and_one_a100_cloud() -> None:
    cluster = scenario.load("perllm-paper")
    edges = [s for s in cluster.servers if s.tier == "edge"]
    clouds = [s for s in cluster.servers if s.tier == "cloud"]
    assert len(edges) == 5 and len(clouds) == 1
    assert {s.hardware for s in edges} == {"xeon-silver-4214r"}
    assert clouds[0].hardware.startswith("a100")
    # Every edge has its own 100 Mbps link, the cloud a 300 Mbps one; all fluctuate by ±20%.
    edge_links = {cluster.links[s.link].bandwidth_mbps for s in edges}
    assert edge_links == {100.0}
    assert len({s.link for s in edges}) == 5
    assert cluster.links[clouds[0].link].bandwidth_mbps == 300.0
    for name in cluster.links:
        dyn = cluster.dynamics[name]
        assert dyn.kind == "fluctuate"
        assert dyn.amplitude == pytest.approx(0.2)
    # The models fit their memory and leave room for a KV cache.
    assert all(s.kv_capacity_tokens > 10_000 for s in cluster.servers)


def test_tiny_scenario_is_small_and_fixed() -> None:
    cluster = scenario.load("tiny")
    assert len(cluster.servers) == 3
    assert all(d.kind == "fixed" for d in cluster.dynamics.values())


def test_a_scenario_file_loads_by_path(tmp_path: Path) -> None:
    cluster = scenario.load(str(write_yaml(tmp_path, MINIMAL_SCENARIO)))
    assert cluster.name == "t" and len(cluster.servers) == 1
    assert cluster.servers[0].link == "wan"


# -- bad scenarios ------------------------------------------------------------------------------

BAD = {
    "unknown-key": (scenario_with(colour="red"), "colour"),
    "unknown-server-key": (scenario_with(servers__colour="red"), "servers.0.colour"),
    "negative-bandwidth": (scenario_with(links__bandwidth_mbps=-5), "links.0.bandwidth-mbps"),
    "zero-bandwidth": (scenario_with(links__bandwidth_mbps=0), "links.0.bandwidth-mbps"),
    "unknown-hardware": (scenario_with(servers__hardware="tpu-v9"), "servers.0.hardware"),
    "unknown-model": (scenario_with(servers__model="gpt-9"), "servers.0.model"),
    "unknown-link": (scenario_with(servers__link="nope"), "servers.0.link"),
    "too-big": (scenario_with(servers__model="vicuna-33b", servers__dtype="fp16"), "servers."),
    "bad-dtype": (scenario_with(servers__dtype="fp3"), "servers.0.dtype"),
    "zero-count": (scenario_with(servers__count=0), "servers.0.count"),
    "bad-override": (
        scenario_with(servers__hardware_overrides={"memory-bandwidth-gbps": -1}),
        "servers.0.hardware-overrides.memory-bandwidth-gbps",
    ),
    "series-missing-file": (
        scenario_with(links__dynamics={"kind": "series", "file": "no-such-file.csv"}),
        "links.0.dynamics.file",
    ),
    "series-zero-point": (
        scenario_with(links__dynamics={"kind": "series", "points": [[0, 100], [5, 0]]}),
        "links.0.dynamics",
    ),
    "series-without-points": (
        scenario_with(links__dynamics={"kind": "series"}),
        "links.0.dynamics",
    ),
    "amplitude-too-big": (
        scenario_with(links__dynamics={"kind": "fluctuate", "amplitude": 1.5}),
        "links.0.dynamics.amplitude",
    ),
    "missing-workload": (
        {k: v for k, v in MINIMAL_SCENARIO.items() if k != "workload"},
        "workload",
    ),
    "unknown-class-set": (
        scenario_with(workload={"arrivals": {"rate-rps": 1.0}, "classes": "nope"}),
        "workload.classes",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_scenario_gives_one_line_naming_file_and_field(tmp_path: Path, case: str) -> None:
    data, field = BAD[case]
    path = write_yaml(tmp_path, data, f"{case}.yaml")
    with pytest.raises(InputError) as err:
        scenario.load(str(path))
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(str(path)), message
    assert f"'{field}" in message, message


def test_too_big_names_the_sizes(tmp_path: Path) -> None:
    data = scenario_with(servers__model="vicuna-33b", servers__dtype="fp16")
    with pytest.raises(InputError, match=r"65\.0 GB.*24 GB"):
        scenario.load(str(write_yaml(tmp_path, data)))


@pytest.mark.parametrize(
    ("text", "line"),
    [("name: t\nlinks: [\n  - a: b\n", ":3:"), ("name: t\n  bad: indent\n", ":2:")],
)
def test_invalid_yaml_syntax_names_the_line(tmp_path: Path, text: str, line: str) -> None:
    path = write_yaml(tmp_path, text, "broken.yaml")
    with pytest.raises(InputError) as err:
        scenario.load(str(path))
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{path}{line}") and "invalid YAML" in message


@pytest.mark.parametrize("text", ["", "- 1\n- 2\n", "just a string\n"])
def test_a_scenario_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    path = write_yaml(tmp_path, text, "odd.yaml")
    with pytest.raises(InputError, match="must be a YAML mapping"):
        scenario.load(str(path))


def test_unknown_scenario_name_lists_the_builtins() -> None:
    with pytest.raises(InputError, match="perllm-paper"):
        scenario.load("no-such-scenario")


@pytest.mark.parametrize(
    ("text", "problem"),
    [("0,100\n5,abc\n", ":2:"), ("0,100\n5,-3\n", ":2: bandwidth must be > 0")],
)
def test_bad_series_file_names_file_and_line(tmp_path: Path, text: str, problem: str) -> None:
    series = tmp_path / "bw.csv"
    series.write_text(text)
    data = scenario_with(links__dynamics={"kind": "series", "file": str(series)})
    with pytest.raises(InputError) as err:
        scenario.load(str(write_yaml(tmp_path, data)))
    assert "\n" not in str(err.value)
    assert str(err.value).startswith(f"{series}{problem}")
