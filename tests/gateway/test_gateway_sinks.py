"""Every ended attempt is one Feedback, handed once to each attempt sink; each call's outcome
is handed once to each outcome sink (the recorder among them), whatever the path: answered,
answered with an error, retried elsewhere, or failed everywhere.

Fast unit tests through ``httpx.ASGITransport``; the backends are an ``httpx.MockTransport``.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from perllm.domain import ClusterView, Decision, Feedback, RouterRequest
from perllm.gateway import create_app
from perllm.policies.registry import make_policy

pytestmark = pytest.mark.anyio

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hello there"}]}


class Spy:
    """A feedback sink that keeps what it is handed."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, Feedback]] = []

    def on_feedback(self, now: float, feedback: Feedback) -> None:
        self.seen.append((now, feedback))

    @property
    def feedback(self) -> list[Feedback]:
        return [f for _, f in self.seen]


class LearningSpy:
    """Round-robin that keeps the feedback it learns from."""

    name = "learning-spy"

    def __init__(self) -> None:
        self.inner = make_policy("round-robin")
        self.feedback: list[Feedback] = []

    def select(self, request: RouterRequest, view: ClusterView) -> Decision:
        return self.inner.select(request, view)

    def observe(self, feedback: Feedback) -> None:
        self.feedback.append(feedback)

    def forget(self, request: RouterRequest, decision: Decision) -> None:
        self.inner.forget(request, decision)

    def state(self) -> dict[str, Any]:
        return {}

    def restore(self, state: dict[str, Any]) -> None:
        return None


def _handler(request: httpx.Request) -> httpx.Response:
    if request.url.host == "bad":
        raise httpx.ConnectError("connection refused", request=request)
    if request.url.host == "picky":
        return httpx.Response(400, json={"error": {"message": "no", "type": "x", "code": "x"}})
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


def _ids(feedback: list[Feedback]) -> list[int]:
    return [f.request.id for f in feedback]


async def test_each_sink_sees_each_attempt_and_each_outcome_once(kit: Any) -> None:
    config = kit.gateway_config(
        [
            kit.backend("e", "http://edge:1", kit.EDGE),
            kit.backend("p", "http://picky:1", kit.EDGE),
            kit.backend("b", "http://bad:1", kit.CLOUD),
        ],
        health={"failure-threshold": 1000},
    )
    policy = LearningSpy()
    attempts, outcomes = Spy(), Spy()
    calls = 9
    async with httpx.AsyncClient(transport=httpx.MockTransport(_handler)) as upstream:
        app = create_app(config, policy, upstream, health_checks=False)
        dispatcher = app.state.gateway.dispatcher
        dispatcher.attempt_sinks.add(attempts)
        dispatcher.outcome_sinks.add(outcomes)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            statuses = [
                (await client.post("/v1/chat/completions", json=CHAT)).status_code
                for _ in range(calls)
            ]
            stats = (await client.get("/stats")).json()
    assert sorted(set(statuses)) == [200, 400]
    # Each attempt once, to every attempt sink, in the same order: the policy learns from it.
    assert attempts.feedback == policy.feedback
    assert all(a is b for a, b in zip(attempts.feedback, policy.feedback, strict=True))
    assert len(set(map(id, attempts.feedback))) == len(attempts.feedback)
    retried = [f for f in attempts.feedback if f.decision.server == 2]
    assert retried and all(f.failed for f in retried)  # "b" refuses: every call there retried
    assert len(attempts.feedback) == calls + len(retried)
    # Each call's outcome once: the attempt a backend answered.
    assert sorted(_ids(outcomes.feedback)) == list(range(1, calls + 1))
    assert all(f.decision.server != 2 for f in outcomes.feedback)
    assert set(map(id, outcomes.feedback)) <= set(map(id, attempts.feedback))
    assert dispatcher.recorder.columns["id"] == _ids(outcomes.feedback)
    assert [now for now, _ in outcomes.seen] == dispatcher.recorder.columns["finish_s"]
    # The per-backend counts of /stats come from the same feedback.
    backends = stats["backends"]
    for server, name in enumerate(("e", "p", "b")):
        mine = [f for f in outcomes.feedback if f.decision.server == server]
        failed = [f for f in attempts.feedback if f.decision.server == server and f.failed]
        assert backends[name]["answered"] == len(mine), name
        assert backends[name]["failures"] == len(failed), name
    assert backends["p"]["failures"] == backends["p"]["answered"] > 0  # answered, with a 400
    assert backends["b"]["answered"] == 0
    assert stats["summary"]["requests"] == calls


async def test_a_call_every_backend_failed_is_one_outcome(kit: Any) -> None:
    config = kit.gateway_config([kit.backend("b", "http://bad:1", kit.EDGE)])
    policy = LearningSpy()
    attempts, outcomes = Spy(), Spy()
    async with httpx.AsyncClient(transport=httpx.MockTransport(_handler)) as upstream:
        app = create_app(config, policy, upstream, health_checks=False)
        dispatcher = app.state.gateway.dispatcher
        dispatcher.attempt_sinks.add(attempts)
        dispatcher.outcome_sinks.add(outcomes)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 502
            # The circuit is open now: no backend, a rejection (no feedback for any sink).
            assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 503
            stats = (await client.get("/stats")).json()
    assert len(attempts.feedback) == 1 and attempts.feedback == policy.feedback
    assert outcomes.feedback == attempts.feedback and outcomes.feedback[0].failed
    assert dispatcher.recorder.columns["id"] == [1, 2]
    assert dispatcher.recorder.columns["rejected"] == [False, True]
    assert stats["backends"]["b"] == stats["backends"]["b"] | {"answered": 0, "failures": 1}
