"""Scraping the backends' ``/metrics``: parsing per engine, and a live gateway that counts the
load others put on a backend, moves its choice away from it, and keeps serving when scrapes
fail (real servers on loopback)."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from waiting import wait_for

from perllm.gateway import create_app
from perllm.gateway.config import BackendConfig
from perllm.gateway.scrape import ENGINE_METRICS, metric_names, parse_load
from perllm.gateway.shared_scrape import SharedScrapes
from perllm.gateway.view import build_specs
from perllm.policies.registry import make_policy

VLLM = """# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 3.0
vllm:num_requests_running{engine="1",model_name="m"} 2.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="m"} 4.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25
"""


def test_vllm_metrics_are_summed_over_their_labels() -> None:
    load = parse_load(VLLM, ENGINE_METRICS["vllm"])
    assert (load.queued, load.running, load.kv_cache) == (4.0, 5.0, 0.25)
    older = VLLM.replace("kv_cache_usage_perc", "gpu_cache_usage_perc")
    assert parse_load(older, ENGINE_METRICS["vllm"]).kv_cache == 0.25


def test_sglang_llamacpp_and_custom_names() -> None:
    sglang = "sglang:num_queue_reqs 2\nsglang:num_running_reqs 7\nsglang:token_usage 0.5\n"
    load = parse_load(sglang, ENGINE_METRICS["sglang"])
    assert (load.queued, load.running, load.kv_cache) == (2.0, 7.0, 0.5)
    llama = "llamacpp:requests_deferred 1\nllamacpp:requests_processing 1\n"
    assert parse_load(llama, ENGINE_METRICS["llamacpp"]).kv_cache is None
    backend = _backend("c", "http://127.0.0.1:9", "custom", {"queued": "q", "running": "r"})
    assert parse_load("q 1\nr 2\n", metric_names(backend)).running == 2.0


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("not prometheus {{{", "no queued metric"),
        ("vllm:num_requests_waiting{{{ 1\nvllm:num_requests_running 1\n", ""),
        ("vllm:num_requests_running 1\n", "no queued metric"),
        ("vllm:num_requests_waiting 1\nvllm:num_requests_running NaN\n", "is nan"),
        ("vllm:num_requests_waiting -1\nvllm:num_requests_running 1\n", "is -1"),
    ],
)
def test_garbage_or_missing_metrics_are_a_value_error(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem or None):
        parse_load(text, ENGINE_METRICS["vllm"])


def test_decoding_counters_per_engine() -> None:
    vllm = VLLM + (
        'vllm:inter_token_latency_seconds_sum{engine="0"} 3.0\n'
        'vllm:inter_token_latency_seconds_sum{engine="1"} 1.0\n'
        'vllm:inter_token_latency_seconds_count{engine="0"} 100\n'
        'vllm:inter_token_latency_seconds_count{engine="1"} 60\n'
    )
    assert parse_load(vllm, ENGINE_METRICS["vllm"]).decoding == (4.0, 160.0)
    older = vllm.replace("inter_token_latency", "time_per_output_token")
    assert parse_load(older, ENGINE_METRICS["vllm"]).decoding == (4.0, 160.0)
    assert parse_load(VLLM, ENGINE_METRICS["vllm"]).decoding is None  # not reported
    llama = (
        "llamacpp:requests_deferred 0\nllamacpp:requests_processing 1\n"
        "llamacpp:tokens_predicted_seconds_total 8.4\nllamacpp:tokens_predicted_total 789\n"
    )
    assert parse_load(llama, ENGINE_METRICS["llamacpp"]).decoding == (8.4, 789.0)
    sglang = (
        "sglang:num_queue_reqs 0\nsglang:num_running_reqs 1\n"
        "sglang:inter_token_latency_seconds_sum 2\nsglang:inter_token_latency_seconds_count 50\n"
    )
    assert parse_load(sglang, ENGINE_METRICS["sglang"]).decoding == (2.0, 50.0)
    with pytest.raises(ValueError, match="is -1"):
        parse_load(llama.replace("8.4", "-1"), ENGINE_METRICS["llamacpp"])


def test_a_custom_engine_names_both_decoding_counters_or_neither() -> None:
    names = {"queued": "q", "running": "r", "decode-seconds": "ds"}
    with pytest.raises(ValueError, match="decode-seconds and decode-tokens go together"):
        _backend("c", "http://127.0.0.1:9", "custom", names)
    backend = _backend("c", "http://127.0.0.1:9", "custom", {**names, "decode-tokens": "dt"})
    assert parse_load("q 0\nr 1\nds 2\ndt 4\n", metric_names(backend)).decoding == (2.0, 4.0)


def test_a_replica_of_a_version_without_the_slowdown_is_still_read() -> None:
    class Store:
        async def mget(self, keys: list[str]) -> list[str | None]:
            return ["[2, 100.0, 0.5]", "[1, 50.0, null, 3.0]", "not json", None][: len(keys)]

    shared = SharedScrapes(Store(), "p", "me", 1.0, 5.0)  # type: ignore[arg-type]
    found = asyncio.run(shared.fetch(["a", "b", "c", "d"]))
    assert found == [(2.0, 100.0, 0.5, 1.0), (1.0, 50.0, None, 3.0), None, None]


def test_a_custom_engine_needs_its_names() -> None:
    with pytest.raises(ValueError, match="engine: custom needs metrics"):
        _backend("c", "http://127.0.0.1:9", "custom")
    with pytest.raises(ValueError, match="for engine: custom only"):
        _backend("c", "http://127.0.0.1:9", "vllm", {"queued": "q", "running": "r"})


def _backend(name: str, url: str, engine: str, metrics: Any = None) -> BackendConfig:
    entry: dict[str, Any] = {
        "name": name,
        "url": url,
        "tier": "edge",
        "models": ["m"],
        "hardware": "rtx-3090",
        "model": "llama-2-7b",
        "dtype": "q4",
        "engine": engine,
    }
    if metrics is not None:
        entry["metrics"] = metrics
    return BackendConfig.model_validate(entry)


class FakeEngine:
    """A backend that answers chat calls at once and reports, at ``/metrics``, the requests
    others have on it (``others``) plus the gateway's calls it is serving (none: they are
    instant), or garbage / a 500 while ``broken``."""

    def __init__(self) -> None:
        self.others = 0
        self.broken: str | None = None
        self.calls = 0
        self.decoded = (0.0, 0.0)  # its decoding counters: seconds between tokens, tokens

    def app(self) -> Starlette:
        async def chat(request: Request) -> Response:
            self.calls += 1
            body = await request.json()
            return JSONResponse(
                {
                    "id": "x",
                    "object": "chat.completion",
                    "model": body["model"],
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "ok"},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                }
            )

        async def metrics(request: Request) -> Response:
            if self.broken == "500":
                return PlainTextResponse("down", status_code=500)
            if self.broken == "garbage":
                return PlainTextResponse("<html>not metrics</html>{{")
            text = f"q {max(self.others - 4, 0)}\nr {min(self.others, 4)}\nkv 0.5\n"
            seconds, tokens = self.decoded
            return PlainTextResponse(text + f"ds {seconds}\ndt {tokens}\n")

        async def health(request: Request) -> Response:
            return JSONResponse({"status": "ok"})

        return Starlette(
            routes=[
                Route("/v1/chat/completions", chat, methods=["POST"]),
                Route("/metrics", metrics),
                Route("/health", health),
            ]
        )


BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
NAMES = {"queued": "q", "running": "r", "kv-cache": "kv"}


def _stats(url: str, backend: str) -> dict[str, Any]:
    answer: dict[str, Any] = httpx.get(url + "/stats").json()["backends"][backend]
    return answer


def test_others_load_is_counted_and_steers_the_choice_away(serve: Any, kit: Any) -> None:
    busy, free = FakeEngine(), FakeEngine()
    busy_server, free_server = serve(busy.app()), serve(free.app())
    config = kit.gateway_config(
        [
            kit.backend(
                "busy", busy_server.url, engine="custom", metrics=NAMES, **{"max-concurrency": 4}
            ),
            kit.backend("free", free_server.url, engine="custom", metrics=NAMES),
        ],
        policy={"type": "least-loaded"},
        scrape={"interval-s": 0.05, "stale-s": 0.5},
    )
    gateway = serve(create_app(config, make_policy("least-loaded"), health_checks=False))
    busy.others = 6  # 4 running, 2 queued, sent by someone the gateway does not see
    wait_for(lambda: _stats(gateway.url, "busy")["others_in_flight"] == 6, "6 others on busy")
    seen = _stats(gateway.url, "busy")
    assert (seen["running"], seen["queued"]) == (4, 2)
    # Half the KV cache of LLaMA-2-7B on an RTX 3090 is held, none of it by this gateway.
    assert seen["tokens_in_flight"] > 0 and seen["kv_cache_use"] == 0.5
    for _ in range(5):
        assert httpx.post(gateway.url + "/v1/chat/completions", json=BODY).status_code == 200
    assert (busy.calls, free.calls) == (0, 5)
    health = httpx.get(gateway.url + "/health").json()
    assert health["scrape"]["busy"]["error"] is None
    assert health["scrape"]["busy"]["engine"] == "custom"


@pytest.mark.parametrize("failure", ["500", "garbage"])
def test_failing_scrapes_show_in_health_go_stale_and_never_fail_a_call(
    serve: Any, kit: Any, caplog: pytest.LogCaptureFixture, failure: str
) -> None:
    engine = FakeEngine()
    backend = serve(engine.app())
    config = kit.gateway_config(
        [kit.backend("b", backend.url, engine="custom", metrics=NAMES)],
        scrape={"interval-s": 0.05, "stale-s": 0.2},
    )
    gateway = serve(create_app(config, make_policy("round-robin"), health_checks=False))
    engine.others = 3
    wait_for(lambda: _stats(gateway.url, "b")["others_in_flight"] == 3, "3 others seen")
    engine.broken = failure

    def problem() -> Any:
        return httpx.get(gateway.url + "/health").json()["scrape"]["b"]["error"]

    wait_for(lambda: problem() is not None, "the failure in /health")
    # Past stale-s without a good scrape, the others' load is forgotten.
    wait_for(lambda: _stats(gateway.url, "b")["others_in_flight"] == 0, "stale load forgotten")
    assert _stats(gateway.url, "b")["kv_cache_use"] is None
    assert httpx.post(gateway.url + "/v1/chat/completions", json=BODY).status_code == 200
    warnings = [r.getMessage() for r in caplog.records if "scraping b failed" in r.getMessage()]
    assert len(warnings) == 1, warnings  # logged once while it keeps failing
    engine.broken = None
    wait_for(lambda: problem() is None, "the scrape to work again")
    assert httpx.get(gateway.url + "/health").json()["scrape"]["b"]["age_s"] < math.inf


def test_a_backend_whose_steps_run_slow_shows_it_and_loses_the_calls(serve: Any, kit: Any) -> None:
    """Two identical backends; the first reports decode steps five times its datasheet's: the
    gateway's view shows the slowdown, and CS-UCB sends its calls to the second."""
    slow, fast = FakeEngine(), FakeEngine()
    slow_server, fast_server = serve(slow.app()), serve(fast.app())
    names = {**NAMES, "decode-seconds": "ds", "decode-tokens": "dt"}
    config = kit.gateway_config(
        [
            kit.backend("slow", slow_server.url, engine="custom", metrics=names),
            kit.backend("fast", fast_server.url, engine="custom", metrics=names),
        ],
        scrape={"interval-s": 0.05, "stale-s": 1.0},
    )
    gateway = serve(create_app(config, make_policy("cs-ucb"), health_checks=False))
    slow.others = fast.others = 1  # one request running on each, sent by someone else
    wait_for(lambda: _stats(gateway.url, "slow")["others_in_flight"] == 1, "the load seen")
    # Its datasheet's step with that request and half the cache (kv 0.5), five times over.
    spec = build_specs(config)[0][0]
    datasheet = spec.perf.step_s(1, 0.5 * spec.kv_capacity_tokens)
    slow.decoded = (5.0 * datasheet * 200, 200.0)
    fast.decoded = (datasheet * 200, 200.0)
    wait_for(lambda: _stats(gateway.url, "slow")["slowdown"] > 4.9, "the slowdown seen")
    assert _stats(gateway.url, "slow")["slowdown"] == pytest.approx(5.0)
    assert _stats(gateway.url, "fast")["slowdown"] == pytest.approx(1.0)
    for _ in range(4):
        answer = httpx.post(gateway.url + "/v1/chat/completions", json=BODY, timeout=60)
        assert answer.headers["x-perllm-backend"] == "fast"

    # An engine whose counters fall was restarted: no step is read from their fall (which here
    # would read 5.2), and the next growth is measured from where they restarted.
    def rounds() -> int:
        found: int = httpx.get(gateway.url + "/health").json()["scrape"]["slow"]["rounds"]
        return found

    restarted = (datasheet * 10, 10.0)
    slow.decoded = restarted
    later = rounds() + 2
    wait_for(lambda: rounds() >= later, "two more scrapes")
    assert _stats(gateway.url, "slow")["slowdown"] == pytest.approx(5.0)
    slow.decoded = (restarted[0] + 2.0 * datasheet * 100, restarted[1] + 100.0)
    wait_for(lambda: _stats(gateway.url, "slow")["slowdown"] < 2.1, "the new steps seen")
    assert _stats(gateway.url, "slow")["slowdown"] == pytest.approx(2.0)
    # Steps made by a burst that ended before the scrape ran at a batch the scrape does not
    # show: no reading; and with no reading for stale-s (1 s) the slowdown is forgotten.
    slow.others = 0
    slow.decoded = (restarted[0] + 2.0 * datasheet * 100 + 9.0 * datasheet * 50, 160.0)
    later = rounds() + 2
    wait_for(lambda: rounds() >= later, "two more scrapes")
    assert _stats(gateway.url, "slow")["slowdown"] in (pytest.approx(2.0), 1.0)  # never 9
    wait_for(lambda: _stats(gateway.url, "slow")["slowdown"] == 1.0, "the slowdown forgotten")


