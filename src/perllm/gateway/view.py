"""The live :class:`~perllm.domain.ClusterView` of real backends.

What the gateway observes:

- ``running`` / ``queued``: the requests in flight to a backend, split at the backend's
  ``max-concurrency`` (the first ``max-concurrency`` count as running, the rest as queued):
  its own, its replicas' (below), and those others send, as far as a scrape of the backend's
  metrics shows them;
- ``tokens_in_flight``: the prompt tokens of those requests plus the output tokens streamed
  back so far (for others' requests, what the backend's KV-cache use shows beyond them);
- ``bandwidth_mbps``: an EWMA of measured download rates of large non-streamed responses
  (:func:`perllm.physics.bandwidth_estimate`, as in the simulator), starting at the configured
  value;
- ``link_active_weight``: the total share of the uploads the gateway is pacing over a backend's
  link (``shape-uploads``, :mod:`perllm.gateway.shaping`); 0 on a link it does not shape, since
  it cannot see when a transfer is on the wire there (the estimates then assume a request gets
  its link's whole bandwidth);
- ``healthy``: the backend's circuit breaker is not open (see :mod:`perllm.gateway.health`);
- ``prefix_tokens``: the prompt blocks this gateway has sent to each backend recently
  (:class:`perllm.prefix.PrefixRecord`, hashed blocks, no prompt text), the prefix a backend
  with prefix caching may hold;
- ``slowdown``: a scraped backend's decode step over its datasheet's at the batch and cache it
  had (:meth:`LiveView.observe_step`), 1 where its engine has shown no step lately.

With replicas sharing a state store, the other replicas' in-flight requests and tokens
(:meth:`LiveView.set_remote`, from :mod:`perllm.gateway.shared_state`) are added to this
gateway's own in ``running``, ``queued`` and ``tokens_in_flight``.

A backend whose ``engine`` is scraped (:mod:`perllm.gateway.scrape`) reports every request it
queues or runs. What it reports beyond this gateway's and its replicas' requests in flight at
that moment is *others'* load (another gateway, a batch job, direct clients), added as well
until the next scrape (:meth:`LiveView.observe_scrape`); likewise its KV-cache use beyond the
tokens counted here. The scraped counts are never taken below the gateway's own: a call sent
since the scrape is counted at once, a scrape only adds what the gateway cannot see.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from perllm import physics
from perllm.cluster.build import ServerDescription, link_spec, server_spec
from perllm.domain import (
    EnergyWeights,
    LinkSpec,
    LoadArrays,
    RouterRequest,
    ServerLoad,
    ServerSpec,
)
from perllm.gateway.config import BackendConfig, GatewayConfig
from perllm.gateway.health import CircuitBreaker
from perllm.gateway.shaping import UploadShaper
from perllm.prefix import PrefixRecord

__all__ = ["MIN_BANDWIDTH_SAMPLE_BYTES", "LiveView", "build_specs"]

# Responses smaller than this are dominated by latency, not bandwidth: no sample is taken.
MIN_BANDWIDTH_SAMPLE_BYTES = 64_000

Array = npt.NDArray[np.float64]


def _description(backend: BackendConfig, time_scale: float) -> ServerDescription:
    return ServerDescription(
        name=backend.name,
        tier=backend.tier,
        hardware=backend.hardware,
        model=backend.model,
        dtype=backend.dtype,
        link=backend.name,
        max_batch=backend.max_concurrency,
        # Measured by `perllm profile`: it replaces the catalog's perf (and power, if known).
        profile=None if backend.profile is None else Path(backend.profile),
        power=backend.power,
        time_scale=time_scale,
    )


def build_specs(config: GatewayConfig) -> tuple[tuple[ServerSpec, ...], dict[str, LinkSpec]]:
    """One :class:`ServerSpec` and one link (named after the backend) per backend, built by
    :func:`perllm.cluster.build.server_spec` and :func:`~perllm.cluster.build.link_spec` with
    the config's ``time-scale``."""
    servers = tuple(server_spec(_description(b, config.time_scale)) for b in config.backends)
    links = [link_spec(b.name, b.link, config.time_scale) for b in config.backends]
    return servers, {link.name: link for link in links}


