"""Bounded work, and abandoned means cancelled.

The backend here is :class:`Holder`: it takes each completion call and holds it (a stream after
its first chunk) until the gateway lets go of it, and it says so on semaphores. Tests block on
those and on the gateway's counters, with bounded waits; nothing waits on the clock for what an
event can signal.
"""

from __future__ import annotations

import json
import socket
import threading
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from waiting import wait_for

from perllm.domain import ClusterView, Decision, Feedback, RouterRequest
from perllm.gateway import create_app
from perllm.gateway.outcome import NO_BACKEND, Ending
from perllm.policies.registry import make_policy

HANG_S = 60.0  # a bound against a hang only
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
FIRST = b'data: {"choices": [{"index": 0, "delta": {"content": "x"}}]}\n\n'


class Holder:
    """An ASGI backend that holds every completion call until its caller lets go."""

    def __init__(self) -> None:
        self.arrived = threading.Semaphore(0)
        self.released = threading.Semaphore(0)
        self.headers: list[dict[str, str]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["path"] == "/health":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"{}"})
            return
        self.headers.append({k.decode(): v.decode() for k, v in scope["headers"]})
        if json.loads(body).get("stream"):
            headers = [(b"content-type", b"text/event-stream")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": FIRST, "more_body": True})
        self.arrived.release()
        while (await receive())["type"] != "http.disconnect":
            pass
        self.released.release()


class Learner:
    """Round-robin that counts what it is taught."""

    name = "learner"

    def __init__(self) -> None:
        self.inner = make_policy("round-robin")
        self.feedback: list[Feedback] = []
        self.forgotten: list[int] = []

    def select(self, request: RouterRequest, view: ClusterView) -> Decision:
        return self.inner.select(request, view)

    def observe(self, feedback: Feedback) -> None:
        self.feedback.append(feedback)

    def forget(self, request: RouterRequest, decision: Decision) -> None:
        self.forgotten.append(request.id)

    def state(self) -> dict[str, Any]:
        return {}

    def restore(self, state: dict[str, Any]) -> None:
        return None


def outcomes(url: str) -> dict[str, float]:
    text = httpx.get(url + "/metrics").text
    return {
        s.labels["outcome"]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "perllm_gateway_outcomes_total"
    }


def requests_counted(url: str) -> dict[tuple[str, str], float]:
    """The non-zero ``perllm_gateway_requests_total`` counters, by backend and status."""
    text = httpx.get(url + "/metrics").text
    return {
        (s.labels["backend"], s.labels["status"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "perllm_gateway_requests_total" and s.value
    }


def call_and_drop(port: int, body: dict[str, Any], holder: Holder) -> None:
    """Send a call on a raw socket, wait until the backend holds it (and, for a stream, until
    its first chunk arrived), then close the connection."""
    payload = json.dumps(body).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=HANG_S) as sock:
        head = (
            "POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\n"
            f"content-length: {len(payload)}\r\n\r\n"
        )
        sock.sendall(head.encode() + payload)
        assert holder.arrived.acquire(timeout=HANG_S)
        if body.get("stream"):
            received = b""
            while b"data:" not in received:
                chunk = sock.recv(65536)
                assert chunk, "the gateway closed the stream"
                received += chunk


@pytest.fixture
def held(serve: Any, kit: Any) -> tuple[Holder, Any, Learner, list[Ending]]:
    holder = Holder()
    backend = serve(holder)
    config = kit.gateway_config(
        [kit.backend("h", backend.url)],
        timeouts={"connect-s": 1, "read-s": 60, "request-s": 600, "drain-s": 5},
    )
    learner = Learner()
    app = create_app(config, learner, health_checks=False)  # type: ignore[arg-type]
    endings: list[Ending] = []  # appended in the gateway's thread, read once it has ended calls
    app.state.gateway.endings.append(endings.append)
    return holder, serve(app), learner, endings


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_goes_away_is_cancelled_upstream(
    held: tuple[Holder, Any, Learner, list[Ending]], stream: bool
) -> None:
    holder, gateway, learner, endings = held
    call_and_drop(gateway.port, {**CHAT, "stream": stream}, holder)
    assert holder.released.acquire(timeout=HANG_S)  # the upstream call was let go of
    wait_for(lambda: len(endings) == 1, "the call's ending", HANG_S)
    [ending] = endings
    assert (ending.outcome, ending.status) == ("abandoned", "client-gone")
    assert ending.feedback is None and ending.rejected is None  # nothing to record
    # A stream that had begun is counted as a request of its backend; a call that got no
    # answer is not counted as a request at all.
    assert (ending.backend, ending.responded) == (("h", True) if stream else (NO_BACKEND, False))
    assert requests_counted(gateway.url) == ({("h", "client-gone"): 1.0} if stream else {})
    stats = httpx.get(gateway.url + "/stats").json()
    assert stats["in_flight"] == 0
    assert stats["backends"]["h"]["running"] == 0
    assert stats["backends"]["h"]["failures"] == 0  # not the backend's fault
    assert learner.feedback == []  # nothing learned from it
    assert len(learner.forgotten) == 1  # and what the policy kept for it is dropped
    assert len(holder.headers) == 1  # never retried elsewhere
    assert outcomes(gateway.url) == {
        "answered": 0.0,
        "error": 0.0,
        "stream-error": 0.0,
        "abandoned": 1.0,
    }


def test_time_limit_cancels_upstream_and_answers_504(serve: Any, kit: Any) -> None:
    holder = Holder()
    backend = serve(holder)
    config = kit.gateway_config(
        [kit.backend("h", backend.url)],
        timeouts={"connect-s": 1, "read-s": 60, "request-s": 0.2, "drain-s": 5},
    )
    gateway = serve(create_app(config, make_policy("round-robin"), health_checks=False))
    with httpx.Client(base_url=gateway.url, timeout=HANG_S) as client:
        plain = client.post("/v1/chat/completions", json=CHAT)
        assert plain.status_code == 504
        assert plain.json()["error"]["code"] == "timeout"
        assert "time limit" in plain.json()["error"]["message"]
        assert holder.released.acquire(timeout=HANG_S)
        streamed = client.post("/v1/chat/completions", json={**CHAT, "stream": True})
        assert streamed.status_code == 200
        events = [e for e in streamed.text.split("\n\n") if e]
        assert events[0] == FIRST.decode().strip()
        error = json.loads(events[1].removeprefix("data: "))["error"]
        assert error["code"] == "timeout" and "time limit" in error["message"]
        assert events[2] == "data: [DONE]"
        assert holder.released.acquire(timeout=HANG_S)
    assert outcomes(gateway.url) == {
        "answered": 0.0,
        "error": 1.0,
        "stream-error": 1.0,
        "abandoned": 0.0,
    }


def test_max_tokens_is_capped_per_backend(serve: Any, kit: Any) -> None:
    small = serve(kit.emulator(kit.EDGE, time_scale=0))
    large = serve(kit.emulator(kit.EDGE, time_scale=0))
    config = kit.gateway_config(
        [
            kit.backend("small", small.url, **{"max-tokens": 100}),
            kit.backend("large", large.url),  # llama-2-7b: its 4096-token context
        ]
    )
    gateway = serve(create_app(config, make_policy("round-robin"), health_checks=False))
    with httpx.Client(base_url=gateway.url, timeout=HANG_S) as client:
        for _ in range(3):  # round-robin would alternate: only "large" may take these
            answer = client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 150})
            assert answer.status_code == 200
            assert answer.headers["x-perllm-backend"] == "large"
        refused = client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 5000})
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["code"] == "max_tokens_too_large"
    assert "'max_tokens' of 5000" in error["message"] and "(4096)" in error["message"]


