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

And, where the engine reports them, two counters of its decoding: the seconds between output
tokens and the tokens (``vllm:inter_token_latency_seconds`` sum and count, or the older
``vllm:time_per_output_token_seconds``; ``sglang:inter_token_latency_seconds``;
``llamacpp:tokens_predicted_seconds_total`` and ``llamacpp:tokens_predicted_total``; a custom
engine's ``decode-seconds`` and ``decode-tokens``). Their increase between two scrapes is the
engine's mean decode step over the interval, which the view compares with the backend's
datasheet (:meth:`perllm.gateway.view.LiveView.observe_step`). The step so measured includes
the pauses for other requests' prefills, which the datasheet's step does not.

The live view adds to its own count what the scrape shows beyond it (see
:meth:`perllm.gateway.view.LiveView.observe_scrape`): a scrape older than ``scrape.stale-s``
is forgotten. A scrape that fails (unreachable, an error status, text that is not Prometheus
exposition, or none of the engine's metrics) is logged once, until one succeeds again, and
shows in ``/health``; it never blocks or fails a call. Replicas sharing a state store scrape
each engine once per interval between them (:mod:`perllm.gateway.shared_scrape`); the load a
scrape shows is net of every replica's calls, so others' load is counted once.
"""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import certifi
import httpx

from perllm.errors import InputError
from perllm.gateway.background import Background
from perllm.gateway.config import BackendConfig, MetricNames, ScrapeConfig
from perllm.gateway.energy import EnergyAccounts
from perllm.gateway.exposition import samples
from perllm.gateway.power import EnergyReader, parse_metric, reader_for
from perllm.gateway.shared_scrape import Others, SharedScrapes
from perllm.gateway.view import LiveView

__all__ = ["ENGINE_METRICS", "BackendLoad", "Scraper", "metric_names", "parse_load"]

log = logging.getLogger(__name__)

AT_ONCE = 8  # scrapes in flight at once: more would only lengthen the event loop's stalls


@dataclass(frozen=True, slots=True)
class EngineMetrics:
    """Metric names of one engine, the first present of each tuple read."""

    queued: tuple[str, ...]
    running: tuple[str, ...]
    kv_cache: tuple[str, ...] = ()
    decode_seconds: tuple[str, ...] = ()  # counters, read in the same order
    decode_tokens: tuple[str, ...] = ()


ENGINE_METRICS = {
    "vllm": EngineMetrics(
        ("vllm:num_requests_waiting",),
        ("vllm:num_requests_running",),
        ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
        ("vllm:inter_token_latency_seconds_sum", "vllm:time_per_output_token_seconds_sum"),
        ("vllm:inter_token_latency_seconds_count", "vllm:time_per_output_token_seconds_count"),
    ),
    "sglang": EngineMetrics(
        ("sglang:num_queue_reqs",),
        ("sglang:num_running_reqs",),
        ("sglang:token_usage",),
        ("sglang:inter_token_latency_seconds_sum",),
        ("sglang:inter_token_latency_seconds_count",),
    ),
    "llamacpp": EngineMetrics(
        ("llamacpp:requests_deferred",),
        ("llamacpp:requests_processing",),
        (),
        ("llamacpp:tokens_predicted_seconds_total",),
        ("llamacpp:tokens_predicted_total",),
    ),
}


def metric_names(backend: BackendConfig) -> EngineMetrics:
    """The metrics scraped from ``backend`` (which names an ``engine``)."""
    if backend.engine == "custom":
        names: MetricNames | None = backend.metrics
        assert names is not None  # the config requires them
        kv = () if names.kv_cache is None else (names.kv_cache,)
        seconds = () if names.decode_seconds is None else (names.decode_seconds,)
        tokens = () if names.decode_tokens is None else (names.decode_tokens,)
        return EngineMetrics((names.queued,), (names.running,), kv, seconds, tokens)
    assert backend.engine is not None
    return ENGINE_METRICS[backend.engine]


@dataclass(frozen=True, slots=True)
class BackendLoad:
    """One scrape: the requests a backend queues and runs, its KV-cache use (0-1) and its
    decoding counters (seconds between output tokens, tokens), each ``None`` if not reported."""

    queued: float
    running: float
    kv_cache: float | None
    decoding: tuple[float, float] | None = None


def parse_load(text: str, names: EngineMetrics) -> BackendLoad:
    """The load in a Prometheus exposition (``ValueError`` naming what is missing or bad)."""
    sums: dict[str, float] = {}
    wanted = (*names.queued, *names.running, *names.kv_cache)
    for name, _, value in samples(text, (*wanted, *names.decode_seconds, *names.decode_tokens)):
        sums[name] = sums.get(name, 0.0) + value

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
    decoding = None
    for seconds, tokens in zip(names.decode_seconds, names.decode_tokens, strict=True):
        if seconds in sums and tokens in sums:
            spent, made = first((seconds,), ""), first((tokens,), "")
            assert spent is not None and made is not None
            decoding = (spent, made)
            break
    return BackendLoad(queued, running, None if kv is None else min(kv, 1.0), decoding)


class Scraper:
    """Scrapes the backends that name an ``engine`` into the live view, and reads the
    ``power-source`` of those that have one into their energy accounts (module docstring)."""

    def __init__(
        self,
        backends: Sequence[BackendConfig],
        view: LiveView,
        settings: ScrapeConfig,
        energy: EnergyAccounts | None = None,
        shared: SharedScrapes | None = None,
    ) -> None:
        self.settings = settings
        self.shared = shared
        self.view = view
        self.energy = energy
        self.backends = backends
        self.power: dict[int, tuple[EnergyReader, Callable[[], float] | None]] = {}
        for i, backend in enumerate(backends):
            if backend.power_source is not None:
                try:
                    self.power[i] = reader_for(backend.power_source)
                except RuntimeError as err:
                    raise InputError(f"backends.{i}.{err}") from None
        self.targets = [i for i, b in enumerate(backends) if b.engine or i in self.power]
        self.names = {i: metric_names(b) for i, b in enumerate(backends) if b.engine}
        self.last_ok: dict[int, float] = {}  # monotonic time of each backend's last good scrape
        self.decoding: dict[int, tuple[float, float]] = {}  # each backend's last counters
        self.step_seen: dict[int, float] = {}  # monotonic time of each backend's last step
        self.scraped_here = dict.fromkeys(self.targets, 0)  # engine scrapes by this process
        self.errors: dict[int, str] = {}  # each failing backend's last problem
        self.scrapes = 0
        self._task = Background("perllm-scrape", self._loop)
        self._clients: dict[str, httpx.AsyncClient] = {}
        self._tls: ssl.SSLContext | None = None
        self._at_once = asyncio.Semaphore(AT_ONCE)

    def _client(self, url: str) -> httpx.AsyncClient:
        """The client of one metrics URL: a connection of its own, kept open between scrapes
        (in one shared pool, every request would look at every pooled connection)."""
        client = self._clients.get(url)
        if client is None:
            # A slow scrape delays the next one but never outlives the data's freshness.
            timeout = min(self.settings.stale_s / 2, 5.0)
            one = httpx.Limits(max_connections=1, max_keepalive_connections=1)
            if self._tls is None:  # one TLS context for all: each costs milliseconds to make
                self._tls = ssl.create_default_context(cafile=certifi.where())
            client = httpx.AsyncClient(timeout=timeout, limits=one, verify=self._tls)
            self._clients[url] = client
        return client

    async def _text(self, url: str, texts: dict[str, str]) -> str:
        if url not in texts:
            response = await self._client(url).get(url)
            if response.status_code != 200:
                raise ValueError(f"{url}: HTTP {response.status_code}")
            texts[url] = response.text
        return texts[url]

    async def scrape(self, index: int, load: bool = True) -> None:
        """Read one backend's load (where ``load``) and power once (a failure is recorded,
        not raised)."""
        backend = self.backends[index]
        texts: dict[str, str] = {}
        try:
            if load and index in self.names:
                text = await self._text(backend.scrape_url, texts)
                self.scraped_here[index] += 1
                found = parse_load(text, self.names[index])
                self.view.observe_scrape(index, found.queued + found.running, found.kv_cache)
                self._decoding(index, found)
                if self.shared is not None:
                    await self.shared.publish(backend.name, self._others(index))
            if index in self.power:
                await self._read_power(index, backend, texts)
        except (httpx.HTTPError, ValueError, OSError) as err:
            self._failed(index, str(err) or type(err).__name__)
            return
        self._worked(index)

    def _decoding(self, index: int, found: BackendLoad) -> None:
        """The mean decode step since this process's last scrape of ``index``, from the growth
        of its counters, read against the batch the scrape shows: so only while the engine
        still runs requests (a burst that ended before the scrape ran at another batch), and
        not where no token was made or the counters fell (the engine restarted). With no
        reading for ``scrape.stale-s``, or no counters, the slowdown is forgotten."""
        before = self.decoding.pop(index, None)
        now = time.monotonic()
        if found.decoding is not None:
            self.decoding[index] = found.decoding
            if before is not None and found.running > 0.0:
                seconds = found.decoding[0] - before[0]
                tokens = found.decoding[1] - before[1]
                if tokens > 0.0 and seconds > 0.0:
                    self.view.observe_step(index, seconds / tokens, found.running)
                    self.step_seen[index] = now
                    return
        if now - self.step_seen.get(index, -math.inf) > self.settings.stale_s:
            self.view.forget_step(index)

    def _others(self, index: int) -> Others:
        view = self.view
        return (
            float(view.others_in_flight[index]),
            float(view.others_tokens[index]),
            view.kv_cache_use[index],
            float(view.slowdown[index]),
        )

    def _failed(self, index: int, problem: str) -> None:
        if index not in self.errors:
            log.warning("scraping %s failed: %s", self.backends[index].name, problem)
        self.errors[index] = problem
        if time.monotonic() - self.last_ok.get(index, -float("inf")) > self.settings.stale_s:
            self.view.forget_scrape(index)

    def _worked(self, index: int) -> None:
        if self.errors.pop(index, None) is not None:
            log.info("scraping %s works again", self.backends[index].name)
        self.last_ok[index] = time.monotonic()

    async def _read_power(self, index: int, backend: BackendConfig, texts: dict[str, str]) -> None:
        source = backend.power_source
        assert source is not None and self.energy is not None
        reader, local = self.power[index]
        if local is not None:
            value = local()
        else:
            assert source.metric is not None
            text = await self._text(source.url or backend.scrape_url, texts)
            value = parse_metric(text, source.metric, source.labels)
        now = self.view.now()
        joules = reader.joules(now, value)
        if joules is not None:
            others = float(self.view.others_in_flight[index])
            self.energy.reading(index, now, joules, others)

    async def scrape_all(self) -> None:
        """One round: every target's power, and its load unless a replica scrapes it this
        interval (then its published result is taken)."""
        engines = [i for i in self.targets if i in self.names]
        mine = set(engines)
        if self.shared is not None and engines:
            won = await self.shared.claim([self.backends[i].name for i in engines])
            theirs = [i for i, w in zip(engines, won, strict=True) if not w]
            mine -= set(theirs)
            for index in theirs:  # counters read by another replica: measure afresh next time
                self.decoding.pop(index, None)
            published = await self.shared.fetch([self.backends[i].name for i in theirs])
            for index, others in zip(theirs, published, strict=True):
                if others is None:
                    self._failed(index, "no fresh scrape published by the replica that holds it")
                else:
                    self.view.observe_others(index, *others)
                    self._worked(index)

        async def limited(index: int) -> None:
            async with self._at_once:
                await self.scrape(index, index in mine)

        await asyncio.gather(*(limited(i) for i in self.targets))
        self.scrapes += 1

    def status(self) -> dict[str, dict[str, Any]]:
        """Per scraped backend: the age of its last good scrape, its current problem, this
        process's rounds and the engine scrapes it made itself (the rest taken from a
        replica)."""
        now = time.monotonic()
        found = {}
        for index in self.targets:
            backend = self.backends[index]
            last = self.last_ok.get(index)
            found[backend.name] = {
                "engine": backend.engine,
                "power_source": backend.power_source is not None,
                "age_s": None if last is None else round(now - last, 3),
                "error": self.errors.get(index),
                "rounds": self.scrapes,
                "scraped_here": self.scraped_here[index],
            }
        return found

    async def _loop(self) -> None:
        while True:
            await self.scrape_all()
            await asyncio.sleep(self.settings.interval_s)

    def start(self) -> None:
        if self.targets:
            self._task.start()

    async def stop(self) -> None:
        await self._task.stop()
        clients, self._clients = self._clients, {}
        for client in clients.values():
            await client.aclose()
