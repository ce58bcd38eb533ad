"""Gateway replicas sharing statistics and load through a real ``redis-server`` (no mocks)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from redis_server import RedisServer
from waiting import wait_for

from perllm.domain import RouterRequest
from perllm.errors import InputError
from perllm.gateway import create_app
from perllm.gateway.cli import add_gateway_commands
from perllm.gateway.health import CircuitBreaker
from perllm.gateway.shared_state import SharedState
from perllm.gateway.view import LiveView
from perllm.policies.registry import make_policy


def _prompt(tokens: int) -> RouterRequest:
    """A request of ``tokens`` prompt tokens, as the gateway counts it in flight."""
    return RouterRequest(0, 0.0, "chat", tokens, 4 * tokens, 10.0)


BODY = {"model": "m", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}
SYNC = {"interval-s": 0.1, "load-interval-s": 0.05, "lease-s": 2.0}


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


def times_learned(state: dict[str, Any]) -> float:
    """How many answers taught CS-UCB's time corrections, from its totals."""
    totals = state.get("totals", {})
    return sum(v for k, v in totals.items() if k.startswith("t|") and "|count|" in k)


def learned(url: str) -> float:
    return times_learned(httpx.get(url + "/admin/state").json())


def replicas(serve: Any, kit: Any, store: str, count: int = 2, **extra: Any) -> list[Any]:
    edge = serve(kit.emulator(kit.EDGE, time_scale=0.01))
    cloud = serve(kit.emulator(kit.CLOUD, time_scale=0.01))
    config = kit.gateway_config(
        [kit.backend("e", edge.url, kit.EDGE), kit.backend("c", cloud.url, kit.CLOUD)],
        policy={"type": "cs-ucb"},
        **{"state-store": store, "state-sync": SYNC},
        **extra,
    )
    return [serve(create_app(config, make_policy("cs-ucb", seed=i))) for i in range(count)]


@pytest.mark.redis
def test_statistics_learned_by_one_replica_reach_the_other_once(
    serve: Any, kit: Any, redis_server: RedisServer
) -> None:
    a, b = replicas(serve, kit, redis_server.url)
    for _ in range(5):
        assert httpx.post(a.url + "/v1/chat/completions", json=BODY).is_success
    wait_for(lambda: learned(b.url) == 5, "replica b to learn a's 5 observations")
    for _ in range(3):
        assert httpx.post(b.url + "/v1/chat/completions", json=BODY).is_success
    # Each observation is counted once, wherever it was made: 8 on both, never more.
    wait_for(lambda: learned(a.url) == 8 and learned(b.url) == 8, "both replicas at 8")
    state_a = httpx.get(a.url + "/admin/state").json()
    state_b = httpx.get(b.url + "/admin/state").json()
    totals_a, totals_b = state_a["totals"], state_b["totals"]
    assert totals_a.keys() == totals_b.keys()
    assert all(np.isclose(totals_a[k], totals_b[k]) for k in totals_a)
    health = httpx.get(a.url + "/health").json()
    assert health["status"] == "ok"
    assert health["state_store"]["replicas"] == 2


def shared_states(kit: Any, store: str, policy: str) -> Callable[[], SharedState]:
    """``replica()``: a fresh :class:`SharedState` (its own view and policy), no app around."""
    config = kit.gateway_config(
        [kit.backend("e", "http://127.0.0.1:9"), kit.backend("f", "http://127.0.0.1:9")],
        policy={"type": policy},
        **{
            "state-store": store,
            "state-sync": {"interval-s": 0.05, "load-interval-s": 0.05, "lease-s": 2.0},
        },
    )

    def replica() -> SharedState:
        view = LiveView(config, [CircuitBreaker(3, 1.0) for _ in config.backends])
        return SharedState(config, make_policy(policy), view)

    return replica


