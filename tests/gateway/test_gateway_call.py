"""One call, one ending: every completion call ends exactly once, in its
:class:`~perllm.gateway.call.CallContext`, and the metrics, the access log and the recorder
count it from that one ending, whatever the path: answered, a backend's error, failed over,
failed everywhere, refused, a bad call, a stream to its end or cut mid-way, a body refused by
its size.

Fast unit tests through ``httpx.ASGITransport``; the backends are an ``httpx.MockTransport``.
A client going away (before its answer, or mid-stream) is in ``test_gateway_bounds.py``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from perllm.domain import ClusterView, Decision, Feedback, RouterRequest
from perllm.gateway import create_app
from perllm.gateway.call import CallContext
from perllm.gateway.outcome import NO_BACKEND, Ending

pytestmark = pytest.mark.anyio

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hello there"}]}
ANSWER = {
    "id": "x",
    "object": "chat.completion",
    "model": "m",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 3, "completion_tokens": 7, "total_tokens": 10},
}
EVENT = b'data: {"choices": [{"index": 0, "delta": {"content": "x"}}]}\n\n'


class Pick:
    """The backend ``server_of(request)``, the first by default (the gateway falls back to
    another once it has failed for the call)."""

    name = "pick"

    def __init__(self, server_of: Callable[[RouterRequest], int] = lambda _: 0) -> None:
        self.server_of = server_of

    def select(self, request: RouterRequest, view: ClusterView) -> Decision:
        return Decision(server=self.server_of(request))

    def observe(self, feedback: Feedback) -> None:
        return None

    def forget(self, request: RouterRequest, decision: Decision) -> None:
        return None

    def state(self) -> dict[str, Any]:
        return {}

    def restore(self, state: dict[str, Any]) -> None:
        return None


class _Stream(httpx.AsyncByteStream):
    """An SSE stream of one event: then ``[DONE]``, or a broken connection (``breaks``)."""

    def __init__(self, *, breaks: bool) -> None:
        self.breaks = breaks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield EVENT
        if self.breaks:
            raise httpx.RemoteProtocolError("peer closed connection without sending complete body")
        yield b"data: [DONE]\n\n"


def _handler(request: httpx.Request) -> httpx.Response:
    """A backend that behaves as its host's name says (a digit after it tells two apart)."""
    host = request.url.host.rstrip("0123456789")
    if host == "bad":
        raise httpx.ConnectError("connection refused", request=request)
    if host == "picky":
        return httpx.Response(400, json={"error": {"message": "no", "type": "x", "code": "x"}})
    sse = {"content-type": "text/event-stream"}
    if json.loads(request.content).get("stream"):
        return httpx.Response(200, headers=sse, stream=_Stream(breaks=host == "broken"))
    return httpx.Response(200, json=ANSWER)


class Run:
    """One gateway in process, the endings of its calls, and its counters."""

    def __init__(self, app: Any, client: httpx.AsyncClient) -> None:
        self.app = app
        self.client = client
        self.endings: list[Ending] = []
        app.state.gateway.endings.append(self.endings.append)

    async def post(self, body: dict[str, Any] | None = None, **kwargs: Any) -> httpx.Response:
        if body is None and "content" not in kwargs:
            body = CHAT
        return await self.client.post("/v1/chat/completions", json=body, **kwargs)

    async def counters(self) -> dict[str, dict[tuple[str, ...], float]]:
        text = (await self.client.get("/metrics")).text
        counts: dict[str, dict[tuple[str, ...], float]] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name in ("perllm_gateway_requests_total", "perllm_gateway_outcomes_total"):
                    counts.setdefault(s.name, {})[tuple(s.labels.values())] = s.value
        return counts


async def _run(
    kit: Any, hosts: list[str], policy: Pick | None = None, threshold: int = 1000, **extra: Any
) -> Any:
    backends = [kit.backend(host, f"http://{host}:1", kit.EDGE) for host in hosts]
    config = kit.gateway_config(backends, health={"failure-threshold": threshold}, **extra)
    upstream = httpx.AsyncClient(transport=httpx.MockTransport(_handler))
    app = create_app(config, policy or Pick(), upstream, health_checks=False)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw")
    return Run(app, client), upstream


