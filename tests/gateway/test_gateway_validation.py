"""Bad input gets the right 4xx status and an OpenAI-style error naming the problem.

Fast unit tests through ``httpx.ASGITransport``; the backends are an ``httpx.MockTransport``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from perllm.domain import ClusterView, Decision, Feedback, RouterRequest
from perllm.gateway import create_app
from perllm.gateway.config import GatewayConfig
from perllm.policies.registry import make_policy

pytestmark = pytest.mark.anyio

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hello there"}]}


class SpyPolicy:
    """Round-robin that remembers the requests it was asked about."""

    name = "spy"

    def __init__(self) -> None:
        self.inner = make_policy("round-robin")
        self.requests: list[RouterRequest] = []
        self.feedback: list[Feedback] = []

    def select(self, request: RouterRequest, view: ClusterView) -> Decision:
        self.requests.append(request)
        decision = self.inner.select(request, view)
        # An estimate on even requests only: the header is sent exactly when there is one.
        estimate_s = 0.25 if len(self.requests) % 2 == 0 else math.nan
        return dataclasses.replace(decision, estimate_s=estimate_s)

    def observe(self, feedback: Feedback) -> None:
        self.feedback.append(feedback)

    def forget(self, request: RouterRequest, decision: Decision) -> None:
        self.inner.forget(request, decision)

    def state(self) -> dict[str, Any]:
        return {}

    def restore(self, state: dict[str, Any]) -> None:
        return None


def _answer(request: httpx.Request) -> httpx.Response:
    body = json.loads(request.content)
    answer = {
        "id": "x",
        "object": "chat.completion",
        "model": body["model"],
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 7, "total_tokens": 10},
    }
    return httpx.Response(200, json=answer)


@pytest.fixture
async def gateway(
    kit: Any,
) -> AsyncIterator[tuple[httpx.AsyncClient, SpyPolicy, list[httpx.Request]]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return _answer(request)

    config = kit.gateway_config(
        [
            kit.backend("e", "http://edge:1", kit.EDGE),
            kit.backend("c", "http://cloud:1", kit.CLOUD),
        ],
        limits={"max-body-bytes": 2000},
    )
    policy = SpyPolicy()
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as upstream:
        app = create_app(config, policy, upstream, health_checks=False)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            yield client, policy, seen


def _error(response: httpx.Response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "code"}
    for word in words:
        assert word in error["message"]


async def test_forwards_with_model_mapping_and_headers(gateway: Any) -> None:
    client, policy, seen = gateway
    response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "hi"
    assert response.headers["x-perllm-backend"] == "e"
    assert "x-perllm-estimate-ms" not in response.headers  # no estimate: no header, never nan
    second = await client.post("/v1/chat/completions", json=CHAT)
    assert second.headers["x-perllm-estimate-ms"] == "250.000"
    assert json.loads(seen[0].content)["model"] == "llama-2-7b"
    assert seen[0].url.path == "/v1/chat/completions"
    assert policy.feedback[0].output_tokens == 7
    request = policy.requests[0]
    assert request.deadline_s == pytest.approx(5.0)
    assert request.service_class == "default"
    assert request.prompt_tokens == 3  # "hello there" = 11 chars -> ceil(11 / 4)


async def test_deadline_headers(gateway: Any) -> None:
    client, policy, _ = gateway
    body = {**CHAT, "max_tokens": 10}
    await client.post("/v1/chat/completions", json=body, headers={"x-perllm-deadline-ms": "250"})
    headers = {"x-slo-ttft-ms": "100", "x-slo-tpot-ms": "20"}
    await client.post("/v1/chat/completions", json=body, headers=headers)
    await client.post("/v1/chat/completions", json=CHAT, headers={"x-perllm-class": "tight"})
    deadlines = [r.deadline_s for r in policy.requests]
    assert deadlines == pytest.approx([0.25, 0.3, 0.1])
    assert policy.requests[2].service_class == "tight"


@pytest.mark.parametrize(
    ("headers", "deadline_s"),
    [
        # llm-d's names alone: 100 + 20 * 10 ms.
        ({"x-llm-d-slo-ttft-ms": "100", "x-llm-d-slo-tpot-ms": "20"}, 0.3),
        ({"x-llm-d-slo-ttft-ms": "80"}, 0.08),
        ({"x-llm-d-slo-tpot-ms": "5"}, 0.05),
        # Each SLO separately: x-slo-* for the TTFT, llm-d's name for the TPOT.
        ({"x-slo-ttft-ms": "100", "x-llm-d-slo-tpot-ms": "30"}, 0.4),
        ({"x-llm-d-slo-ttft-ms": "100", "x-slo-tpot-ms": "30"}, 0.4),
        # The same value under both names of one SLO is no conflict.
        ({"x-slo-ttft-ms": "50", "x-llm-d-slo-ttft-ms": "50.0"}, 0.05),
        # x-perllm-deadline-ms comes first.
        ({"x-perllm-deadline-ms": "250", "x-llm-d-slo-ttft-ms": "100"}, 0.25),
    ],
)
async def test_llm_d_slo_headers(gateway: Any, headers: dict[str, str], deadline_s: float) -> None:
    client, policy, _ = gateway
    body = {**CHAT, "max_tokens": 10}
    response = await client.post("/v1/chat/completions", json=body, headers=headers)
    assert response.status_code == 200, response.text
    assert [r.deadline_s for r in policy.requests] == pytest.approx([deadline_s])


@pytest.mark.parametrize(
    ("content", "headers", "status", "words"),
    [
        (b"{not json", {}, 400, ("not valid JSON",)),
        (b"[1, 2]", {}, 400, ("JSON object",)),
        (json.dumps({"model": "m"}).encode(), {}, 400, ("messages",)),
        (json.dumps({"messages": CHAT["messages"]}).encode(), {}, 400, ("model",)),
        (json.dumps({**CHAT, "model": "gpt-9"}).encode(), {}, 404, ("gpt-9", "known: m")),
        (json.dumps({**CHAT, "max_tokens": -3}).encode(), {}, 400, ("max_tokens",)),
        (json.dumps({**CHAT, "stream": "yes"}).encode(), {}, 400, ("stream",)),
        (json.dumps({**CHAT, "temperature": "hot"}).encode(), {}, 400, ("temperature",)),
        (json.dumps({**CHAT, "top_p": 3}).encode(), {}, 400, ("top_p", "[0, 1]")),
        (
            json.dumps({**CHAT, "messages": [{"role": "user", "content": 5}]}).encode(),
            {},
            400,
            ("messages[0].content",),
        ),
        (
            json.dumps(CHAT).encode(),
            {"x-perllm-deadline-ms": "1e308"},
            400,
            ("x-perllm-deadline-ms", "at most"),
        ),
        (
            json.dumps(CHAT).encode(),
            {"x-perllm-deadline-ms": "-5"},
            400,
            ("x-perllm-deadline-ms", "positive"),
        ),
        (
            json.dumps(CHAT).encode(),
            {"x-perllm-deadline-ms": "soon"},
            400,
            ("x-perllm-deadline-ms", "'soon'"),
        ),
        (json.dumps(CHAT).encode(), {"x-slo-tpot-ms": "nan"}, 400, ("x-slo-tpot-ms",)),
        (
            json.dumps(CHAT).encode(),
            {"x-slo-ttft-ms": "100", "x-llm-d-slo-ttft-ms": "200"},
            400,
            ("x-slo-ttft-ms", "x-llm-d-slo-ttft-ms", "'100'", "'200'"),
        ),
        (
            json.dumps(CHAT).encode(),
            {"x-slo-tpot-ms": "2", "x-llm-d-slo-tpot-ms": "3"},
            400,
            ("x-slo-tpot-ms", "x-llm-d-slo-tpot-ms"),
        ),
        (
            json.dumps(CHAT).encode(),
            {"x-llm-d-slo-tpot-ms": "soon"},
            400,
            ("x-llm-d-slo-tpot-ms", "'soon'"),
        ),
        (
            json.dumps(CHAT).encode(),
            {"x-llm-d-slo-ttft-ms": "-1"},
            400,
            ("x-llm-d-slo-ttft-ms", "positive"),
        ),
        (
            json.dumps(CHAT).encode(),
            {"x-slo-ttft-ms": "inf", "x-llm-d-slo-ttft-ms": "100"},
            400,
            ("x-slo-ttft-ms", "'inf'"),
        ),
        (
            json.dumps(CHAT).encode(),
            {"x-llm-d-slo-ttft-ms": "0"},
            400,
            ("header x-llm-d-slo-ttft-ms", "zero deadline"),
        ),
        (json.dumps(CHAT).encode(), {"x-perllm-class": "vip"}, 400, ("'vip'", "default")),
        (b"x" * 3000, {}, 413, ("exceeds 2000",)),
    ],
)
async def test_bad_chat_input(
    gateway: Any, content: bytes, headers: dict[str, str], status: int, words: tuple[str, ...]
) -> None:
    client, policy, seen = gateway
    response = await client.post("/v1/chat/completions", content=content, headers=headers)
    _error(response, status, *words)
    assert not seen and not policy.requests


async def test_completions_need_a_prompt(gateway: Any) -> None:
    client, _, _ = gateway
    response = await client.post("/v1/completions", json={"model": "m"})
    _error(response, 400, "prompt")


async def test_unknown_route_and_method(gateway: Any) -> None:
    client, _, _ = gateway
    _error(await client.get("/v2/nothing"), 404, "/v2/nothing")
    _error(await client.get("/v1/chat/completions"), 405)


async def test_models_and_stats(gateway: Any) -> None:
    client, _, _ = gateway
    await client.post("/v1/chat/completions", json=CHAT)
    models = (await client.get("/v1/models")).json()
    assert [m["id"] for m in models["data"]] == ["m"]
    stats = (await client.get("/stats")).json()
    assert stats["policy"] == "spy"
    assert stats["backends"]["e"]["answered"] == 1
    assert stats["summary"]["requests"] == 1
    metrics = (await client.get("/metrics")).text
    assert 'perllm_gateway_requests_total{backend="e",status="200"} 1.0' in metrics


async def test_api_keys(kit: Any) -> None:
    edge = kit.backend("e", "http://edge:1", kit.EDGE)
    config = kit.gateway_config([edge], **{"api-keys": ["s3cret"]})
    async with httpx.AsyncClient(transport=httpx.MockTransport(_answer)) as upstream:
        app = create_app(config, SpyPolicy(), upstream, health_checks=False)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            _error(await client.post("/v1/chat/completions", json=CHAT), 401, "API key")
            _error(await client.get("/stats"), 401)
            _error(await client.get("/admin/state"), 401)
            wrong = {"authorization": "Bearer nope"}
            _error(await client.post("/v1/chat/completions", json=CHAT, headers=wrong), 401)
            good = {"authorization": "Bearer s3cret"}
            assert (await client.post("/v1/chat/completions", json=CHAT, headers=good)).is_success
            assert (await client.get("/stats", headers=good)).is_success
            assert (await client.get("/health")).is_success


async def test_unreachable_backends_give_502_then_503(kit: Any) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    config: GatewayConfig = kit.gateway_config([kit.backend("e", "http://edge:1", kit.EDGE)])
    async with httpx.AsyncClient(transport=httpx.MockTransport(refuse)) as upstream:
        app = create_app(config, SpyPolicy(), upstream, health_checks=False)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            first = await client.post("/v1/chat/completions", json=CHAT)
            _error(first, 502, "all backends failed", "connection refused")
            second = await client.post("/v1/chat/completions", json=CHAT)
            _error(second, 503, "no healthy backend")
            assert (await client.get("/health")).status_code == 503
