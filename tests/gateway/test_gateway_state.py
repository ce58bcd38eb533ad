"""The policy's learned state is saved on shutdown and restored on start."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from perllm.errors import InputError
from perllm.gateway import create_app
from perllm.gateway.state import load_state, save_state
from perllm.policies.registry import make_policy

BODY = {"model": "m", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}


def times_learned(state: dict[str, Any]) -> float:
    """How many answers taught CS-UCB's time corrections, from its saved totals."""
    return sum(v for k, v in state["totals"].items() if k.startswith("t|") and "|count|" in k)


def test_state_round_trip(serve: Any, kit: Any, tmp_path: Path) -> None:
    state_file = tmp_path / "state" / "policy.json"
    edge = serve(kit.emulator(kit.EDGE, time_scale=0.01))
    cloud = serve(kit.emulator(kit.CLOUD, time_scale=0.01))
    config = kit.gateway_config(
        [kit.backend("e", edge.url, kit.EDGE), kit.backend("c", cloud.url, kit.CLOUD)],
        policy={"type": "cs-ucb"},
        **{"state-file": str(state_file)},
    )
    policy = make_policy("cs-ucb", seed=3)
    gateway = serve(create_app(config, policy))
    for _ in range(6):
        assert httpx.post(gateway.url + "/v1/chat/completions", json=BODY).is_success
    learned = json.loads(httpx.get(gateway.url + "/admin/state").text)
    assert times_learned(learned) == 6
    gateway.stop()

    document = json.loads(state_file.read_text())
    assert document["policy"] == "cs-ucb"
    assert document["state"] == learned

    fresh = make_policy("cs-ucb", seed=4)
    restarted = serve(create_app(config, fresh))
    assert fresh.state() == learned
    assert httpx.post(restarted.url + "/v1/chat/completions", json=BODY).is_success
    assert times_learned(fresh.state()) == 7
    saved = httpx.post(restarted.url + "/admin/state")
    assert saved.json() == {"saved": str(state_file)}


def test_state_of_another_policy_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    save_state(make_policy("round-robin"), path)
    assert not load_state(make_policy("cs-ucb"), path)
    assert not load_state(make_policy("cs-ucb"), tmp_path / "missing.json")


def test_unreadable_state_file(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text("{broken")
    with pytest.raises(InputError, match="cannot read policy state"):
        load_state(make_policy("cs-ucb"), path)
    path.write_text("[1]")
    with pytest.raises(InputError, match="not a perllm policy state file"):
        load_state(make_policy("cs-ucb"), path)


def test_a_state_file_of_another_format_is_refused_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    save_state(make_policy("cs-ucb"), path)
    document = json.loads(path.read_text())
    for old in (None, 1, 3):
        if old is None:
            del document["format"]
        else:
            document["format"] = old
        path.write_text(json.dumps(document))
        with pytest.raises(InputError, match=r"format .*this perllm reads format 2") as info:
            load_state(make_policy("cs-ucb"), path)
        assert "\n" not in str(info.value)


def test_a_state_file_whose_contents_are_not_a_policy_s_state_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    save_state(make_policy("cs-ucb"), path)
    document = json.loads(path.read_text())
    # The layout of format 1: nested lists of rows, no longer a state of this perllm.
    document["state"] = {"n_servers": 2, "classes": {}, "times": {}, "energy": {}}
    path.write_text(json.dumps(document))
    with pytest.raises(InputError, match=r"state-file .*cs-ucb state: classes: not a field"):
        load_state(make_policy("cs-ucb"), path)
    document["state"] = {"policy": "cs-ucb", "n_servers": 2, "totals": {"t|0|7|count|c": 1}}
    path.write_text(json.dumps(document))
    with pytest.raises(InputError, match=r"cs-ucb state: totals: 't\|0\|7\|count\|c': not a"):
        load_state(make_policy("cs-ucb"), path)


def test_a_state_file_of_another_cluster_is_refused_at_load(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    policy = make_policy("cs-ucb")
    policy.begin(2)
    save_state(policy, path)
    assert load_state(make_policy("cs-ucb"), path, n_servers=2)
    with pytest.raises(InputError, match=r"state-file .*saved state has 2 servers, .* has 6"):
        load_state(make_policy("cs-ucb"), path, n_servers=6)
