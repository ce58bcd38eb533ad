"""Prometheus metrics of one gateway app, in a registry of its own (never the global one).

==================================================  ==========================================
metric                                              labels
==================================================  ==========================================
``perllm_gateway_requests_total``                   backend, status (HTTP status or ``error``)
``perllm_gateway_outcomes_total``                   outcome (``answered`` / ``error`` /
                                                    ``stream-error`` / ``abandoned``), one per
                                                    completion call
``perllm_gateway_request_latency_seconds``          backend (arrival to last byte)
``perllm_gateway_deadlines_total``                  backend, outcome (``met`` / ``missed``)
``perllm_energy_joules_total``                      backend, service_class, part (transmission /
                                                    inference / idle), source (``measured`` by
                                                    the backend's power source, or
                                                    ``modelled``); idle has class ``none``
``perllm_gateway_decisions_total``                  backend (policy decisions, retries too)
``perllm_gateway_retries_total``                    backend (the one that failed)
``perllm_gateway_in_flight``                        backend
``perllm_gateway_backend_healthy``                  backend (1 healthy, 0 circuit open)
==================================================  ==========================================

The requests and outcomes counters count each call's ending (:meth:`GatewayMetrics.on_end`, a
sink of every :class:`~perllm.gateway.call.CallContext`): requests answered without a backend
(bad input, no backend available) carry backend ``none``, and a call whose client went away
before any answer went out counts an outcome but no request.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from perllm.domain import Feedback
from perllm.gateway.outcome import OUTCOMES, Ending

__all__ = ["CONTENT_TYPE_LATEST", "BackendTally", "GatewayMetrics"]

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class GatewayMetrics:
    """The gateway's Prometheus collectors, registered in a fresh :class:`CollectorRegistry`."""

    def __init__(self, backends: Sequence[str]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.backends = tuple(backends)
        r = self.registry
        self.requests = Counter(
            "perllm_gateway_requests", "Requests answered", ["backend", "status"], registry=r
        )
        self.outcomes = Counter(
            "perllm_gateway_outcomes",
            "How completion calls ended",
            ["outcome"],
            registry=r,
        )
        for outcome in OUTCOMES:
            self.outcomes.labels(outcome)  # exported at 0 from the start
        self.latency = Histogram(
            "perllm_gateway_request_latency_seconds",
            "Processing time, arrival to last byte",
            ["backend"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.deadlines = Counter(
            "perllm_gateway_deadlines",
            "Deadlines met or missed",
            ["backend", "outcome"],
            registry=r,
        )
        self.energy = Counter(
            "perllm_energy_joules",
            "Energy by backend, service class and part, measured or modelled",
            ["backend", "service_class", "part", "source"],
            registry=r,
        )
        self.decisions = Counter(
            "perllm_gateway_decisions", "Policy decisions", ["backend"], registry=r
        )
        self.retries = Counter(
            "perllm_gateway_retries", "Attempts retried elsewhere", ["backend"], registry=r
        )
        self.in_flight = Gauge(
            "perllm_gateway_in_flight", "Requests in flight", ["backend"], registry=r
        )
        self.healthy = Gauge(
            "perllm_gateway_backend_healthy",
            "1 if the backend's circuit is not open",
            ["backend"],
            registry=r,
        )

    def on_end(self, ending: Ending) -> None:
        """Count a call's ending (a sink of each call's ending): its outcome, and its backend and
        status if an answer went out."""
        if ending.responded:
            self.requests.labels(ending.backend, str(ending.status)).inc()
        self.outcomes.labels(ending.outcome).inc()

    def decided(self, server: int) -> None:
        self.decisions.labels(self.backends[server]).inc()

    def retried(self, server: int) -> None:
        self.retries.labels(self.backends[server]).inc()

    def on_feedback(self, now: float, feedback: Feedback) -> None:
        """Record one ended attempt's latency and deadline outcome (unless it failed) (a
        :class:`~perllm.domain.FeedbackSink`)."""
        backend = self.backends[feedback.decision.server]
        if not feedback.failed:
            self.latency.labels(backend).observe(feedback.processing_s)
            self.deadlines.labels(backend, "met" if feedback.met else "missed").inc()

    def spent(
        self, backend: str, service_class: str, part: str, source: str, joules: float
    ) -> None:
        """Count energy (see :class:`perllm.gateway.energy.EnergyAccounts`)."""
        self.energy.labels(backend, service_class, part, source).inc(joules)

    def refresh(self, in_flight: Sequence[float], healthy: Sequence[bool]) -> None:
        """Update the gauges (called when ``/metrics`` is scraped)."""
        for name, count, ok in zip(self.backends, in_flight, healthy, strict=True):
            self.in_flight.labels(name).set(count)
            self.healthy.labels(name).set(1.0 if ok else 0.0)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class BackendTally(Mapping[str, int]):
    """A count per backend of the feedback it is handed (a :class:`~perllm.domain.FeedbackSink`),
    or only of the failed ones (``failed_only``): the ``answered`` and ``failures`` of
    ``/stats``. Reads like a mapping from backend name to count."""

    def __init__(self, backends: Sequence[str], *, failed_only: bool = False) -> None:
        self.backends = tuple(backends)
        self.failed_only = failed_only
        self._counts = dict.fromkeys(self.backends, 0)

    def on_feedback(self, now: float, feedback: Feedback) -> None:
        if feedback.failed or not self.failed_only:
            self._counts[self.backends[feedback.decision.server]] += 1

    def __getitem__(self, backend: str) -> int:
        return self._counts[backend]

    def __iter__(self) -> Iterator[str]:
        return iter(self._counts)

    def __len__(self) -> int:
        return len(self._counts)