def test_emulated_vllm_backends_loaded_by_direct_clients_are_avoided(serve: Any, kit: Any) -> None:
    """Two emulators that export vLLM's gauges; a client the gateway does not see holds
    streams open on the first; the gateway counts them and sends its calls to the second."""
    busy = serve(kit.emulator(kit.EDGE, time_scale=1.0))
    free = serve(kit.emulator(kit.EDGE, time_scale=1.0))
    config = kit.gateway_config(
        [
            kit.backend("busy", busy.url, engine="vllm"),
            kit.backend("free", free.url, engine="vllm"),
        ],
        scrape={"interval-s": 0.05, "stale-s": 1.0},
    )
    gateway = serve(create_app(config, make_policy("least-loaded"), health_checks=False))
    long = {
        "model": "llama-2-7b",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 2000,
        "stream": True,
    }
    with httpx.Client(timeout=60) as direct:
        streams = [
            direct.send(
                direct.build_request("POST", busy.url + "/v1/chat/completions", json=long),
                stream=True,
            )
            for _ in range(3)
        ]
        try:
            # Each is running once its first token arrives (its reader kept: dropping it would
            # close the stream).
            readers = [stream.iter_lines() for stream in streams]
            for reader in readers:
                next(line for line in reader if line.startswith("data:"))
            wait_for(
                lambda: _stats(gateway.url, "busy")["others_in_flight"] == 3, "3 direct streams"
            )
            for _ in range(4):
                answer = httpx.post(gateway.url + "/v1/chat/completions", json=BODY, timeout=60)
                assert answer.headers["x-perllm-backend"] == "free"
        finally:
            for stream in streams:
                stream.close()
