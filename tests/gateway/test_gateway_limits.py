"""Abuse limits: per-key concurrency and rate (429 with retry-after), and a guarded /metrics.

In-process through ``httpx.ASGITransport``; the backend is an ``httpx.MockTransport`` that can
hold a call until the test lets it go.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from perllm.errors import InputError
from perllm.gateway import create_app
from perllm.gateway.config import parse_config
from perllm.policies.registry import make_policy

pytestmark = pytest.mark.anyio

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hello"}]}
ANSWER = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}]}


def _config(**extra: Any) -> Any:
    data: dict[str, Any] = {
        "backends": [
            {
                "name": "b",
                "url": "http://backend:8000",
                "tier": "edge",
                "models": ["m"],
                "hardware": "rtx-3090",
                "model": "llama-2-7b",
            }
        ],
        "policy": {"type": "round-robin"},
    }
    data.update(extra)
    return parse_config(data, "test")


def _gateway(
    config: Any, gate: asyncio.Event | None = None, arrived: asyncio.Event | None = None
) -> httpx.AsyncClient:
    async def answer(request: httpx.Request) -> httpx.Response:
        if arrived is not None:
            arrived.set()
        if gate is not None:
            await gate.wait()
        return httpx.Response(200, json=ANSWER)

    upstream = httpx.AsyncClient(transport=httpx.MockTransport(answer))
    app = create_app(config, make_policy("round-robin"), upstream, health_checks=False)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw")


async def test_per_key_concurrency_answers_429_with_retry_after() -> None:
    gate, arrived = asyncio.Event(), asyncio.Event()
    key = {"authorization": "Bearer k1"}
    config = _config(**{"api-keys": ["k1", "k2"], "limits": {"per-key": {"concurrency": 1}}})
    async with _gateway(config, gate, arrived) as client:
        first = asyncio.create_task(client.post("/v1/chat/completions", json=CHAT, headers=key))
        await asyncio.wait_for(arrived.wait(), 60)  # the first call is held by the backend
        second = await client.post("/v1/chat/completions", json=CHAT, headers=key)
        assert second.status_code == 429
        assert second.headers["retry-after"] == "1"
        assert "per-key.concurrency" in second.json()["error"]["message"]
        other = asyncio.create_task(
            client.post("/v1/chat/completions", json=CHAT, headers={"authorization": "Bearer k2"})
        )
        gate.set()
        assert (await first).status_code == 200
        assert (await other).status_code == 200  # another key has its own limit
        again = await client.post("/v1/chat/completions", json=CHAT, headers=key)
        assert again.status_code == 200  # the first call's slot was released


async def test_per_key_rate_answers_429_with_retry_after() -> None:
    # 0.001 calls a second: the bucket cannot refill during the test, whatever the machine.
    config = _config(limits={"per-key": {"rate-rps": 0.001, "burst": 2}})
    async with _gateway(config) as client:
        statuses = [
            (await client.post("/v1/chat/completions", json=CHAT)).status_code for _ in range(2)
        ]
        refused = await client.post("/v1/chat/completions", json=CHAT)
    assert statuses == [200, 200]
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.json()["error"]["code"] == "rate_limited"


async def test_metrics_can_require_a_key() -> None:
    async with _gateway(_config(**{"api-keys": ["k"], "metrics-auth": True})) as client:
        assert (await client.get("/metrics")).status_code == 401
        wrong = await client.get("/metrics", headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401
        ok = await client.get("/metrics", headers={"authorization": "Bearer k"})
        assert ok.status_code == 200
        assert "perllm_gateway_outcomes_total" in ok.text
    async with _gateway(_config(**{"api-keys": ["k"]})) as client:
        assert (await client.get("/metrics")).status_code == 200  # open by default


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"metrics-auth": True}, "metrics-auth"),
        ({"api-keys": [""]}, "api-keys"),
        ({"limits": {"per-key": {"concurrency": 0}}}, "limits.per-key.concurrency"),
        ({"limits": {"per-key": {"rate-rps": -1}}}, "limits.per-key.rate-rps"),
        ({"timeouts": {"request-s": 0}}, "timeouts.request-s"),
    ],
)
def test_bad_limit_settings_name_the_field(extra: dict[str, Any], field: str) -> None:
    with pytest.raises(InputError, match=field.replace(".", r"\.")):
        _config(**extra)


async def test_every_call_ends_with_one_outcome_and_a_request_id() -> None:
    async with _gateway(_config()) as client:
        ok = await client.post("/v1/chat/completions", json=CHAT)
        bad = await client.post("/v1/chat/completions", content=b"{")
        metrics = (await client.get("/metrics")).text
    assert ok.status_code == 200 and bad.status_code == 400
    assert ok.headers["x-request-id"] != bad.headers["x-request-id"]
    assert json.loads(bad.text)["error"]["code"] == "invalid_json"
    assert 'perllm_gateway_outcomes_total{outcome="answered"} 1.0' in metrics
    assert 'perllm_gateway_outcomes_total{outcome="error"} 1.0' in metrics
