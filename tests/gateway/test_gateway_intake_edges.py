"""Hostile and odd calls on a live gateway (loopback): each gets a clean 4xx naming the problem,
or is counted as abandoned, never a 5xx or an ERROR log line.

Nested JSON thousands deep, a body that never arrives in full, a client that hangs up
mid-upload, unknown roles, ``n``, ``stream_options`` of the wrong type, a prompt no backend's
context window holds, and ``GET /v1/models/{id}``.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families
from waiting import wait_for

from perllm.gateway import create_app
from perllm.policies.registry import make_policy

CHAT = "/v1/chat/completions"
HI = [{"role": "user", "content": "hi"}]
BODY_S = 0.3  # timeouts.body-s of the gateway under test


@pytest.fixture
def gateway(serve: Any, kit: Any, caplog: pytest.LogCaptureFixture) -> Iterator[Any]:
    """A gateway in front of an instant emulator; no ERROR line may be logged meanwhile."""
    backend = serve(kit.emulator(kit.EDGE, time_scale=0))
    config = kit.gateway_config(
        [kit.backend("b", backend.url)],
        timeouts={"connect-s": 1, "read-s": 10, "drain-s": 5, "body-s": BODY_S},
    )
    with caplog.at_level(logging.WARNING):
        yield serve(create_app(config, make_policy("round-robin"), health_checks=False))
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, errors


def _error(response: httpx.Response, status: int) -> dict[str, str]:
    assert response.status_code == status, response.text
    error: dict[str, str] = response.json()["error"]
    return error


def _counters(url: str) -> dict[tuple[str, str], float]:
    """``(sample name, its labels as text)`` -> value, from the gateway's ``/metrics``."""
    found = {}
    for family in text_string_to_metric_families(httpx.get(url + "/metrics").text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            found[(sample.name, labels)] = sample.value
    return found


def _raw(url: str, head: bytes, body: bytes) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.sendall(head + body)
    return sock


def _partial_upload(url: str, declared: int, sent: bytes) -> socket.socket:
    head = (
        f"POST {CHAT} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        f"content-length: {declared}\r\n\r\n"
    ).encode()
    return _raw(url, head, sent)


def test_json_nested_thousands_deep_is_a_400_naming_the_body(gateway: Any) -> None:
    for raw in (b"[" * 4096, b"[" * 4096 + b"]" * 4096, b'{"a":' * 5000):
        answer = httpx.post(gateway.url + CHAT, content=raw)
        assert answer.status_code == 400, answer.text
        assert "body" in answer.json()["error"]["message"]
    deep: Any = "hi"
    for _ in range(100):
        deep = [deep]
    error = _error(
        httpx.post(
            gateway.url + CHAT, json={"model": "m", "messages": [{"role": "user", "content": deep}]}
        ),
        400,
    )
    assert error["message"] == "request body nests deeper than 64 levels"


def test_a_body_that_never_arrives_in_full_gets_a_408_and_the_connection_closes(
    gateway: Any,
) -> None:
    with _partial_upload(gateway.url, 500, b'{"model": "') as sock:
        answer = b""
        while chunk := sock.recv(65536):  # the gateway closes the connection after its 408
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), head
    assert b"connection: close" in head.lower()
    assert json.loads(body)["error"]["code"] == "body_timeout"
    assert "timeouts.body-s" in json.loads(body)["error"]["message"]


def test_a_client_hanging_up_mid_upload_is_abandoned_not_a_500(gateway: Any) -> None:
    before = _counters(gateway.url)
    for _ in range(5):
        _partial_upload(gateway.url, 500, b'{"model": "m", "mess').close()
    key = ("perllm_gateway_outcomes_total", "outcome=abandoned")
    wait_for(
        lambda: _counters(gateway.url).get(key, 0) - before.get(key, 0) == 5,
        "5 calls counted as abandoned",
    )
    after = _counters(gateway.url)
    assert not any(
        name == "perllm_gateway_requests_total" and "status=5" in labels for name, labels in after
    ), after
    assert httpx.get(gateway.url + "/stats").json()["in_flight"] == 0


@pytest.mark.parametrize(
    ("change", "code", "names"),
    [
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "bad_message", "role"),
        ({"n": 1000}, "bad_param", "'n'"),
        ({"n": 0}, "bad_param", "'n'"),
        ({"stream": True, "stream_options": "yes"}, "bad_param", "stream_options"),
        ({"stream_options": {"include_usage": True}}, "bad_param", "stream_options"),
        (
            {"stream": True, "stream_options": {"include_usage": "yes"}},
            "bad_param",
            "include_usage",
        ),
        ({"messages": [{"role": "user", "content": "x" * 40_000}]}, "context_length_exceeded", ""),
    ],
)
def test_bad_fields_are_refused_at_once_naming_them(
    gateway: Any, change: dict[str, Any], code: str, names: str
) -> None:
    body = {"model": "m", "messages": HI, "max_tokens": 4, **change}
    error = _error(httpx.post(gateway.url + CHAT, json=body), 400)
    assert error["code"] == code
    assert names in error["message"]


def test_a_prompt_beyond_the_context_window_names_the_window(gateway: Any) -> None:
    # LLaMA-2's window is 4,096 tokens: 3,000 prompt tokens fit, with 2,000 more they do not.
    prompt = [{"role": "user", "content": "x" * 12_000}]
    ok = httpx.post(gateway.url + CHAT, json={"model": "m", "messages": prompt, "max_tokens": 4})
    assert ok.status_code == 200, ok.text
    error = _error(
        httpx.post(gateway.url + CHAT, json={"model": "m", "messages": prompt, "max_tokens": 2000}),
        400,
    )
    assert "3000 tokens plus 'max_tokens' of 2000" in error["message"]
    assert "(at most 4096)" in error["message"]


def test_valid_choices_and_stream_options_are_served(gateway: Any) -> None:
    plain = httpx.post(gateway.url + CHAT, json={"model": "m", "messages": HI, "n": 1})
    assert plain.status_code == 200 and len(plain.json()["choices"]) == 1
    body = {
        "model": "m",
        "messages": [{"role": "developer", "content": "be brief"}, *HI],
        "max_tokens": 3,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with httpx.stream("POST", gateway.url + CHAT, json=body) as stream:
        events = [line for line in stream.iter_lines() if line.startswith("data:")]
    assert events[-1] == "data: [DONE]"
    assert json.loads(events[-2].removeprefix("data: "))["usage"]["completion_tokens"] == 3


def test_a_model_is_retrieved_by_id_and_an_unknown_one_is_a_404(gateway: Any) -> None:
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0)
    assert client.models.retrieve("m").id == "m"
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("nope")
    assert "'nope' is not served here; known: m" in str(caught.value)
