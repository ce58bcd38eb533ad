"""The official ``openai`` client gets correct answers through the gateway from emulators."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from perllm.emulator.engine import filler_token
from perllm.gateway import create_app
from perllm.policies.registry import make_policy

MESSAGES: Any = [{"role": "user", "content": "Say something about edge clouds."}]


def expected(tokens: int) -> str:
    return "".join(filler_token(i) for i in range(tokens))


@pytest.fixture
def client(serve: Any, kit: Any) -> Any:
    edge = serve(kit.emulator(kit.EDGE, time_scale=0.01))
    cloud = serve(kit.emulator(kit.CLOUD, time_scale=0.01))
    config = kit.gateway_config(
        [kit.backend("e", edge.url, kit.EDGE), kit.backend("c", cloud.url, kit.CLOUD)]
    )
    gateway = serve(create_app(config, make_policy("round-robin")))
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0) as c:
        yield c, gateway


def test_chat_not_streamed(client: Any) -> None:
    c, _ = client
    for _ in range(2):  # both backends (round-robin)
        raw = c.chat.completions.with_raw_response.create(
            model="m", messages=MESSAGES, max_tokens=7
        )
        answer = raw.parse()
        assert raw.headers["x-perllm-backend"] in {"e", "c"}
        assert "x-perllm-estimate-ms" not in raw.headers  # round-robin makes no estimate
        assert answer.choices[0].message.content == expected(7)
        assert answer.usage is not None and answer.usage.completion_tokens == 7


def test_chat_streamed(client: Any) -> None:
    c, gateway = client
    stream = c.chat.completions.create(
        model="m",
        messages=MESSAGES,
        max_tokens=9,
        stream=True,
        stream_options={"include_usage": True},
    )
    parts, usage = [], None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        parts.extend(choice.delta.content or "" for choice in chunk.choices)
    assert "".join(parts) == expected(9)
    assert usage is not None and usage.completion_tokens == 9
    stats = httpx.get(gateway.url + "/stats").json()
    assert stats["summary"]["completed"] == 1
    assert sum(b["tokens_in_flight"] for b in stats["backends"].values()) == 0


def test_completions_both_ways(client: Any) -> None:
    c, _ = client
    answer = c.completions.create(model="m", prompt="Once upon a time", max_tokens=4)
    assert answer.choices[0].text == expected(4)
    stream = c.completions.create(model="m", prompt="Once upon a time", max_tokens=5, stream=True)
    assert "".join(chunk.choices[0].text for chunk in stream if chunk.choices) == expected(5)


def test_models_and_errors(client: Any) -> None:
    c, _ = client
    assert [m.id for m in c.models.list()] == ["m"]
    with pytest.raises(openai.NotFoundError, match="not served"):
        c.chat.completions.create(model="nope", messages=MESSAGES)
    with pytest.raises(openai.BadRequestError, match="x-perllm-deadline-ms"):
        c.chat.completions.create(
            model="m", messages=MESSAGES, extra_headers={"x-perllm-deadline-ms": "-1"}
        )