@pytest.mark.redis
def test_in_flight_of_a_silent_replica_expires(kit: Any, redis_server: RedisServer) -> None:
    import asyncio

    replica = shared_states(kit, redis_server.url, "round-robin")

    async def scenario() -> None:
        dying, living = replica(), replica()
        dying.view.begin(0, _prompt(100))
        dying.view.begin(0, _prompt(50))
        assert await dying.sync_load()
        assert await living.sync_load()
        assert living.view.remote_in_flight.tolist() == [2.0, 0.0]
        assert living.view.load(0).running == 2
        assert living.view.load(0).tokens_in_flight == 150
        # `dying` publishes no more (as if killed): its lease runs out, its load is forgotten.
        deadline = time.monotonic() + 15.0
        while living.view.remote_in_flight.any():
            assert time.monotonic() < deadline, "the dead replica's load never expired"
            assert await living.sync_load()
            await asyncio.sleep(0.05)
        assert living.replicas == 1
        await living.stop()
        await dying.client.aclose()

    asyncio.run(scenario())


@pytest.mark.redis
def test_a_replica_whose_totals_the_store_lost_resends_them(
    kit: Any, redis_server: RedisServer
) -> None:
    import asyncio

    replica = shared_states(kit, redis_server.url, "cs-ucb")

    def count(state: SharedState) -> float:
        return times_learned(state.policy.state())

    def observe(state: SharedState, times: int) -> None:
        policy: Any = state.policy
        row = policy.times.group("default")  # the class's time corrections, batch not crowded
        for _ in range(times):
            policy.times.observe((row, 0), 0.1)

    async def scenario() -> None:
        a, b = replica(), replica()
        for state in (a, b):
            state.policy.adopt_shared_stats({}, 2)  # type: ignore[attr-defined]
        observe(a, 3)
        assert await a.sync() and await b.sync()
        assert count(b) == 3
        await a.client.delete(a._keys[1])  # the store loses a's own totals (not the merged)
        observe(a, 2)
        observe(b, 1)
        assert await a.sync() and await b.sync() and await a.sync()
        assert count(a) == count(b) == 6  # nothing counted twice, nothing lost
        for state in (a, b):
            await state.stop()

    asyncio.run(scenario())


@pytest.mark.redis
def test_redis_down_serves_on_local_state_and_catches_up(
    serve: Any, kit: Any, redis_server: RedisServer
) -> None:
    a, b = replicas(serve, kit, redis_server.url)
    wait_for(lambda: httpx.get(a.url + "/health").json()["state_store"]["syncs"] > 0, "a sync")
    redis_server.stop()
    wait_for(
        lambda: httpx.get(a.url + "/health").json()["status"] == "degraded-state-store",
        "/health to say degraded-state-store",
    )
    for _ in range(4):  # nothing fails because the store is down
        assert httpx.post(a.url + "/v1/chat/completions", json=BODY).is_success
    assert learned(a.url) == 4
    redis_server.start()  # empty: it lost everything
    wait_for(lambda: httpx.get(a.url + "/health").json()["status"] == "ok", "a reconnecting")
    wait_for(lambda: learned(b.url) == 4, "b catching up with what a learned meanwhile")
    assert learned(a.url) == 4


@pytest.mark.redis
def test_state_file_with_a_store(
    serve: Any, kit: Any, redis_server: RedisServer, tmp_path: Path
) -> None:
    state_file = tmp_path / "s.json"
    first = replicas(serve, kit, redis_server.url, 1, **{"state-file": str(state_file)})[0]
    for _ in range(3):
        assert httpx.post(first.url + "/v1/chat/completions", json=BODY).is_success
    first.stop()
    assert state_file.exists()
    # The store is flushed: a new replica seeds it from its state file, and another adopts it.
    redis_server.stop()
    redis_server.start()
    a, b = replicas(serve, kit, redis_server.url, 2, **{"state-file": str(state_file)})
    wait_for(lambda: learned(a.url) == 3 and learned(b.url) == 3, "the state file's 3, once")


def _serve_args(*argv: str) -> Any:
    import argparse

    class Parser(argparse.ArgumentParser):
        def error(self, message: str) -> Any:
            raise InputError(message)

    parser = Parser()
    add_gateway_commands(parser.add_subparsers(dest="command", parser_class=Parser))
    return parser.parse_args(["serve", *argv])


