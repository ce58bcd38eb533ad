"""CS-UCB through the gateway meets more deadlines than round-robin on the same requests.

Testbed (emulated, 2.5x faster than real time, so that a loaded machine's scheduling delays
stay small against the deadlines): a fast-but-far cloud (A100, LLaMA-2-13B, 150 ms RTT) and two
slow-but-near CPU edges (Xeon, LLaMA-2-7B q4, 2 ms RTT). Half of the requests
have a deadline only the cloud can meet; the other half can be met anywhere.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from perllm.gateway import create_app
from perllm.policies.registry import make_policy

TIME_SCALE = 0.4
EDGE = "xeon-silver-4214r:llama-2-7b:q4"
CLOUD = "a100-80gb:llama-2-13b:fp16"
REQUESTS = 36
# Model time: an idle edge needs ~1.4 s for 16 tokens, the cloud ~0.45 s with its RTT.
TIGHT_MS, LENIENT_MS = 800 * TIME_SCALE, 5000 * TIME_SCALE
BODY = {
    "model": "m",
    "max_tokens": 16,
    "messages": [{"role": "user", "content": "Summarise the meeting notes please."}],
}


def _deadline_met(serve: Any, kit: Any, policy: str) -> dict[str, Any]:
    edges = [
        serve(kit.emulator(EDGE, time_scale=TIME_SCALE, max_batch=4, rtt_ms=2)) for _ in range(2)
    ]
    cloud = serve(kit.emulator(CLOUD, time_scale=TIME_SCALE, max_batch=16, rtt_ms=150))
    backends = [
        kit.backend(f"edge-{i}", e.url, EDGE, **{"max-concurrency": 4, "link": {"rtt-ms": 2}})
        for i, e in enumerate(edges)
    ]
    backends.append(
        kit.backend("cloud", cloud.url, CLOUD, **{"max-concurrency": 16, "link": {"rtt-ms": 150}})
    )
    config = kit.gateway_config(backends, policy={"type": policy}, **{"time-scale": TIME_SCALE})
    gateway = serve(create_app(config, make_policy(policy, seed=1)))

    def ask(i: int) -> int:
        deadline = TIGHT_MS if i % 2 == 0 else LENIENT_MS
        headers = {"x-perllm-deadline-ms": str(deadline)}
        with httpx.Client(base_url=gateway.url, timeout=30) as client:
            return client.post("/v1/chat/completions", json=BODY, headers=headers).status_code

    with ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(ask, range(REQUESTS)))
    assert statuses == [200] * REQUESTS
    summary: dict[str, Any] = httpx.get(gateway.url + "/stats").json()["summary"]
    for server in [*edges, cloud, gateway]:
        server.stop()
    return summary


@pytest.mark.slow
def test_cs_ucb_meets_more_deadlines_than_round_robin(serve: Any, kit: Any) -> None:
    rr = _deadline_met(serve, kit, "round-robin")
    cs = _deadline_met(serve, kit, "cs-ucb")
    assert rr["requests"] == cs["requests"] == REQUESTS
    # Round-robin sends two thirds of the tight requests to edges that cannot meet them;
    # CS-UCB's estimates rule the edges out for them from the first request.
    assert rr["met"] < REQUESTS
    assert cs["met"] >= rr["met"] + REQUESTS // 6, (cs["met"], rr["met"])
