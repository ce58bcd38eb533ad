"""Serving ASGI apps with uvicorn: on a socket bound first, in a thread or in this event loop.

One harness for every place that starts a server (``perllm serve``, ``emulate`` and ``testbed``,
:class:`perllm.node.gateway.GatewayThread`, the gateway tests):

- :func:`bind` makes the listening socket before uvicorn starts, and uvicorn serves that socket,
  so there is no window between picking a port and binding it; a port in use is one clear
  :class:`~perllm.errors.InputError`.
- :class:`ServerThread` serves one app in a daemon thread with its own event loop;
  :meth:`~ServerThread.start` returns once uvicorn says it has started (an event set by its
  startup, waited on with a bound against a hang only) and raises if it could not.
- :func:`restartable_port` picks a port for a server that is stopped and started again on it
  (outside the range the kernel takes outgoing connections' ports from).
- :func:`serve_apps` serves several apps in the running event loop until one stops, with
  Ctrl-C handled once for all of them, and a graceful stop that loses no call sent on a
  kept-alive connection (see its docstring).

Signals are left to the caller: a server never installs its own handlers.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import signal
import socket
import threading
from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Literal

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from perllm.errors import InputError

__all__ = ["ServerThread", "bind", "serve_apps"]

LOOPBACK = "127.0.0.1"


def bind(host: str, port: int, flag: str = "--port") -> socket.socket:
    """A listening socket on ``host:port`` (``0``: a free port), or a one-line
    :class:`InputError` naming ``flag`` if it cannot be had (a port in use, a bad host)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise InputError(f"--host: cannot resolve {host!r}: {err.strerror}") from None
    family = infos[0][0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as err:
        sock.close()
        raise InputError(f"{flag}: cannot listen on {host}:{port}: {err.strerror}") from None
    sock.set_inheritable(True)
    return sock


_HANDED_OUT: set[int] = set()


def restartable_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now, below the kernel's range for the local ports of outgoing
    connections (Linux's ``ip_local_port_range``), for a server that is stopped and started
    again on the same port: while it is down, no client socket can take that port, as one can
    take a port that :func:`bind` picked with ``0`` (those come from that range). Never the
    same port twice in one process."""
    low = 32768
    with contextlib.suppress(OSError, ValueError, IndexError):
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    rng = random.SystemRandom()
    for _ in range(1000):
        port = rng.randrange(10_000, max(low, 10_001))
        if port in _HANDED_OUT:
            continue
        with socket.socket() as sock, contextlib.suppress(OSError):
            sock.bind((host, port))
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError("no free port below the range of outgoing connections")


def _seconds(value: float | None) -> int | None:
    return None if value is None else max(1, math.ceil(value))


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signals to its caller and says when its startup is over."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.startup_over = threading.Event()  # started, or failed to

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets=sockets)
        finally:
            self.startup_over.set()

    def _protocol(self) -> asyncio.Protocol:
        # As uvicorn's startup makes the protocol of each connection it accepts.
        return self.config.http_protocol_class(  # type: ignore[call-arg]
            config=self.config, server_state=self.server_state, app_state=self.lifespan.state
        )

    async def stop_accepting(self, sock: socket.socket) -> None:
        """Close the listening socket ``sock``, serving first the connections the kernel has
        already queued on it (their clients may have sent a call: closing would reset them).
        Before its startup is over the server serves nothing: it stops once started."""
        if not self.started:
            return
        queued = []
        with contextlib.suppress(OSError):
            sock.setblocking(False)
            while True:
                connection, _ = sock.accept()
                queued.append(connection)
        for listener in self.servers:
            listener.close()
        loop = asyncio.get_running_loop()
        for connection in queued:
            connection.setblocking(False)
            await loop.connect_accepted_socket(self._protocol, connection)


class _ClosingAnswers:
    """ASGI wrapper: once :attr:`closing` is set, every HTTP answer says ``connection: close``,
    so that uvicorn closes its connection after it and the client does not send it another."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.closing = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_closing(message: Message) -> None:
            if self.closing and message["type"] == "http.response.start":
                headers = [
                    (k, v) for k, v in message.get("headers", ()) if k.lower() != b"connection"
                ]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        await self.app(scope, receive, send_closing)


def _server(
    app: ASGIApp,
    *,
    log_level: str,
    graceful_s: float | None = None,
    keep_alive_s: float = 5.0,
    lifespan: Literal["auto", "on", "off"] = "auto",
) -> _Server:
    config = uvicorn.Config(
        app,
        log_level=log_level,
        access_log=False,
        lifespan=lifespan,
        timeout_graceful_shutdown=_seconds(graceful_s),
        timeout_keep_alive=max(1, math.ceil(keep_alive_s)),
    )
    return _Server(config)


class ServerThread:
    """An ASGI app served by uvicorn on ``host:port`` in a daemon thread (its own event loop).

    The socket is bound when the object is made, so :attr:`url` is known (and the port held)
    before :meth:`start`. Use it as a context manager, or call :meth:`start` and :meth:`stop`.

    Parameters
    ----------
    app
        The ASGI app (its lifespan runs: startup before :meth:`start` returns, shutdown in
        :meth:`stop`).
    host, port
        Where to listen; port ``0`` (the default) takes a free one.
    log_level
        uvicorn's log level.
    """

    def __init__(
        self,
        app: ASGIApp,
        host: str = LOOPBACK,
        port: int = 0,
        *,
        log_level: str = "error",
    ) -> None:
        self.sock = bind(host, port, flag="port")
        self.host = host
        self.port: int = self.sock.getsockname()[1]
        self.server = _server(app, log_level=log_level, lifespan="on")
        self.thread = threading.Thread(target=self._run, name=f"uvicorn:{self.port}", daemon=True)
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _run(self) -> None:
        try:
            self.server.run(sockets=[self.sock])
        except BaseException as err:  # reported by start(), not lost in the thread
            self._error = err
        finally:
            self.server.startup_over.set()

    def start(self, timeout_s: float = 30.0) -> ServerThread:
        """Start serving; return once uvicorn has started (``RuntimeError`` if it cannot, or
        has not within ``timeout_s``, a bound against a hang only)."""
        self.thread.start()
        over = self.server.startup_over.wait(timeout_s)
        if not self.server.started:
            self.stop(timeout_s=5.0, check=False)
            if not over:
                raise RuntimeError(f"the server on {self.url} did not start in {timeout_s:g} s")
            why = ""
            if isinstance(self._error, SystemExit):  # uvicorn's exit when the lifespan fails
                why = ": its startup failed (the log says why)"
            elif self._error is not None:
                why = f": {type(self._error).__name__}: {self._error}"
            raise RuntimeError(f"the server on {self.url} could not start{why}")
        return self

    def stop(self, *, force: bool = False, timeout_s: float = 30.0, check: bool = True) -> None:
        """Shut down (gracefully unless ``force``: calls in flight finish, the lifespan ends),
        wait for the thread, close the socket. ``RuntimeError`` if the thread is still alive
        after ``timeout_s`` and then a forced exit (with ``check``)."""
        self.server.force_exit = force
        self.server.should_exit = True
        if self.thread.is_alive():
            self.thread.join(timeout_s)
            if self.thread.is_alive():
                self.server.force_exit = True
                self.thread.join(5.0)
        self.sock.close()
        if check and self.thread.is_alive():
            raise RuntimeError(f"the server on {self.url} did not stop in {timeout_s:g} s")

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


async def serve_apps(
    apps: Sequence[tuple[ASGIApp, socket.socket]],
    *,
    log_level: str = "warning",
    graceful_s: float | None = None,
    keep_alive_s: float = 5.0,
    linger_s: Mapping[ASGIApp, float] | None = None,
    on_stop: Sequence[Callable[[], Awaitable[None]]] = (),
) -> None:
    """Serve several apps in this event loop until one stops.

    The first Ctrl-C (or SIGTERM) shuts every server down gracefully:

    1. they stop accepting connections (a new one is refused, so its client knows that nothing
       was sent), once they have taken those the kernel had already queued;
    2. an app in ``linger_s`` keeps its open connections for up to that many seconds, or until
       its clients have closed them all, and answers every call on them as usual but with
       ``connection: close``: a client that sends on a kept-alive connection just after the
       signal gets its answer, never a reset;
    3. ``on_stop`` hooks run (a gateway ends the calls still in flight);
    4. uvicorn's own shutdown: idle connections close, calls in flight finish (those still open
       after ``graceful_s`` are cancelled), lifespans end.

    A second signal forces them down.
    """
    lingering = dict(linger_s or {})
    closing = {app: _ClosingAnswers(app) for app in lingering}
    servers = [
        _server(
            closing.get(app, app),
            log_level=log_level,
            graceful_s=graceful_s,
            keep_alive_s=keep_alive_s,
        )
        for app, _ in apps
    ]
    tasks = [
        asyncio.create_task(server.serve(sockets=[sock]))
        for server, (_, sock) in zip(servers, apps, strict=True)
    ]

    async def stop_gracefully() -> None:
        loop = asyncio.get_running_loop()
        try:
            for wrapper in closing.values():
                wrapper.closing = True
            for server, (_, sock) in zip(servers, apps, strict=True):
                await server.stop_accepting(sock)
            ends = [
                (server, loop.time() + lingering[app])
                for server, (app, _) in zip(servers, apps, strict=True)
                if app in lingering
            ]
            # uvicorn signals no connection's end: look at its open connections every 20 ms.
            while any(
                s.server_state.connections and not s.force_exit and loop.time() < end
                for s, end in ends
            ):
                await asyncio.sleep(0.02)
            for hook in on_stop:
                await hook()
        finally:  # whatever failed above, the servers stop
            for server in servers:
                server.should_exit = True

    stopping: list[asyncio.Task[None]] = []

    def stop() -> None:
        if not stopping:
            stopping.append(asyncio.create_task(stop_gracefully()))
            return
        for server in servers:
            server.force_exit = True
            server.should_exit = True

    loop = asyncio.get_running_loop()
    handled = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop)
            handled.append(sig)
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for server in servers:
            server.should_exit = True
        await asyncio.gather(*tasks, return_exceptions=True)
        for task in stopping:
            task.cancel()
        await asyncio.gather(*stopping, return_exceptions=True)
        for sig in handled:
            loop.remove_signal_handler(sig)