class LiveView:
    """Live load and health of the backends, as the policy sees them.

    Times are ``time.monotonic()`` seconds since the view was made.
    """

    def __init__(
        self,
        config: GatewayConfig,
        breakers: Sequence[CircuitBreaker],
        shapers: Sequence[UploadShaper | None] = (),
    ) -> None:
        self.servers, self.links = build_specs(config)
        self.weights = EnergyWeights(**config.energy_weights)
        self.admission_control = config.admission_control
        self.breakers = breakers
        n = len(self.servers)
        self._t0 = time.monotonic()
        self.in_flight = np.zeros(n)
        self.tokens = np.zeros(n)
        self.remote_in_flight = np.zeros(n)
        self.remote_tokens = np.zeros(n)
        self.others_in_flight = np.zeros(n)  # scraped: requests others sent
        self.others_tokens = np.zeros(n)
        self.kv_cache_use: list[float | None] = [None] * n  # scraped, for /stats
        self._outside = np.zeros(n)  # remote + others: added to this gateway's own
        self._outside_tokens = np.zeros(n)
        self.kv_capacity = np.array([float(s.kv_capacity_tokens) for s in self.servers])
        self.max_batch = np.array([float(s.max_batch) for s in self.servers])
        self.bandwidth = np.array([self.links[s.link].bandwidth_mbps for s in self.servers])
        self._zeros = np.zeros(n)
        self.slowdown = np.ones(n)  # scraped: each backend's step over its datasheet's
        self._shaped = [(i, shaper) for i, shaper in enumerate(shapers) if shaper is not None]
        self._index = {s.name: i for i, s in enumerate(self.servers)}
        self.prefixes = PrefixRecord.for_servers([s.kv_capacity_tokens for s in self.servers])

    def now(self) -> float:
        return time.monotonic() - self._t0

    def prefix_tokens(self, request: RouterRequest) -> Array:
        return self.prefixes.tokens(request.prefix_blocks, request.prompt_tokens)

    def healthy(self) -> npt.NDArray[np.bool_]:
        now = time.monotonic()
        return np.array([b.available(now) for b in self.breakers], dtype=bool)

    def load(self, server: int) -> ServerLoad:
        occupied = self.in_flight[server] + self._outside[server]
        running = min(occupied, self.max_batch[server])
        return ServerLoad(
            queued=int(occupied - running),
            running=int(running),
            tokens_in_flight=int(self.tokens[server] + self._outside_tokens[server]),
            healthy=bool(self.healthy()[server]),
        )

    def load_arrays(self, allowed: npt.NDArray[np.bool_] | None = None) -> LoadArrays:
        """Every backend's load; ``allowed`` (if given) further restricts ``healthy``."""
        occupied = self.in_flight + self._outside
        running = np.minimum(occupied, self.max_batch)
        healthy = self.healthy() if allowed is None else self.healthy() & allowed
        return LoadArrays(
            occupied - running,
            running,
            self.tokens + self._outside_tokens,
            self.bandwidth.copy(),
            self._active_weights(),
            healthy,
            self.slowdown.copy(),
        )

    def _active_weights(self) -> Array:
        if not self._shaped:
            return self._zeros
        weights = np.zeros(len(self.servers))
        for server, shaper in self._shaped:
            weights[server] = shaper.active_weight
        return weights

    def bandwidth_mbps(self, link: str) -> float:
        return float(self.bandwidth[self._index[link]])

    def link_active_weight(self, link: str) -> float:
        return float(self._active_weights()[self._index[link]])

    # --- load from outside this gateway ---------------------------------------------------

    def set_remote(self, in_flight: Array, tokens: Array) -> None:
        """The other replicas' requests and tokens in flight, per backend."""
        self.remote_in_flight = in_flight
        self.remote_tokens = tokens
        self._fuse()

    def observe_scrape(self, server: int, requests: float, kv_cache_use: float | None) -> None:
        """A scrape of ``server``: the ``requests`` it queues and runs and its KV-cache use
        (0-1, ``None`` where not reported); what they show beyond the gateway's and its
        replicas' own becomes others' load."""
        mine = self.in_flight[server] + self.remote_in_flight[server]
        tokens = 0.0
        if kv_cache_use is not None:
            held = kv_cache_use * self.kv_capacity[server]
            tokens = max(held - self.tokens[server] - self.remote_tokens[server], 0.0)
        self._others(server, max(requests - mine, 0.0), tokens, kv_cache_use)

    def observe_step(self, server: int, step_s: float, running: float) -> None:
        """A scrape of ``server`` showed its decode steps taking ``step_s`` (its generation
        time over its tokens since the last scrape) with ``running`` requests in its batch: its
        slowdown against its datasheet at that batch and at the cache it holds (its reported
        KV-cache use, else the tokens counted here)."""
        use = self.kv_cache_use[server]
        held = (
            use * self.kv_capacity[server]
            if use is not None
            else self.tokens[server] + self._outside_tokens[server]
        )
        batch = max(round(running), 1)
        self.slowdown[server] = self.servers[server].perf.slowdown(step_s, batch, held)

    def forget_step(self, server: int) -> None:
        """``server`` has shown no decode step lately: take it as fast as its datasheet."""
        self.slowdown[server] = 1.0

    def observe_others(
        self,
        server: int,
        requests: float,
        tokens: float,
        kv_cache_use: float | None,
        slowdown: float,
    ) -> None:
        """Others' load on ``server``, its KV-cache use and its slowdown, as a replica's scrape
        found them."""
        self._others(server, requests, tokens, kv_cache_use)
        self.slowdown[server] = slowdown

    def _others(
        self, server: int, requests: float, tokens: float, kv_cache_use: float | None
    ) -> None:
        """Others' requests and tokens in flight on ``server``, and its KV-cache use."""
        self.others_in_flight[server] = requests
        self.others_tokens[server] = tokens
        self.kv_cache_use[server] = kv_cache_use
        self._fuse()

    def forget_scrape(self, server: int) -> None:
        """``server``'s last scrape is stale: count no load of others there."""
        self.others_in_flight[server] = 0.0
        self.others_tokens[server] = 0.0
        self.kv_cache_use[server] = None
        self.slowdown[server] = 1.0
        self._fuse()

    def _fuse(self) -> None:
        self._outside = self.remote_in_flight + self.others_in_flight
        self._outside_tokens = self.remote_tokens + self.others_tokens

    # --- bookkeeping by the request path -------------------------------------------------

    def begin(self, server: int, request: RouterRequest) -> int:
        """Count a request in flight (and record its prompt blocks as sent to ``server``);
        returns the batch it joins (itself included)."""
        self.in_flight[server] += 1
        self.tokens[server] += request.prompt_tokens
        self.prefixes.sent(server, request.prefix_blocks)
        occupied = self.in_flight[server] + self._outside[server]
        return int(min(occupied, self.max_batch[server]))

    def add_tokens(self, server: int, tokens: int) -> None:
        self.tokens[server] += tokens

    def end(self, server: int, tokens: int) -> None:
        """Remove a finished request and the ``tokens`` it held (prompt plus streamed)."""
        self.in_flight[server] = max(self.in_flight[server] - 1, 0.0)
        self.tokens[server] = max(self.tokens[server] - tokens, 0.0)

    def observe_transfer(self, server: int, size_bytes: int, seconds: float) -> None:
        """Fold a measured download rate into the link's bandwidth estimate."""
        if size_bytes < MIN_BANDWIDTH_SAMPLE_BYTES or seconds <= 0:
            return
        sample = size_bytes * 8.0 / seconds / 1e6
        self.bandwidth[server] = physics.bandwidth_estimate(self.bandwidth[server], sample)


class RestrictedView:
    """A view of ``base`` where only the ``allowed`` backends may be healthy (per request)."""

    def __init__(self, base: LiveView, allowed: npt.NDArray[np.bool_]) -> None:
        self._base = base
        self._allowed = allowed
        self.servers = base.servers
        self.links = base.links
        self.weights = base.weights
        self.admission_control = base.admission_control

    def now(self) -> float:
        return self._base.now()

    def load(self, server: int) -> ServerLoad:
        load = self._base.load(server)
        return dataclasses.replace(load, healthy=load.healthy and bool(self._allowed[server]))

    def load_arrays(self) -> LoadArrays:
        return self._base.load_arrays(self._allowed)

    def prefix_tokens(self, request: RouterRequest) -> Array:
        return self._base.prefix_tokens(request)

    def bandwidth_mbps(self, link: str) -> float:
        return self._base.bandwidth_mbps(link)

    def link_active_weight(self, link: str) -> float:
        return self._base.link_active_weight(link)