def _requests(counts: dict[str, dict[tuple[str, ...], float]]) -> dict[tuple[str, ...], float]:
    return {k: v for k, v in counts.get("perllm_gateway_requests_total", {}).items() if v}


def _outcomes(counts: dict[str, dict[tuple[str, ...], float]]) -> dict[str, float]:
    return {k[0]: v for k, v in counts["perllm_gateway_outcomes_total"].items() if v}


def test_a_call_ends_once_into_its_sinks_in_order() -> None:
    seen: list[tuple[str, Ending]] = []
    ctx = CallContext(1.0, [lambda e: seen.append(("a", e)), lambda e: seen.append(("b", e))])
    assert ctx.end("error", 400, "bad") is True
    assert ctx.end("answered", 200, "late") is False  # a second ending changes nothing
    assert [name for name, _ in seen] == ["a", "b"]
    assert seen[0][1] is seen[1][1] is ctx.ending
    ending = seen[0][1]
    assert (ending.outcome, ending.status, ending.detail) == ("error", 400, "bad")
    assert ending.request_id == ctx.request_id
    assert ending.backend == NO_BACKEND and ending.responded
    assert ending.feedback is None and ending.rejected is None


async def test_a_plain_answer_ends_once_with_its_backend(kit: Any) -> None:
    run, upstream = await _run(kit, ["ok"])
    async with upstream, run.client:
        answer = await run.post()
        counts = await run.counters()
        stats = (await run.client.get("/stats")).json()
    assert answer.status_code == 200
    [ending] = run.endings
    assert (ending.outcome, ending.status, ending.backend) == ("answered", 200, "ok")
    assert ending.request_id == answer.headers["x-request-id"]
    assert ending.feedback is not None and not ending.feedback.failed
    assert _requests(counts) == {("ok", "200"): 1.0}
    assert _outcomes(counts) == {"answered": 1.0}
    assert stats["backends"]["ok"]["answered"] == 1
    assert stats["summary"]["requests"] == 1


async def test_a_backends_error_ends_once_as_an_error_of_that_backend(kit: Any) -> None:
    run, upstream = await _run(kit, ["picky"])
    async with upstream, run.client:
        answer = await run.post()
        counts = await run.counters()
    assert answer.status_code == 400
    [ending] = run.endings
    assert (ending.outcome, ending.status, ending.backend) == ("error", 400, "picky")
    assert ending.feedback is not None and ending.feedback.failed
    assert _requests(counts) == {("picky", "400"): 1.0}
    assert _outcomes(counts) == {"error": 1.0}


async def test_a_failed_over_call_ends_once_with_the_backend_that_answered(kit: Any) -> None:
    run, upstream = await _run(kit, ["bad", "ok"])
    async with upstream, run.client:
        answer = await run.post()
        counts = await run.counters()
        stats = (await run.client.get("/stats")).json()
    assert answer.status_code == 200 and answer.headers["x-perllm-backend"] == "ok"
    [ending] = run.endings
    assert (ending.outcome, ending.status, ending.backend) == ("answered", 200, "ok")
    assert ending.feedback is not None and ending.feedback.decision.server == 1
    assert _requests(counts) == {("ok", "200"): 1.0}  # the failed attempt is no request
    assert _outcomes(counts) == {"answered": 1.0}
    assert stats["backends"]["bad"] == stats["backends"]["bad"] | {"answered": 0, "failures": 1}
    assert stats["backends"]["ok"]["answered"] == 1
    assert stats["summary"]["requests"] == 1


async def test_a_call_every_backend_failed_ends_once_with_the_last_attempt(kit: Any) -> None:
    run, upstream = await _run(kit, ["bad1", "bad2"])
    async with upstream, run.client:
        answer = await run.post()
        counts = await run.counters()
        stats = (await run.client.get("/stats")).json()
    assert answer.status_code == 502
    [ending] = run.endings
    assert (ending.outcome, ending.status, ending.backend) == ("error", 502, NO_BACKEND)
    assert ending.feedback is not None and ending.feedback.failed  # recorded, as failed
    assert ending.feedback.decision.server == 1
    assert _requests(counts) == {(NO_BACKEND, "502"): 1.0}
    assert _outcomes(counts) == {"error": 1.0}
    assert all(b["answered"] == 0 for b in stats["backends"].values())
    assert stats["summary"]["requests"] == 1


