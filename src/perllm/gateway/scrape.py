"""The load each backend carries, whoever sent it: its Prometheus ``/metrics``, scraped.

A backend that names its serving ``engine`` has its metrics read every ``scrape.interval-s``,
off every decision's path (a task of its own), and parsed with prometheus-client's text parser.
The metrics read per engine, as queued, running and KV-cache use (a fraction; samples of one
name are summed over their labels):

- ``vllm``: ``vllm:num_requests_waiting``, ``vllm:num_requests_running``,
  ``vllm:kv_cache_usage_perc`` (or the older ``vllm:gpu_cache_usage_perc``);
- ``sglang``: ``sglang:num_queue_reqs``, ``sglang:num_running_reqs``, ``sglang:token_usage``;
- ``llamacpp``: ``llamacpp:requests_deferred``, ``llamacpp:requests_processing``, no KV-cache
  use;
- ``custom``: the names in the backend's ``metrics: {queued, running, kv-cache}``.

The live view adds to its own count what the scrape shows beyond it (see
:meth:`perllm.gateway.view.LiveView.observe_scrape`): a scrape older than ``scrape.stale-s``
is forgotten. A scrape that fails (unreachable, an error status, text that is not Prometheus
exposition, or none of the engine's metrics) is logged once, until one succeeds again, and
shows in ``/health``; it never blocks or fails a call. Each gateway process scrapes for itself:
with replicas, each subtracts every replica's in-flight calls, so the others' load is counted
once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from perllm.gateway.config import BackendConfig, MetricNames, ScrapeConfig
from perllm.gateway.view import LiveView

__all__ = ["ENGINE_METRICS", "BackendLoad", "Scraper", "metric_names", "parse_load"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EngineMetrics:
    """Metric names of one engine, the first present of each tuple read."""

    queued: tuple[str, ...]
    running: tuple[str, ...]
    kv_cache: tuple[str, ...] = ()


ENGINE_METRICS = {
    "vllm": EngineMetrics(
        ("vllm:num_requests_waiting",),
        ("vllm:num_requests_running",),
        ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
    ),
    "sglang": EngineMetrics(
        ("sglang:num_queue_reqs",), ("sglang:num_running_reqs",), ("sglang:token_usage",)
    ),
    "llamacpp": EngineMetrics(("llamacpp:requests_deferred",), ("llamacpp:requests_processing",)),
}


def metric_names(backend: BackendConfig) -> EngineMetrics:
    """The metrics scraped from ``backend`` (which names an ``engine``)."""
    if backend.engine == "custom":
        names: MetricNames | None = backend.metrics
        assert names is not None  # the config requires them
        kv = () if names.kv_cache is None else (names.kv_cache,)
        return EngineMetrics((names.queued,), (names.running,), kv)
    assert backend.engine is not None
    return ENGINE_METRICS[backend.engine]


@dataclass(frozen=True, slots=True)
class BackendLoad:
    """One scrape: the requests a backend queues and runs, and its KV-cache use (0-1)."""

    queued: float
    running: float
    kv_cache: float | None


@functools.cache
def _wanted(names: EngineMetrics) -> re.Pattern[str]:
    every = (*names.queued, *names.running, *names.kv_cache)
    return re.compile(
        "^(?:" + "|".join(re.escape(name) for name in every) + r")[{ \t].*$", re.MULTILINE
    )


def parse_load(text: str, names: EngineMetrics) -> BackendLoad:
    """The load in a Prometheus exposition (``ValueError`` naming what is missing or bad).

    Only the sample lines of ``names`` are handed to the parser: an engine's exposition runs to
    hundreds of histogram lines that the load does not need."""
    sums: dict[str, float] = {}
    lines = "\n".join(_wanted(names).findall(text))
    for family in text_string_to_metric_families(lines + "\n"):
        for sample in family.samples:
            sums[sample.name] = sums.get(sample.name, 0.0) + float(sample.value)

    def first(options: tuple[str, ...], what: str) -> float | None:
        for name in options:
            if name in sums:
                value = sums[name]
                if not 0.0 <= value < float("inf"):
                    raise ValueError(f"{name} is {value:g}")
                return value
        if what:
            raise ValueError(f"no {what} metric ({' or '.join(options)})")
        return None

    queued = first(names.queued, "queued")
    running = first(names.running, "running")
    assert queued is not None and running is not None
    kv = first(names.kv_cache, "")
    return BackendLoad(queued, running, None if kv is None else min(kv, 1.0))


class Scraper:
    """Scrapes the backends that name an ``engine`` into the live view (module docstring)."""

    def __init__(
        self,
        backends: Sequence[BackendConfig],
        view: LiveView,
        settings: ScrapeConfig,
        client: httpx.AsyncClient,
    ) -> None:
        self.settings = settings
        self.view = view
        self.client = client
        self.targets = [(i, b, metric_names(b)) for i, b in enumerate(backends) if b.engine]
        self.last_ok: dict[int, float] = {}  # monotonic time of each backend's last good scrape
        self.errors: dict[int, str] = {}  # each failing backend's last problem
        self.scrapes = 0
        self._task: asyncio.Task[None] | None = None

    async def scrape(self, index: int, backend: BackendConfig, names: EngineMetrics) -> None:
        """Read one backend's metrics once into the view (a failure is recorded, not raised)."""
        timeout = min(self.settings.interval_s, 5.0)
        try:
            response = await self.client.get(backend.scrape_url, timeout=timeout)
            if response.status_code != 200:
                raise ValueError(f"HTTP {response.status_code}")
            load = parse_load(response.text, names)
        except (httpx.HTTPError, ValueError) as err:
            problem = str(err) or type(err).__name__
            if index not in self.errors:
                log.warning("scraping %s failed: %s", backend.name, problem)
            self.errors[index] = problem
            if time.monotonic() - self.last_ok.get(index, -float("inf")) > self.settings.stale_s:
                self.view.forget_scrape(index)
            return
        if self.errors.pop(index, None) is not None:
            log.info("scraping %s works again", backend.name)
        self.last_ok[index] = time.monotonic()
        self.view.observe_scrape(index, load.queued + load.running, load.kv_cache)

    async def scrape_all(self) -> None:
        await asyncio.gather(*(self.scrape(*target) for target in self.targets))
        self.scrapes += 1

    def status(self) -> dict[str, dict[str, Any]]:
        """Per scraped backend: the age of its last good scrape and its current problem."""
        now = time.monotonic()
        found = {}
        for index, backend, _ in self.targets:
            last = self.last_ok.get(index)
            found[backend.name] = {
                "engine": backend.engine,
                "age_s": None if last is None else round(now - last, 3),
                "error": self.errors.get(index),
            }
        return found

    async def _loop(self) -> None:
        while True:
            await self.scrape_all()
            await asyncio.sleep(self.settings.interval_s)

    def start(self) -> None:
        if self.targets and self._task is None:
            self._task = asyncio.create_task(self._loop(), name="perllm-scrape")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
