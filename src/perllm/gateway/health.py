"""Dependability: a circuit breaker per backend and periodic health checks.

Circuit breaker (per backend): *closed* while requests succeed; *open* after
``failure_threshold`` consecutive failures (requests, retries and health checks all count);
*half-open* once ``cooldown_s`` has passed since it opened, when requests and health checks may
try the backend again: a success closes the circuit, a failure opens it for another cooldown.
The live view marks a backend unhealthy exactly while its circuit is open and cooling down.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

import httpx

from perllm.gateway.background import Background
from perllm.gateway.config import BackendConfig, HealthConfig

__all__ = ["CircuitBreaker", "HealthChecker"]

log = logging.getLogger(__name__)


class CircuitBreaker:
    """Closed / open / half-open breaker; every method takes the time (monotonic seconds)."""

    def __init__(self, failure_threshold: int, cooldown_s: float, name: str = "backend") -> None:
        self.name = name  # the backend's name, for the log
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self.failures = 0
        self.is_open = False
        self.opened_at = 0.0

    def state(self, now: float) -> str:
        if not self.is_open:
            return "closed"
        return "half-open" if now - self.opened_at >= self.cooldown_s else "open"

    def available(self, now: float) -> bool:
        """Whether requests may go to the backend now (closed or half-open)."""
        return self.state(now) != "open"

    def record_success(self) -> None:
        self.failures = 0
        self.is_open = False

    def record_failure(self, now: float) -> None:
        self.failures += 1
        if self.is_open or self.failures >= self.failure_threshold:
            if not self.is_open:
                log.warning(
                    "circuit of %s opened after %d consecutive failures", self.name, self.failures
                )
            self.is_open = True
            self.opened_at = now


class HealthChecker:
    """Checks every backend each ``interval_s``.

    Parameters
    ----------
    backends
        The backends, indexed like the breakers.
    breakers
        One :class:`CircuitBreaker` per backend, shared with the request path.
    settings
        Interval, path and breaker settings.
    client
        The shared upstream client.
    """

    def __init__(
        self,
        backends: Sequence[BackendConfig],
        breakers: Sequence[CircuitBreaker],
        settings: HealthConfig,
        client: httpx.AsyncClient,
    ) -> None:
        self.backends = backends
        self.breakers = breakers
        self.settings = settings
        self.client = client
        self._task = Background("perllm-health", self._loop)

    async def check(self, index: int) -> bool:
        """Probe one backend once; updates its breaker (and power reading). Returns health."""
        backend = self.backends[index]
        breaker = self.breakers[index]
        timeout = min(self.settings.interval_s, 5.0)
        try:
            response = await self.client.get(backend.base_url + self.settings.path, timeout=timeout)
            ok = response.status_code < 500
        except httpx.HTTPError:
            ok = False
        now = time.monotonic()
        if ok:
            if breaker.available(now):
                breaker.record_success()
        else:
            breaker.record_failure(now)
            log.debug("health check failed for backend %s", backend.name)
        return ok

    async def _loop(self) -> None:
        while True:
            await asyncio.gather(*(self.check(i) for i in range(len(self.backends))))
            await asyncio.sleep(self.settings.interval_s)

    def start(self) -> None:
        self._task.start()

    async def stop(self) -> None:
        await self._task.stop()
