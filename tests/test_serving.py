"""The one server harness: a socket bound before uvicorn starts, a thread that starts and stops
cleanly, one clear error for a port in use, several apps in one event loop."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from perllm.errors import InputError
from perllm.serving import LOOPBACK, ServerThread, bind, restartable_port, serve_apps


def _app(events: list[str], name: str = "app", *, fail_startup: bool = False) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        events.append(f"{name} startup")
        if fail_startup:
            raise RuntimeError("no database")
        yield
        events.append(f"{name} shutdown")

    async def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse(name)

    return Starlette(routes=[Route("/", hello)], lifespan=lifespan)


def test_a_server_thread_serves_once_started_and_stops_cleanly() -> None:
    events: list[str] = []
    server = ServerThread(_app(events))
    assert server.url == f"http://127.0.0.1:{server.port}"
    server.start()
    assert events == ["app startup"]  # the lifespan ran before start() returned
    assert httpx.get(server.url, timeout=30).text == "app"
    server.stop()
    assert events == ["app startup", "app shutdown"]
    assert not server.thread.is_alive()
    assert server.sock.fileno() == -1  # closed
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url, timeout=30)


def test_the_port_is_held_from_the_moment_the_server_is_made() -> None:
    events: list[str] = []
    server = ServerThread(_app(events))
    # Bound and listening before start(): nobody else can take the port, and a client that
    # connects early waits in the backlog instead of being refused.
    with socket.create_connection((LOOPBACK, server.port), timeout=30):
        pass
    with pytest.raises(InputError, match="in use"):
        bind(LOOPBACK, server.port)
    with server:
        assert httpx.get(server.url, timeout=30).status_code == 200
    assert events == ["app startup", "app shutdown"]


def test_a_port_in_use_is_one_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind((LOOPBACK, 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(
            InputError,
            match=rf"^port: cannot listen on 127\.0\.0\.1:{port}: Address already in use$",
        ):
            ServerThread(_app([]), port=port)
        with pytest.raises(InputError, match=rf"^--port: cannot listen on 127\.0\.0\.1:{port}"):
            bind(LOOPBACK, port)


def test_an_unresolvable_host_is_one_clear_error() -> None:
    with pytest.raises(InputError, match=r"^--host: cannot resolve 'no\.such\.host\.invalid'"):
        bind("no.such.host.invalid", 0)


def test_a_server_that_cannot_start_says_so_instead_of_hanging() -> None:
    events: list[str] = []
    server = ServerThread(_app(events, fail_startup=True))
    with pytest.raises(RuntimeError, match="could not start: its startup failed"):
        server.start()
    assert events == ["app startup"]
    assert not server.thread.is_alive()
    assert server.sock.fileno() == -1


def test_serve_apps_serves_every_app_until_a_signal_then_stops_them_all() -> None:
    events: list[str] = []

    async def on_stop() -> None:
        events.append("on_stop")

    async def main() -> None:
        socks = [bind(LOOPBACK, 0), bind(LOOPBACK, 0)]
        apps = [(_app(events, "a"), socks[0]), (_app(events, "b"), socks[1])]
        serving = asyncio.create_task(serve_apps(apps, log_level="error", on_stop=[on_stop]))
        try:
            async with httpx.AsyncClient(timeout=30) as client:
                for name, sock in zip("ab", socks, strict=True):
                    port = sock.getsockname()[1]
                    # Bound before serving: the call waits for the server, never races it.
                    assert (await client.get(f"http://127.0.0.1:{port}/")).text == name
            os.kill(os.getpid(), signal.SIGTERM)  # handled by serve_apps, once for all
            await asyncio.wait_for(serving, 30)
        finally:
            for sock in socks:
                sock.close()

    asyncio.run(main())
    assert sorted(events) == ["a shutdown", "a startup", "b shutdown", "b startup", "on_stop"]


def test_a_restartable_port_is_free_and_below_the_outgoing_connections_range() -> None:
    low = 32768
    ranges = Path("/proc/sys/net/ipv4/ip_local_port_range")
    if ranges.exists():
        low = int(ranges.read_text().split()[0])
    ports = [restartable_port() for _ in range(20)]
    assert len(set(ports)) == len(ports)  # never the same twice
    for port in ports:
        assert 10_000 <= port < low
        bind("127.0.0.1", port).close()  # nothing listens there
