"""Where a sweep's runs execute: a local process pool or a Ray cluster, behind one interface.

A sweep submits picklable calls (a module-level function and its arguments), each tagged with a
key, and reads ``(key, result)`` pairs back as the calls complete, in whatever order they finish;
it may submit more calls while reading (the robustness benchmark queues a cluster's runs once the
cluster is generated). Results are keyed, so a sweep's outputs do not depend on the executor.

- ``process`` (the default): a pool of ``workers`` spawned processes on this machine.
- ``ray``: one Ray task per call, retried by Ray up to :data:`RAY_RETRIES` times if its worker
  dies or its node is lost; on a Ray instance this process starts (``workers`` CPUs) or on the
  cluster at ``ray_address`` (``ray start --head`` prints it). Ray is imported only here, and only
  when asked for, so perllm runs without it (``pip install 'perllm[ray]'`` adds it).

If the sweep stops early (Ctrl-C, a SIGTERM or a failed run), the calls still queued are
cancelled and the running ones abandoned: the pool's processes are terminated, the Ray tasks
cancelled. While an executor is open in the main thread, a SIGTERM that would end the process
at once (its default action) is turned into ``SystemExit(143)`` there, so that the workers are
stopped before the process exits instead of running on without it.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from perllm.errors import InputError

__all__ = [
    "EXECUTORS",
    "RAY_EXTRA",
    "RAY_RETRIES",
    "Executor",
    "ExecutorSpec",
    "map_in_order",
    "open_executor",
    "preflight",
]

EXECUTORS = ("process", "ray")
RAY_EXTRA = "perllm[ray]"
RAY_RETRIES = 3
"""How many times Ray reruns a task whose worker process died or whose node was lost."""
CONNECT_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class ExecutorSpec:
    """Which executor, with how many local workers (ignored on a remote Ray cluster)."""

    kind: str = "process"
    workers: int = 1
    ray_address: str | None = None

    def describe(self) -> str:
        if self.kind == "process":
            return f"{self.workers} processes"
        if self.ray_address is None:
            return f"local Ray, {self.workers} CPUs"
        return f"Ray at {self.ray_address}"


class Executor(Protocol):
    def submit(self, key: Any, fn: Callable[..., Any], *args: Any) -> None:
        """Queue ``fn(*args)``; its result comes back from :meth:`completed` under ``key``."""

    def completed(self) -> Iterator[tuple[Any, Any]]:
        """Yield ``(key, result)`` as calls finish, until none is left (a failed call raises)."""


def preflight(spec: ExecutorSpec) -> None:
    """Fail at once, in one line, if ``spec`` cannot run (Ray missing, its cluster unreachable)."""
    if spec.kind == "ray":
        _import_ray()
        if spec.ray_address not in (None, "auto"):
            _check_reachable(spec.ray_address)


@contextmanager
def open_executor(spec: ExecutorSpec) -> Iterator[Executor]:
    """Start the executor of ``spec``; stop it on exit, abandoning unfinished calls on errors."""
    if spec.kind == "process":
        pool: _ProcessPool | _RayPool = _ProcessPool(spec.workers)
    elif spec.kind == "ray":
        pool = _RayPool(spec.ray_address, spec.workers)
    else:
        raise InputError(f"--executor: expected one of {', '.join(EXECUTORS)}, got {spec.kind!r}")
    try:
        with _sigterm_as_exit():
            yield pool
    except BaseException:
        pool.close(abandon=True)
        raise
    pool.close(abandon=False)


@contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    """In the main thread, where SIGTERM has its default action: raise ``SystemExit(143)``
    (128 + SIGTERM, the status a shell reports for a process it ended) on a SIGTERM instead."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main else None
    if previous != signal.SIG_DFL:
        yield
        return

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def map_in_order(spec: ExecutorSpec, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
    """``[fn(item) for item in items]``, the calls run by the executor of ``spec``."""
    with open_executor(spec) as pool:
        for index, item in enumerate(items):
            pool.submit(index, fn, item)
        results = dict(pool.completed())
    return [results[index] for index in range(len(items))]


def _ignore_sigint() -> None:
    # Ctrl-C reaches the whole process group: the parent handles it, the workers carry on until
    # the parent stops them (no traceback from every worker).
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class _ProcessPool:
    def __init__(self, workers: int) -> None:
        context = multiprocessing.get_context("spawn")
        self._pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_ignore_sigint)
        self._pending: dict[Future[Any], Any] = {}

    def submit(self, key: Any, fn: Callable[..., Any], *args: Any) -> None:
        self._pending[self._pool.submit(fn, *args)] = key

    def completed(self) -> Iterator[tuple[Any, Any]]:
        while self._pending:
            done, _ = wait(self._pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield self._pending.pop(future), future.result()

    def close(self, abandon: bool) -> None:
        if not abandon:
            self._pool.shutdown()
            return
        terminate = getattr(self._pool, "terminate_workers", None)  # Python 3.14+
        if terminate is not None:
            terminate()
            return
        # Before 3.14 only the pool's private process table reaches the running workers.
        processes = list((getattr(self._pool, "_processes", None) or {}).values())
        self._pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.terminate()
        for process in processes:
            process.join()


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise InputError(
            f"--executor ray: Ray is not installed; install it with: pip install '{RAY_EXTRA}'"
        ) from None
    return ray


def _check_reachable(address: str) -> None:
    """One line, at once, if nothing listens at ``HOST:PORT``."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as err:
        reason = err.strerror or str(err) or type(err).__name__
        message = f"--ray-address: cannot reach a Ray cluster at {address}: {reason}"
        raise InputError(message) from None


def _hint(address: str) -> str:
    if address == "auto":
        return ""
    return (
        " (if the cluster uses token authentication, as `ray start` does by default in recent "
        "Ray, set RAY_AUTH_MODE=token and its token here; on its head node, `--ray-address auto` "
        "finds both)"
    )


class _RayPool:
    def __init__(self, address: str | None, workers: int) -> None:
        ray = _import_ray()
        self._ray = ray
        self._owned = not ray.is_initialized()  # a caller's Ray (a test's) is used, not stopped
        if self._owned:
            quiet = {"logging_level": logging.ERROR, "log_to_driver": False}
            if address is None:
                ray.init(address="local", num_cpus=workers, include_dashboard=False, **quiet)
            else:
                if address != "auto":
                    _check_reachable(address)  # ray.init would retry for minutes
                try:
                    ray.init(address=address, **quiet)
                except (ConnectionError, RuntimeError) as err:  # refused; a version mismatch
                    raise InputError(f"--ray-address {address}: {err}{_hint(address)}") from None
        self._remote: dict[Callable[..., Any], Any] = {}
        self._pending: dict[Any, Any] = {}

    def submit(self, key: Any, fn: Callable[..., Any], *args: Any) -> None:
        remote = self._remote.get(fn)
        if remote is None:
            remote = self._remote[fn] = self._ray.remote(max_retries=RAY_RETRIES)(fn)
        self._pending[remote.remote(*args)] = key

    def completed(self) -> Iterator[tuple[Any, Any]]:
        while self._pending:
            ready, _ = self._ray.wait(list(self._pending), num_returns=1)
            for ref in ready:
                yield self._pending.pop(ref), self._ray.get(ref)

    def close(self, abandon: bool) -> None:
        if abandon:
            for ref in self._pending:
                self._ray.cancel(ref, force=True)
            self._pending.clear()
        if self._owned:
            self._ray.shutdown()