def test_request_ids_are_echoed_passed_upstream_and_validated(
    held: tuple[Holder, Any, Learner, list[Ending]],
) -> None:
    holder, gateway, _, _ = held
    with httpx.Client(base_url=gateway.url, timeout=HANG_S) as client:
        bad = client.post(
            "/v1/chat/completions", json=CHAT, headers={"x-request-id": "no spaces allowed"}
        )
        assert bad.status_code == 400
        assert "x-request-id" in bad.json()["error"]["message"]
        generated = bad.headers["x-request-id"]
        assert len(generated) == 32 and generated.isalnum()
        too_long = client.post(
            "/v1/chat/completions", json=CHAT, headers={"x-request-id": "a" * 129}
        )
        assert too_long.status_code == 400
    # A valid one goes upstream and comes back (the held call is then let go).
    payload = json.dumps({**CHAT, "stream": True}).encode()
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=HANG_S) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\n"
            b"x-request-id: trace-42.a:b\r\n"
            + f"content-length: {len(payload)}\r\n\r\n".encode()
            + payload
        )
        assert holder.arrived.acquire(timeout=HANG_S)
        received = b""
        while b"data:" not in received:
            received += sock.recv(65536)
    assert holder.headers[-1]["x-request-id"] == "trace-42.a:b"
    assert b"x-request-id: trace-42.a:b" in received


def test_a_body_over_the_limit_is_refused_on_every_route(serve: Any, kit: Any) -> None:
    small = serve(kit.emulator(kit.EDGE, time_scale=0))
    config = kit.gateway_config([kit.backend("small", small.url)], limits={"max-body-bytes": 2000})
    gateway = serve(create_app(config, make_policy("round-robin"), health_checks=False))
    for method, path in [("GET", "/health"), ("GET", "/metrics"), ("POST", "/admin/state")]:
        response = httpx.request(method, gateway.url + path, content=b"x" * 3000)
        assert response.status_code == 413, path
        assert "exceeds 2000 bytes" in response.json()["error"]["message"]
