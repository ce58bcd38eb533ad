"""Property-based fuzzing (hypothesis): bad input gets a clean answer naming the problem.

- Calls: chat and completion bodies (near-valid, some with an unknown role or a prompt beyond
  every context window; arbitrary JSON or bytes; JSON nested thousands deep) with scheduling
  headers, sent to a live gateway on loopback (an instant emulator behind it). Every answer is
  2xx, or a 4xx OpenAI-style JSON error whose message names a field (or a 504 naming the time
  limit, when a drawn deadline is too short for it); never another 5xx, never a traceback,
  nothing logged at error level; the gateway is healthy afterwards.
- Configs: the gateway's YAML and a scenario's YAML, mutated from valid ones (values replaced
  by arbitrary JSON values, keys dropped or added) or arbitrary text. Loading either succeeds or
  raises one clean, one-line :class:`~perllm.errors.InputError`.

Example counts are bounded and derandomized: the same examples on every run.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from perllm.cluster import scenario
from perllm.errors import InputError
from perllm.gateway import create_app
from perllm.gateway.config import GatewayConfig, load_config
from perllm.policies.registry import make_policy

pytestmark = pytest.mark.fuzz

CALL_EXAMPLES = 500
CONFIG_EXAMPLES = 300
FUZZ = settings(
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
# What an error message may name: a body field, a header, or the body itself.
FIELDS = (
    "model",
    "messages",
    "prompt",
    "max_tokens",
    "max_completion_tokens",
    "stream",
    "temperature",
    "top_p",
    "presence_penalty",
    "frequency_penalty",
    "priority",
    "'n'",
    "role",
    "context window",
    "header",
    "body",
    "JSON",
)

LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(-10_000, 10_000)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
VALUES = st.recursive(
    LEAVES,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
HEADER_TEXT = st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=40)
NUMBER_TEXT = st.one_of(
    st.floats(-1e9, 1e12, allow_nan=False).map(repr),
    st.integers(-10, 10**9).map(str),
    st.sampled_from(["nan", "inf", "-0", "1e400", ""]),
    HEADER_TEXT,
)
ROLES = st.sampled_from(["user", "system", "assistant", "developer"])
ROLE_EDGES = st.sampled_from(["wizard", "", "USER", 1, None])
PARTS = st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=10)}))
MESSAGE = st.fixed_dictionaries({"role": ROLES, "content": st.text(max_size=30) | PARTS})
VALID_OPTIONAL = {
    "max_tokens": st.integers(1, 48) | st.just(4096),
    "stream": st.booleans(),
    "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
    "n": st.just(1),
    "temperature": st.floats(0, 2),
    "top_p": st.floats(0, 1),
    "presence_penalty": st.floats(-2, 2),
}
VALID_CHAT = st.fixed_dictionaries(
    {"model": st.just("m"), "messages": st.lists(MESSAGE, min_size=1, max_size=3)},
    optional=VALID_OPTIONAL,
)
VALID_COMPLETION = st.fixed_dictionaries(
    {"model": st.just("m"), "prompt": st.text(max_size=30) | st.lists(st.integers(0, 50))},
    optional=VALID_OPTIONAL,
)
# Fields a poisoned body gets wrong: each set to an arbitrary value, an edge value, or dropped.
POISONED = (
    "model",
    "messages",
    "prompt",
    "max_tokens",
    "max_completion_tokens",
    "stream",
    "stream_options",
    "n",
    "temperature",
    "top_p",
    "frequency_penalty",
    "priority",
)
EDGES = st.sampled_from([0, -1, 10**9, 4097, 2.5, "", "m", [], {}, None, True, float("nan")])
VALID_HEADERS = {
    "x-perllm-deadline-ms": st.floats(1, 1e6).map(repr),
    "x-slo-ttft-ms": st.floats(0, 1e4).map(repr),
    "x-slo-tpot-ms": st.floats(0, 100).map(repr),
    "x-perllm-class": st.sampled_from(["default", "tight"]),
    "x-request-id": st.text(st.sampled_from("abcXYZ019._:-"), min_size=1, max_size=40),
}
BAD_HEADERS = {
    "x-perllm-deadline-ms": NUMBER_TEXT,
    "x-slo-ttft-ms": NUMBER_TEXT,
    "x-slo-tpot-ms": NUMBER_TEXT,
    "x-perllm-class": st.sampled_from(["nope", ""]) | HEADER_TEXT,
    "x-request-id": HEADER_TEXT | st.just("a" * 200),
}


@st.composite
def bodies(draw: st.DrawFn, kind: str) -> Any:
    """A valid body, with none, one or two fields poisoned."""
    body = draw(VALID_CHAT if kind == "chat" else VALID_COMPLETION)
    for field in draw(st.lists(st.sampled_from(POISONED), max_size=2, unique=True)):
        if draw(st.booleans()):
            body[field] = draw(VALUES | EDGES)
        else:
            body.pop(field, None)
    messages = body.get("messages")
    if (
        isinstance(messages, list)
        and messages
        and isinstance(messages[0], dict)
        and draw(st.integers(0, 9)) == 0
    ):
        messages[0] = {**messages[0], "role": draw(ROLE_EDGES)}  # an unknown role
    if draw(st.integers(0, 19)) == 0:  # a prompt beyond every context window (4,096 tokens)
        body["messages" if kind == "chat" else "prompt"] = (
            [{"role": "user", "content": "x" * 20_000}] if kind == "chat" else "x" * 20_000
        )
    return body


@st.composite
def headers(draw: st.DrawFn) -> dict[str, str]:
    """Scheduling headers: mostly valid, sometimes one of them wrong."""
    chosen = draw(st.lists(st.sampled_from(sorted(VALID_HEADERS)), max_size=3, unique=True))
    bad = draw(st.sampled_from([None, *chosen])) if chosen else None
    return {
        name: draw(BAD_HEADERS[name] if name == bad else VALID_HEADERS[name]) for name in chosen
    }


@st.composite
def calls(draw: st.DrawFn) -> tuple[str, bytes, dict[str, str]]:
    """(path, body bytes, headers) of one call."""
    kind = draw(st.sampled_from(["chat", "completions"]))
    path = "/v1/chat/completions" if kind == "chat" else "/v1/completions"
    shape = draw(st.sampled_from(["near-valid"] * 6 + ["json", "bytes", "nested"]))
    if shape == "bytes":
        body = draw(st.binary(max_size=64))
    elif shape == "nested":  # brackets or objects thousands deep, closed or not
        depth = draw(st.integers(60, 5000))
        opener = draw(st.sampled_from([b"[", b'{"a":']))
        body = opener * depth + draw(st.sampled_from([b"", b"1" + b"]" * depth]))
    elif shape == "json":
        body = json.dumps(draw(VALUES)).encode()
    else:
        body = json.dumps(draw(bodies(kind))).encode()
    return path, body, draw(headers())


def _check(response: httpx.Response) -> None:
    assert "Traceback" not in response.text
    if response.status_code < 300:
        if response.headers["content-type"].startswith("text/event-stream"):
            assert response.text.rstrip().endswith("data: [DONE]"), response.text[-200:]
        else:
            assert response.json()["choices"]
        return
    error = response.json()["error"]
    if response.status_code == 504:  # a drawn deadline too short: the call's time limit passed
        assert error["code"] == "timeout" and "time limit" in error["message"], error
        return
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    assert set(error) == {"message", "type", "code"}
    assert any(word in error["message"] for word in FIELDS), error["message"]


def test_fuzzed_calls_get_2xx_or_a_4xx_naming_a_field(
    serve: Any, kit: Any, caplog: pytest.LogCaptureFixture
) -> None:
    backend = serve(kit.emulator(kit.EDGE, time_scale=0))
    config = kit.gateway_config([kit.backend("b", backend.url)])
    gateway = serve(create_app(config, make_policy("round-robin"), health_checks=False))
    seen: list[int] = []
    with httpx.Client(base_url=gateway.url, timeout=60) as client, caplog.at_level(logging.ERROR):

        @settings(FUZZ, max_examples=CALL_EXAMPLES)
        @given(call=calls())
        def check(call: tuple[str, bytes, dict[str, str]]) -> None:
            path, body, headers = call
            response = client.post(
                path, content=body, headers={"content-type": "application/json", **headers}
            )
            seen.append(response.status_code)
            _check(response)

        check()
        assert client.get("/health").status_code == 200
        fine = client.post(
            "/v1/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
        )
        assert fine.status_code == 200
    assert len(seen) == CALL_EXAMPLES
    assert 200 in seen and any(400 <= s < 500 for s in seen)  # both kinds were exercised
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, errors[0].getMessage()
    stats = httpx.get(gateway.url + "/stats").json()
    assert stats["in_flight"] == 0


VALID_GATEWAY: dict[str, Any] = {
    "backends": [
        {
            "name": "edge",
            "url": "http://127.0.0.1:8001",
            "tier": "edge",
            "models": {"m": "llama-2-7b"},
            "hardware": "rtx-3090",
            "model": "llama-2-7b",
            "dtype": "q4",
            "link": {"bandwidth-mbps": 100, "rtt-ms": 4},
            "max-tokens": 2048,
        }
    ],
    "policy": {"type": "cs-ucb", "params": {"exploration": 0.3}},
    "classes": {"default": {"deadline-ms": 30000, "output-tokens": 128}},
    "api-keys": ["k"],
    "metrics-auth": True,
    "limits": {"max-body-bytes": 1000, "per-key": {"concurrency": 4, "rate-rps": 2.0}},
    "timeouts": {"request-s": 60, "deadline-factor": 10, "drain-s": 5},
    "health": {"interval-s": 5},
}
VALID_SCENARIO: dict[str, Any] = yaml.safe_load(
    (Path(scenario.__file__).parent.parent / "scenarios" / "tiny.yaml").read_text()
)


def _paths(tree: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(tree, dict):
        for key, value in tree.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(tree, list):
        for index, value in enumerate(tree):
            found += _paths(value, (*prefix, index))
    return found


@st.composite
def mutated(draw: st.DrawFn, base: dict[str, Any]) -> Any:
    """``base`` with one to three nodes changed (a number for another, or any value),
    dropped, or given an unknown sibling."""
    tree = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(tree)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = tree
        for step in path[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["tweak", "tweak", "replace", "drop", "add"]))
        if action == "tweak":  # a number for a number: often still valid, so built further
            old = parent[path[-1]]
            if isinstance(old, bool) or not isinstance(old, int | float):
                parent[path[-1]] = draw(VALUES)
            elif isinstance(old, int):
                parent[path[-1]] = draw(st.integers(-2, 64))
            else:
                parent[path[-1]] = draw(st.floats(-1.0, 1e4))
        elif action == "replace":
            parent[path[-1]] = draw(VALUES)
        elif action == "drop":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=10))] = draw(VALUES)
    return tree


def _yaml_text(base: dict[str, Any]) -> st.SearchStrategy[str]:
    return st.one_of(
        mutated(base).map(lambda tree: yaml.safe_dump(tree, allow_unicode=True)),
        mutated(base).map(lambda tree: yaml.safe_dump(tree, allow_unicode=True)),
        st.text(max_size=80),
    )


def _clean(err: InputError) -> None:
    message = str(err)
    assert message and "\n" not in message, message
    assert "Traceback" not in message


def test_fuzzed_gateway_configs_load_or_fail_cleanly(tmp_path: Path) -> None:
    file = tmp_path / "gateway.yaml"
    outcomes: list[str] = []

    @settings(FUZZ, max_examples=CONFIG_EXAMPLES)
    @given(text=_yaml_text(VALID_GATEWAY))
    def check(text: str) -> None:
        file.write_text(text)
        try:
            assert isinstance(load_config(file), GatewayConfig)
            outcomes.append("loaded")
        except InputError as err:
            _clean(err)
            outcomes.append("refused")

    check()
    assert {"loaded", "refused"} <= set(outcomes)


def test_fuzzed_scenarios_load_or_fail_cleanly(tmp_path: Path) -> None:
    file = tmp_path / "scenario.yaml"
    outcomes: list[str] = []

    @settings(FUZZ, max_examples=CONFIG_EXAMPLES)
    @given(text=_yaml_text(VALID_SCENARIO))
    def check(text: str) -> None:
        file.write_text(text)
        try:
            scenario.load(str(file))
            outcomes.append("loaded")
        except InputError as err:
            _clean(err)
            outcomes.append("refused")

    check()
    assert {"loaded", "refused"} <= set(outcomes)