async def test_a_refused_call_ends_once_as_rejected(kit: Any) -> None:
    run, upstream = await _run(kit, ["bad"], threshold=1)
    async with upstream, run.client:
        assert (await run.post()).status_code == 502  # opens the only backend's circuit
        answer = await run.post()
        counts = await run.counters()
    assert answer.status_code == 503
    first, second = run.endings
    assert first.rejected is None and first.feedback is not None
    assert (second.outcome, second.status, second.backend) == ("error", 503, NO_BACKEND)
    assert second.feedback is None
    assert second.rejected is not None and second.rejected.id == 2
    assert _requests(counts) == {(NO_BACKEND, "502"): 1.0, (NO_BACKEND, "503"): 1.0}
    assert run.app.state.gateway.dispatcher.recorder.columns["rejected"] == [False, True]


async def test_a_bad_call_and_a_refused_body_end_once_without_a_backend(kit: Any) -> None:
    run, upstream = await _run(kit, ["ok"], limits={"max-body-bytes": 1000})
    async with upstream, run.client:
        bad = await run.post(content=b"{")
        large = await run.post(content=b"x" * 2000)
        counts = await run.counters()
    assert (bad.status_code, large.status_code) == (400, 413)
    assert [(e.outcome, e.status, e.backend) for e in run.endings] == [
        ("error", 400, NO_BACKEND),
        ("error", 413, NO_BACKEND),
    ]
    assert all(e.feedback is None and e.rejected is None for e in run.endings)
    assert _requests(counts) == {(NO_BACKEND, "400"): 1.0, (NO_BACKEND, "413"): 1.0}
    assert _outcomes(counts) == {"error": 2.0}
    assert run.app.state.gateway.dispatcher.recorder.columns["id"] == []


async def test_a_stream_ends_once_at_its_end_or_where_it_was_cut(kit: Any) -> None:
    run, upstream = await _run(kit, ["ok", "broken"], Pick(lambda request: request.id - 1))
    async with upstream, run.client:
        whole = await run.post({**CHAT, "stream": True})
        cut = await run.post({**CHAT, "stream": True})
        counts = await run.counters()
        stats = (await run.client.get("/stats")).json()
    assert whole.text.endswith("data: [DONE]\n\n") and "failed mid-stream" not in whole.text
    assert "backend broken failed mid-stream" in cut.text
    assert [(e.outcome, e.status, e.backend) for e in run.endings] == [
        ("answered", 200, "ok"),
        ("stream-error", "error", "broken"),
    ]
    assert [e.request_id for e in run.endings] == [
        whole.headers["x-request-id"],
        cut.headers["x-request-id"],
    ]
    feedback = [e.feedback for e in run.endings]
    assert [f is not None and f.failed for f in feedback] == [False, True]
    assert _requests(counts) == {("ok", "200"): 1.0, ("broken", "error"): 1.0}
    assert _outcomes(counts) == {"answered": 1.0, "stream-error": 1.0}
    assert stats["backends"]["broken"] == stats["backends"]["broken"] | {
        "answered": 1,
        "failures": 1,
    }
    assert stats["summary"]["requests"] == 2
    assert stats["in_flight"] == 0


async def test_each_ending_is_one_access_log_line(
    kit: Any, caplog: pytest.LogCaptureFixture
) -> None:
    run, upstream = await _run(kit, ["bad", "ok"])
    caplog.set_level(logging.INFO, logger="perllm.gateway.outcome")
    async with upstream, run.client:
        answers = [await run.post({**CHAT, "stream": bool(i % 2)}) for i in range(4)]
        answers.append(await run.post(content=b"{"))
    lines = [r.getMessage() for r in caplog.records if r.name == "perllm.gateway.outcome"]
    assert len(lines) == len(answers) == len(run.endings)
    for answer, line in zip(answers, lines, strict=True):
        assert line.startswith(f"request {answer.headers['x-request-id']} ")
    assert sum("answered (200)" in line and "backend ok" in line for line in lines) == 4
