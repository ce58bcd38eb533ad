"""The emulator's ``GET /metrics``: what a vLLM server and a DCGM exporter on its GPU would show,
read from the emulator's own engine at each scrape.

vLLM's load gauges, labelled ``model_name`` and ``engine="0"`` as vLLM labels them:

- ``vllm:num_requests_running``: requests in the batch, the one in prefill included;
- ``vllm:num_requests_waiting``: requests queued for a place in the batch;
- ``vllm:kv_cache_usage_perc``: a fraction in [0, 1], the KV-cache tokens the running requests
  hold (prompt and generated tokens) over the deployment's KV capacity,
  :meth:`perllm.perf.model.Deployment.kv_capacity_tokens` (device memory less the reserve and
  the weights, over the model's KV bytes per token), as the simulator counts it. The emulator
  does not preempt, so a cache held beyond the capacity reads 1. An ``instant`` server holds
  nothing and reads 0.

DCGM's fields, labelled ``gpu="0"``, ``UUID``, ``device="nvidia0"``, ``modelName`` (the
profile's hardware) and ``Hostname`` as dcgm-exporter labels them:

- ``DCGM_FI_DEV_POWER_USAGE`` (gauge, W): the profile's ``busy_w(batch)`` while requests run,
  ``idle_w`` otherwise (0 for ``instant``);
- ``DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION`` (counter, mJ): that power integrated over the
  emulated server's clock since the emulator was built, exactly at each change of batch
  (:class:`perllm.emulator.energy.EnergyMeter`). The clock is the *emulated* one,
  :meth:`perllm.emulator.engine.BatchEngine.emulated_s`: a prefill or decode step counts its
  perf-model duration and an idle period its real length over ``time_scale``, so the counter
  is the model's energy of the emulated work at any time scale (a ``0.1`` emulator's counter
  grows ten times faster than real time would give).

The exposition is built by ``prometheus_client`` from a :class:`CollectorRegistry` per emulator.
``prometheus_client`` names a counter's HELP and TYPE lines ``<name>_total``, while
dcgm-exporter writes its counters, metadata and samples alike, without that suffix;
:func:`exposition` renames the energy counter's two metadata lines to DCGM's name, so the
scraped text is dcgm-exporter's (``prometheus_client``'s parser reads it, like DCGM's own, as a
counter family ``DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION`` with a sample ``..._total``).
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from perllm.emulator.engine import BatchEngine

__all__ = [
    "CONTENT_TYPE",
    "ENERGY_METRIC",
    "POWER_METRIC",
    "EmulatorCollector",
    "exposition",
    "kv_usage",
    "metrics_registry",
]

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
POWER_METRIC = "DCGM_FI_DEV_POWER_USAGE"
ENERGY_METRIC = "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"
VLLM_LABELS = ("model_name", "engine")


def kv_usage(kv_tokens: int, capacity_tokens: int | None) -> float:
    """The KV-cache fraction in use, in [0, 1]: ``kv_tokens / capacity_tokens``, 1 once the
    tokens reach the capacity (a capacity of 0 is full as soon as it holds a token), and 0 for
    a server without a KV capacity (``None``)."""
    if capacity_tokens is None or kv_tokens <= 0:
        return 0.0
    if kv_tokens >= capacity_tokens:
        return 1.0
    return kv_tokens / capacity_tokens


class EmulatorCollector:
    """Collects the emulator's vLLM and DCGM metrics from its engine at each scrape.

    Parameters
    ----------
    engine
        The emulator's engine (its batch, queue, KV tokens, power and energy).
    model
        The served model name (vLLM's ``model_name`` label).
    kv_capacity_tokens
        The deployment's KV capacity in tokens, ``None`` for an ``instant`` server.
    hardware
        The GPU's name (DCGM's ``modelName`` label).
    """

    def __init__(
        self, engine: BatchEngine, model: str, kv_capacity_tokens: int | None, hardware: str
    ) -> None:
        self.engine = engine
        self.kv_capacity_tokens = kv_capacity_tokens
        self.vllm_values = [model, "0"]
        self.gpu = {
            "gpu": "0",
            "UUID": f"GPU-{uuid.uuid4()}",
            "device": "nvidia0",
            "modelName": hardware,
            "Hostname": socket.gethostname(),
        }

    def _vllm_gauge(self, name: str, help_text: str, value: float) -> GaugeMetricFamily:
        family = GaugeMetricFamily(name, help_text, labels=VLLM_LABELS)
        family.add_metric(self.vllm_values, value)
        return family

    def collect(self) -> Iterator[Metric]:
        engine = self.engine
        yield self._vllm_gauge(
            "vllm:num_requests_running",
            "Number of requests in model execution batches.",
            engine.batch,
        )
        yield self._vllm_gauge(
            "vllm:num_requests_waiting",
            "Number of requests waiting to be processed.",
            engine.queued,
        )
        yield self._vllm_gauge(
            "vllm:kv_cache_usage_perc",
            "KV-cache usage. 1 means 100 percent usage.",
            kv_usage(engine.kv_tokens, self.kv_capacity_tokens),
        )
        power = GaugeMetricFamily(POWER_METRIC, "Power draw (in W).", labels=list(self.gpu))
        power.add_metric(list(self.gpu.values()), engine.power_w())
        yield power
        energy = Metric(ENERGY_METRIC, "Total energy consumption since boot (in mJ).", "counter")
        energy.add_sample(ENERGY_METRIC, dict(self.gpu), engine.energy_j() * 1000.0)
        yield energy


def metrics_registry(collector: EmulatorCollector) -> CollectorRegistry:
    """A registry of its own for one emulator, holding ``collector``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    """The registry's metrics in Prometheus text format 0.0.4, the DCGM energy counter under
    dcgm-exporter's name (see the module docstring)."""
    text = generate_latest(registry)
    for line in (b"# HELP ", b"# TYPE "):
        text = text.replace(
            line + ENERGY_METRIC.encode() + b"_total ", line + ENERGY_METRIC.encode() + b" "
        )
    return text
