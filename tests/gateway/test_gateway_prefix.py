"""The gateway's router-side prefix record: prompts hashed in blocks (no text kept), the blocks
recorded per backend as calls are sent, and the policy's view of them."""

from __future__ import annotations

import json
from typing import Any

import httpx
import yaml

from perllm.domain import RouterRequest
from perllm.gateway import create_app
from perllm.gateway.config import parse_config
from perllm.gateway.feedback import tokens_from_body, tokens_from_sse
from perllm.gateway.health import CircuitBreaker
from perllm.gateway.intake import Call, parse_call
from perllm.gateway.view import LiveView
from perllm.physics import CHARS_PER_TOKEN
from perllm.policies.registry import make_policy
from perllm.prefix import BLOCK_TOKENS

BACKENDS = """
backends:
  - {name: a, url: "http://127.0.0.1:8001/v1", tier: cloud, models: [m], hardware: a100-80gb,
     model: llama-3.1-8b, dtype: fp16, link: {bandwidth-mbps: 100, rtt-ms: 10, tx-power-w: 2}}
  - {name: b, url: "http://127.0.0.1:8002/v1", tier: cloud, models: [m], hardware: a100-80gb,
     model: llama-3.1-8b, dtype: fp16, link: {bandwidth-mbps: 100, rtt-ms: 10, tx-power-w: 2}}
"""
CONFIG = parse_config(yaml.safe_load(BACKENDS), "gw.yaml")
LONG = "w" * int(3 * BLOCK_TOKENS * CHARS_PER_TOKEN)


def _call(*turns: str, system: str = LONG) -> Call:
    messages = [{"role": "system", "content": system}]
    messages += [{"role": "user", "content": turn} for turn in turns]
    raw = json.dumps({"model": "m", "messages": messages}).encode()
    return parse_call("chat", raw, {}, CONFIG, {"m"})


def _request(call: Call) -> RouterRequest:
    return RouterRequest(
        0,
        0.0,
        call.service_class,
        call.prompt_tokens,
        len(call.raw),
        call.deadline_s,
        prefix_blocks=call.prefix_blocks,
    )


def test_a_conversation_that_grows_keeps_its_leading_blocks() -> None:
    first = _call("q" * 5000)
    second = _call("q" * 5000, "next question")
    other = _call("q" * 5000, system="another system prompt " * 400)
    assert len(first.prefix_blocks) >= 3
    assert second.prefix_blocks[: len(first.prefix_blocks)] == first.prefix_blocks
    assert other.prefix_blocks[0] != first.prefix_blocks[0]
    assert all(isinstance(block, int) for block in first.prefix_blocks)  # hashes, not text


def test_the_view_counts_what_was_sent_to_each_backend() -> None:
    view = LiveView(CONFIG, [CircuitBreaker(3, 10.0), CircuitBreaker(3, 10.0)])
    first = _call("q" * 5000)
    assert not view.prefix_tokens(_request(first)).any()
    view.begin(1, _request(first))
    tokens = view.prefix_tokens(_request(_call("q" * 5000, "and then?")))
    assert tokens.tolist() == [0.0, len(first.prefix_blocks) * BLOCK_TOKENS]


def test_the_cached_prompt_tokens_a_backend_reports_reach_the_feedback() -> None:
    usage = {"completion_tokens": 7, "prompt_tokens_details": {"cached_tokens": 1536}}
    body = json.dumps({"choices": [{"message": {"content": "hi"}}], "usage": usage}).encode()
    assert tokens_from_body(body) == (7, 1536)
    event = b"data: " + json.dumps({"choices": [], "usage": usage}).encode() + b"\n\n"
    assert tokens_from_sse(event + b"data: [DONE]\n\n", 9) == (7, 1536)
    plain = json.dumps({"choices": [{"message": {"content": "12345678"}}]}).encode()
    assert tokens_from_body(plain) == (2, 0)


def test_a_conversation_s_next_turn_follows_its_prefix_through_the_gateway(
    serve: Any, kit: Any
) -> None:
    # Two emulated edges behind a gateway routing by prefix. Conversation B first goes to the
    # second edge (its model is served there only); its next turn, for a model both serve,
    # follows its prefix there, where least-loaded alone sends it to the first (idle) edge.
    edges = [serve(kit.emulator(kit.EDGE, time_scale=0.05)) for _ in range(2)]
    model = kit.EDGE.split(":")[1]
    backends = [
        kit.backend("edge-0", edges[0].url),
        kit.backend("edge-1", edges[1].url, models={"m": model, "only-1": model}),
    ]

    def body(model: str, *turns: str) -> dict[str, Any]:
        messages = [{"role": "system", "content": LONG}]
        messages += [{"role": "user", "content": turn} for turn in turns]
        return {"model": model, "max_tokens": 8, "messages": messages}

    def routes(policy: str) -> list[tuple[str, int]]:
        """Where each call went, and the prompt tokens its backend found in its prefix cache."""
        config = kit.gateway_config(backends, policy={"type": policy})
        gateway = serve(create_app(config, make_policy(policy)))
        with httpx.Client(base_url=gateway.url, timeout=30) as client:
            calls = [body("only-1", "hi"), body("m", "hi", "and then?")]
            answers = [client.post("/v1/chat/completions", json=call) for call in calls]
        return [
            (
                answer.headers["x-perllm-backend"],
                answer.json()["usage"]["prompt_tokens_details"]["cached_tokens"],
            )
            for answer in answers
        ]

    # The emulated edges keep prefix caches: the next turn skips its system prompt's prefill
    # where it follows its prefix (edge-1 has held the system prompt since the first run).
    assert routes("prefix-affinity") == [("edge-1", 0), ("edge-1", 3 * BLOCK_TOKENS)]
    assert routes("least-loaded") == [("edge-1", 3 * BLOCK_TOKENS), ("edge-0", 0)]
