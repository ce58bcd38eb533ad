"""The gateway's settings: YAML validated by pydantic (kebab-case keys, unknown keys refused).

A gateway config names its backends (URL, tier, the models each serves, the perf-catalog
deployment that predicts its speed and power, its link), the scheduling policy, the service
classes with their default deadlines, and the operational limits::

    backends:
      - name: edge-0
        url: http://10.0.0.5:8000
        tier: edge
        models: {llama: llama-2-7b-q4}     # public name -> the backend's name (or a list)
        hardware: rtx-3090
        model: llama-2-7b
        dtype: q4
        link: {bandwidth-mbps: 100, rtt-ms: 4, tx-power-w: 2}
        max-concurrency: 8
    policy: {type: cs-ucb, params: {exploration: 0.3}}
    classes:
      default: {deadline-ms: 30000, output-tokens: 128}
    state-file: perllm-state.json
    state-store: redis://127.0.0.1:6379/0   # optional: replicas share what they learn and load

``time-scale`` multiplies every perf-model time and link RTT: set it to the emulators'
``--time-scale`` when the backends are emulated faster than real time (``perllm testbed`` does).

A backend's deployment settings (``hardware``, ``model``, ``dtype``, ``profile``, ``power``,
``link``) are the ones scenarios use (:mod:`perllm.cluster.parts`), and its spec is built by the
same builder (:mod:`perllm.cluster.build`, see :func:`perllm.gateway.view.build_specs`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from perllm.cluster.build import resolve_profile
from perllm.cluster.parts import (
    Dtype,
    EnergyWeightsConfig,
    HardwareName,
    LinkConfig,
    ModelName,
    PowerConfig,
)
from perllm.cluster.settings import KebabModel, validation_message, yaml_message
from perllm.domain import Tier
from perllm.errors import InputError
from perllm.perf.catalog import MODELS

# The ``max_tokens`` cap of a backend whose model's context length is unknown.
DEFAULT_MAX_TOKENS = 32_768

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "BackendConfig",
    "ClassConfig",
    "Engine",
    "GatewayConfig",
    "HealthConfig",
    "KeyLimitsConfig",
    "LimitsConfig",
    "LinkConfig",
    "MetricNames",
    "PolicySpec",
    "PowerConfig",
    "PowerSourceConfig",
    "ScrapeConfig",
    "StateSyncConfig",
    "TimeoutsConfig",
    "load_config",
    "parse_config",
    "store_url_problem",
]


def store_url_problem(url: str) -> str | None:
    """What is wrong with a state-store URL (``redis://HOST:PORT/DB``), or ``None``."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        return "expected redis://HOST:PORT/DB"
    try:
        parts.port  # noqa: B018 - parsing it is the check
    except ValueError:
        return "the port must be a number from 0 to 65535"
    if not parts.hostname:
        return "no host (expected redis://HOST:PORT/DB)"
    db = parts.path.strip("/")
    if db and not db.isdigit():
        return "the database must be a number (redis://HOST:PORT/0)"
    return None


Engine = Literal["vllm", "sglang", "llamacpp", "custom"]


class MetricNames(KebabModel):
    """The Prometheus metrics a ``custom`` engine reports its load in (gauges; samples of one
    name are summed over their labels), and optionally its decoding counters: the seconds
    between output tokens and the tokens, whose growth between scrapes is its decode step."""

    queued: str = Field(min_length=1)
    running: str = Field(min_length=1)
    kv_cache: str | None = Field(default=None, min_length=1)  # a fraction in [0, 1]
    decode_seconds: str | None = Field(default=None, min_length=1)
    decode_tokens: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _decoding_in_pairs(self) -> MetricNames:
        if (self.decode_seconds is None) != (self.decode_tokens is None):
            raise ValueError("decode-seconds and decode-tokens go together: name both or neither")
        return self


EnergyUnit = Literal["uJ", "mJ", "J", "kJ", "Wh", "kWh"]
PowerUnit = Literal["mW", "W", "kW"]


class PowerSourceConfig(KebabModel):
    """Where a backend's power or energy is measured (:mod:`perllm.gateway.power`): a
    Prometheus ``metric`` (an energy counter, taken in differences, or a power gauge, integrated
    between readings, as its ``unit`` says) at ``url`` (default: the backend's metrics URL),
    summed over the samples whose labels include ``labels``; or a ``local`` reading, when the
    gateway runs on the backend's node (``nvml``: the energy counter of GPU ``gpu``; ``rapl``:
    the CPU package counter)."""

    metric: str | None = Field(default=None, min_length=1)
    unit: EnergyUnit | PowerUnit | None = None
    url: str | None = Field(default=None, pattern=r"^https?://")
    labels: dict[str, str] = {}
    local: Literal["nvml", "rapl"] | None = None
    gpu: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _one_source(self) -> PowerSourceConfig:
        if (self.metric is None) == (self.local is None):
            raise ValueError("give either metric (with its unit) or local: nvml | rapl")
        if self.metric is not None and self.unit is None:
            raise ValueError("metric needs its unit (uJ, mJ, J, kJ, Wh, kWh; or mW, W, kW)")
        if self.local is not None and (self.unit or self.url or self.labels):
            raise ValueError("local takes no unit, url or labels")
        return self


class BackendConfig(KebabModel):
    """One OpenAI-compatible backend."""

    name: str = Field(min_length=1)
    url: str = Field(pattern=r"^https?://")
    tier: Tier
    models: dict[str, str] | list[str] = Field(min_length=1)
    hardware: HardwareName
    model: ModelName
    dtype: Dtype = "fp16"
    profile: str | None = None  # a `perllm profile` YAML: measured timing replaces the catalog's
    power: PowerConfig | None = None
    link: LinkConfig = LinkConfig()
    max_concurrency: int = Field(default=32, ge=1)
    # Measured power or energy; without it, energy comes from the power profile.
    power_source: PowerSourceConfig | None = None
    api_key: str | None = None
    # The most output tokens (``max_tokens``) a call may ask of this backend; default: the
    # catalog model's context length, else :data:`DEFAULT_MAX_TOKENS`.
    max_tokens: int | None = Field(default=None, ge=1)
    # The context window (prompt plus output tokens) of the served model; default: the catalog
    # model's, where known. A call whose prompt and ``max_tokens`` cannot fit is not sent here.
    context_tokens: int | None = Field(default=None, ge=1)
    # The backend orders its queue by a request's ``priority`` (vLLM started with
    # ``--scheduling-policy priority``, or ``perllm emulate``): send the policy's priority in the
    # body. Off by default, as a vLLM with first-come-first-served scheduling refuses it.
    priority_scheduling: bool = False
    # The serving engine: when set, its ``/metrics`` are scraped for the load it carries,
    # whoever sent it (:mod:`perllm.gateway.scrape`). ``custom`` names its metrics in ``metrics``.
    engine: Engine | None = None
    metrics: MetricNames | None = None
    metrics_url: str | None = Field(default=None, pattern=r"^https?://")  # default: URL/metrics

    @model_validator(mode="after")
    def _engine_metrics(self) -> BackendConfig:
        if self.engine == "custom" and self.metrics is None:
            raise ValueError("engine: custom needs metrics: {queued, running[, kv-cache]}")
        if self.metrics is not None and self.engine != "custom":
            raise ValueError("metrics names are for engine: custom only")
        return self

    @property
    def scrape_url(self) -> str:
        """Where the engine's Prometheus metrics are read."""
        return self.metrics_url or self.base_url + "/metrics"

    @property
    def max_output_tokens(self) -> int:
        """The ``max_tokens`` cap of calls to this backend (see ``max-tokens``)."""
        if self.max_tokens is not None:
            return self.max_tokens
        context = self.context_window
        return context if context is not None else DEFAULT_MAX_TOKENS

    @property
    def context_window(self) -> int | None:
        """The context window in tokens (see ``context-tokens``), ``None`` where unknown."""
        if self.context_tokens is not None:
            return self.context_tokens
        return MODELS[self.model].context_tokens

    @property
    def model_map(self) -> dict[str, str]:
        """Public model name -> the name this backend knows it by."""
        if isinstance(self.models, list):
            return {name: name for name in self.models}
        return dict(self.models)

    @property
    def base_url(self) -> str:
        """The server root: the URL without a trailing ``/`` or ``/v1``."""
        return self.url.rstrip("/").removesuffix("/v1")


class PolicySpec(KebabModel):
    type: str = "cs-ucb"
    params: dict[str, Any] = {}
    seed: int = Field(default=0, ge=0)


class ClassConfig(KebabModel):
    """A service class: its default deadline and the output length assumed without max_tokens."""

    deadline_ms: float = Field(gt=0.0)
    output_tokens: int = Field(default=128, ge=1)


class KeyLimitsConfig(KebabModel):
    """Limits per API key (per client address when no ``api-keys`` are set); ``429`` past them.

    ``concurrency``: calls in flight at once; ``rate-rps`` with ``burst``: a token bucket of
    calls per second. Unset means unlimited.
    """

    concurrency: int | None = Field(default=None, ge=1)
    rate_rps: float | None = Field(default=None, gt=0.0)
    burst: int = Field(default=10, ge=1)


class LimitsConfig(KebabModel):
    max_body_bytes: int = Field(default=10_000_000, ge=1)
    max_upstream_connections: int = Field(default=1024, ge=1)
    max_records: int = Field(default=100_000, ge=1)
    per_key: KeyLimitsConfig = KeyLimitsConfig()


class TimeoutsConfig(KebabModel):
    """Timeouts (seconds).

    ``connect-s`` and ``read-s``: upstream, connecting and waiting for any byte of a response.
    ``request-s`` and ``deadline-factor``: the total time one call may take, arrival to last
    byte, is ``min(request-s, deadline-factor * its deadline)``; past it the upstream call is
    cancelled and the client gets a ``504`` (an SSE error event once a stream has begun).
    ``body-s``: how long a client may take to send a call's body (a ``408`` past it).
    ``drain-s``: on shutdown, how long calls in flight may still run, and how long open client
    connections stay open to be told, with their next answer, that they will close.
    ``keep-alive-s``: how long an idle client connection is kept open (longer than clients keep
    theirs, so that a client never sends a call on a connection the gateway is closing).
    """

    connect_s: float = Field(default=2.0, gt=0.0)
    read_s: float = Field(default=60.0, gt=0.0)
    request_s: float = Field(default=600.0, gt=0.0)
    deadline_factor: float = Field(default=20.0, gt=0.0)
    body_s: float = Field(default=30.0, gt=0.0)
    drain_s: float = Field(default=30.0, ge=0.0)
    keep_alive_s: float = Field(default=75.0, gt=0.0)

    def limit_s(self, deadline_s: float) -> float:
        """The total time limit of a call with this deadline."""
        return min(self.request_s, self.deadline_factor * deadline_s)


class HealthConfig(KebabModel):
    """Health checks and the circuit breaker around each backend."""

    interval_s: float = Field(default=5.0, gt=0.0)
    path: str = "/health"
    failure_threshold: int = Field(default=3, ge=1)
    cooldown_s: float = Field(default=10.0, gt=0.0)


class ScrapeConfig(KebabModel):
    """Scraping the backends that name an ``engine`` (:mod:`perllm.gateway.scrape`)."""

    interval_s: float = Field(default=1.0, gt=0.0, le=60.0)
    stale_s: float = Field(default=5.0, gt=0.0)  # a scrape older than this is forgotten

    @model_validator(mode="after")
    def _stale_after_two(self) -> ScrapeConfig:
        if self.stale_s < 2 * self.interval_s:
            raise ValueError("stale-s must be at least twice interval-s")
        return self


class StateSyncConfig(KebabModel):
    """How replicas sharing a ``state-store`` sync (see :mod:`perllm.gateway.shared_state`)."""

    interval_s: float = Field(default=0.5, gt=0.0, le=60.0)  # the learned statistics
    load_interval_s: float = Field(default=0.1, gt=0.0, le=60.0)  # in-flight load alone
    lease_s: float = Field(default=5.0, gt=0.0)
    namespace: str = Field(default="perllm", min_length=1, pattern=r"^[A-Za-z0-9_.:-]+$")

    @model_validator(mode="after")
    def _lease_outlives_syncs(self) -> StateSyncConfig:
        if self.lease_s < 2 * self.interval_s:
            raise ValueError("lease-s must be at least twice interval-s")
        if self.load_interval_s > self.interval_s:
            raise ValueError("load-interval-s must be at most interval-s")
        return self


class GatewayConfig(KebabModel):
    backends: list[BackendConfig] = Field(min_length=1)
    policy: PolicySpec = PolicySpec()
    classes: dict[str, ClassConfig] = {"default": ClassConfig(deadline_ms=30_000.0)}
    default_class: str = "default"
    state_file: str | None = None
    state_store: str | None = None
    state_sync: StateSyncConfig = StateSyncConfig()
    api_keys: list[str] = Field(default=[], max_length=10_000)
    # ``/metrics`` needs an API key too (like ``/v1/*``); off by default for scrapers.
    metrics_auth: bool = False
    limits: LimitsConfig = LimitsConfig()
    timeouts: TimeoutsConfig = TimeoutsConfig()
    health: HealthConfig = HealthConfig()
    scrape: ScrapeConfig = ScrapeConfig()
    energy_weights: EnergyWeightsConfig = {}
    admission_control: bool = False
    time_scale: float = Field(default=1.0, gt=0.0)

    @field_validator("state_store")
    @classmethod
    def _store_url(cls, value: str | None) -> str | None:
        problem = None if value is None else store_url_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> GatewayConfig:
        names = [b.name for b in self.backends]
        if len(set(names)) != len(names):
            raise ValueError("backend names must be unique")
        if self.default_class not in self.classes:
            raise ValueError(f"default-class {self.default_class!r} is not in classes")
        if any(not key for key in self.api_keys):
            raise ValueError("api-keys must not be empty strings")
        if self.metrics_auth and not self.api_keys:
            raise ValueError("metrics-auth needs api-keys")
        return self

    def public_models(self) -> list[str]:
        """Union of the public model names of every backend, in config order."""
        seen: dict[str, None] = {}
        for backend in self.backends:
            seen.update(dict.fromkeys(backend.model_map))
        return list(seen)


def parse_config(data: Any, source: str) -> GatewayConfig:
    """Validate a gateway config mapping; errors become a one-line :class:`InputError`."""
    if not isinstance(data, dict):
        raise InputError(f"{source}: a gateway config must be a YAML mapping")
    try:
        return GatewayConfig.model_validate(data)
    except ValidationError as err:
        raise InputError(validation_message(err, source)) from None


def load_config(path: str | Path) -> GatewayConfig:
    """Read and validate a gateway YAML file (one-line :class:`InputError` if anything is wrong)."""
    file = Path(path)
    if file.is_dir():
        raise InputError(f"--config: {str(file)!r} is a directory, not a YAML file")
    if not file.is_file():
        raise InputError(f"--config: file not found: {str(file)!r}")
    try:
        data = yaml.safe_load(file.read_text())
    except yaml.YAMLError as err:
        raise InputError(yaml_message(err, str(file))) from None
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"--config: cannot read {str(file)!r}: {err}") from None
    config = parse_config(data, str(file))
    # A relative `profile:` is relative to the config file, wherever the gateway is started.
    backends = [
        b
        if b.profile is None
        else b.model_copy(
            update={"profile": str(resolve_profile(b.profile, str(file), f"backends.{i}.profile"))}
        )
        for i, b in enumerate(config.backends)
    ]
    return config.model_copy(update={"backends": backends})