def _config_file(tmp_path: Path, kit: Any, **extra: Any) -> str:
    import yaml

    path = tmp_path / "gateway.yaml"
    data = {"backends": [kit.backend("e", "http://127.0.0.1:9")], **extra}
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_workers_need_a_state_store(tmp_path: Path, kit: Any) -> None:
    args = _serve_args("--config", _config_file(tmp_path, kit), "--workers", "2")
    with pytest.raises(InputError, match=r"--workers 2: .*state store.*redis-server"):
        args.func(args)


def test_bad_state_store_urls_name_the_field(tmp_path: Path, kit: Any) -> None:
    config = _config_file(tmp_path, kit, **{"state-store": "http://127.0.0.1:6379"})
    args = _serve_args("--config", config)
    with pytest.raises(InputError, match=r"field 'state-store': expected redis://HOST:PORT/DB"):
        args.func(args)
    args = _serve_args("--config", _config_file(tmp_path, kit), "--state-store", "redis://h:x/0")
    with pytest.raises(InputError, match=r"--state-store: the port must be a number"):
        args.func(args)


@pytest.mark.redis
def test_workers_share_one_port_and_what_they_learn(
    serve: Any, kit: Any, redis_server: RedisServer, tmp_path: Path
) -> None:
    import signal
    import subprocess
    import sys

    from redis_server import free_port

    edge = serve(kit.emulator(kit.EDGE, time_scale=0.01))
    config = _config_file(
        tmp_path,
        kit,
        backends=[kit.backend("e", edge.url)],
        policy={"type": "cs-ucb"},
        **{"state-store": redis_server.url, "state-sync": SYNC},
    )
    port = free_port()
    command = [sys.executable, "-m", "perllm.cli", "serve", "--config", config]
    proc = subprocess.Popen(
        [*command, "--port", str(port), "--workers", "2"], stdout=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"

    def replicas_seen() -> int:
        try:
            return int(httpx.get(url + "/stats").json()["state_store"]["replicas"])
        except httpx.HTTPError:
            return 0

    try:
        wait_for(lambda: replicas_seen() == 2, "two workers on one port")
        for _ in range(6):
            assert httpx.post(url + "/v1/chat/completions", json=BODY).is_success
        # Whichever worker answers (each GET is a new connection), it knows all 6.
        wait_for(lambda: all(learned(url) == 6 for _ in range(8)), "both workers at 6")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


@pytest.mark.redis
def test_replicas_scrape_each_engine_once_per_interval_between_them(
    serve: Any, kit: Any, redis_server: RedisServer
) -> None:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse, Response
    from starlette.routing import Route

    hits = [0]

    async def metrics(request: Request) -> Response:
        hits[0] += 1
        return PlainTextResponse("q 2\nr 3\n")  # 5 requests of others, none of the gateways'

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    engine = serve(Starlette(routes=[Route("/metrics", metrics), Route("/health", health)]))
    config = kit.gateway_config(
        [kit.backend("b", engine.url, engine="custom", metrics={"queued": "q", "running": "r"})],
        **{"state-store": redis_server.url, "state-sync": SYNC},
        scrape={"interval-s": 0.05, "stale-s": 1.0},
    )
    a, b = (
        serve(create_app(config, make_policy("round-robin", seed=i), health_checks=False))
        for i in range(2)
    )

    def status(url: str) -> dict[str, Any]:
        found: dict[str, Any] = httpx.get(url + "/health").json()["scrape"]["b"]
        return found

    wait_for(lambda: min(status(a.url)["rounds"], status(b.url)["rounds"]) >= 30, "30 rounds")
    for url in (a.url, b.url):
        assert httpx.get(url + "/stats").json()["backends"]["b"]["others_in_flight"] == 5
    first, second = status(a.url), status(b.url)
    rounds = first["rounds"] + second["rounds"]
    local = first["scraped_here"] + second["scraped_here"]
    assert hits[0] >= local  # every local scrape reached the engine (more since, perhaps)
    assert local < 0.75 * rounds, (local, rounds)  # not each replica every round
