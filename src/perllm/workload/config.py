"""Workload settings as they appear in YAML: pydantic models with kebab-case keys.

These models are the edge of the workload package; :mod:`perllm.workload.lengths` and
:mod:`perllm.workload.generator` turn them into frozen dataclasses and requests.
"""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import Field, ValidationError, model_validator

from perllm.cluster.settings import KebabModel, validation_message
from perllm.domain import BYTES_PER_TOKEN, RESPONSE_OVERHEAD_BYTES
from perllm.errors import InputError

__all__ = [
    "BYTES_PER_TOKEN",
    "RESPONSE_OVERHEAD_BYTES",
    "ArrivalConfig",
    "DeadlineConfig",
    "LengthConfig",
    "LengthPreset",
    "ServiceClassConfig",
    "TraceConfig",
    "WorkloadConfig",
    "load_workload_config",
]


LengthPreset = Literal[
    "sharegpt-prompt",
    "sharegpt-output",
    "alpaca-prompt",
    "alpaca-output",
    "azure-conv-prompt",
    "azure-conv-output",
    "azure-code-prompt",
    "azure-code-output",
]


class LengthConfig(KebabModel):
    """A token-length distribution: a named preset or explicit parameters.

    - ``lognormal``: fitted from ``mean`` and ``median`` (``mu = ln(median)``,
      ``sigma = sqrt(2 ln(mean / median))``); when ``median`` is absent it defaults to
      ``mean / 1.6``, a typical skew of chat-length distributions.
    - ``fixed``: always ``round(mean)``.
    - ``uniform``: integers in ``[low, high]``.

    Draws are clipped to ``[min-tokens, max-tokens]``. The same model describes byte sizes
    (e.g. attachments); then "tokens" means bytes.
    """

    preset: LengthPreset | None = None
    kind: Literal["lognormal", "fixed", "uniform"] = "lognormal"
    mean: float | None = Field(default=None, gt=0)
    median: float | None = Field(default=None, gt=0)
    low: int | None = Field(default=None, ge=0)
    high: int | None = Field(default=None, ge=0)
    min_tokens: int = Field(default=1, ge=0)
    max_tokens: int = Field(default=32768, ge=1)

    @model_validator(mode="after")
    def _check_params(self) -> Self:
        if self.min_tokens > self.max_tokens:
            raise ValueError("min-tokens must be <= max-tokens")
        explicit = [k for k in ("mean", "median", "low", "high") if getattr(self, k) is not None]
        if self.preset is not None:
            if explicit or "kind" in self.model_fields_set:
                given = ", ".join(explicit + (["kind"] if "kind" in self.model_fields_set else []))
                raise ValueError(f"give either preset or explicit parameters, not both ({given})")
            return self
        allowed = {"lognormal": {"mean", "median"}, "fixed": {"mean"}, "uniform": {"low", "high"}}
        needed = {"lognormal": {"mean"}, "fixed": {"mean"}, "uniform": {"low", "high"}}
        extra = sorted(set(explicit) - allowed[self.kind])
        if extra:
            raise ValueError(f"kind {self.kind} does not take {', '.join(extra)}")
        missing = sorted(needed[self.kind] - set(explicit))
        if missing:
            raise ValueError(f"kind {self.kind} needs {', '.join(missing)} (or give a preset)")
        if self.mean is not None and self.median is not None and self.median > self.mean:
            raise ValueError(f"median ({self.median}) must be <= mean ({self.mean})")
        if self.low is not None and self.high is not None and self.low > self.high:
            raise ValueError(f"low ({self.low}) must be <= high ({self.high})")
        return self


class DeadlineConfig(KebabModel):
    """Processing-time requirement of a request: arrival to last response byte.

    Drawn uniformly from ``[low-s, high-s]`` plus ``per-output-token-s`` times the class's
    nominal mean output length (a service with long answers accepts a longer wait). The
    requirement is fixed when the request is sent, so it cannot depend on the true length of
    the answer, which nobody knows yet.

    ``per-token-of: request`` multiplies ``per-output-token-s`` by the request's own output
    length instead: a time-to-first-token SLO (``low-s = high-s``) plus a time-per-output-token
    SLO times the output tokens, the convention of SLO-driven serving (and of the gateway's
    ``x-slo-ttft-ms`` / ``x-slo-tpot-ms`` headers with ``max_tokens``). A router that divides
    such a deadline out learns the output length: see ``docs/traces.md``.
    """

    low_s: float = Field(gt=0)
    high_s: float = Field(gt=0)
    per_output_token_s: float = Field(default=0.0, ge=0)
    per_token_of: Literal["class-mean", "request"] = "class-mean"

    @model_validator(mode="after")
    def _check_bounds(self) -> Self:
        if self.low_s > self.high_s:
            raise ValueError(f"low-s ({self.low_s}) must be <= high-s ({self.high_s})")
        return self


class ServiceClassConfig(KebabModel):
    """One personalized service class.

    ``share`` is a relative weight (shares are normalised, they need not sum to 1).
    ``attachment-bytes`` is an extra upload payload (documents, images), a length
    distribution read as bytes.
    """

    name: str = Field(min_length=1)
    share: float = Field(gt=0)
    prompt: LengthConfig
    output: LengthConfig
    deadline: DeadlineConfig
    attachment_bytes: LengthConfig | None = None


class ArrivalConfig(KebabModel):
    """Arrival process: Poisson, or gamma inter-arrivals with coefficient of variation ``cv``.

    Gamma inter-arrivals have ``shape = 1 / cv**2`` and ``scale = cv**2 / rate-rps``;
    ``cv = 1`` is the Poisson process, ``cv > 1`` is burstier.
    """

    process: Literal["poisson", "gamma"] = "poisson"
    rate_rps: float = Field(gt=0, le=1e6)
    cv: float = Field(default=1.0, gt=0)


class TraceConfig(KebabModel):
    """A request trace file; ``rate-rps`` rescales its timestamps to that mean rate.

    Formats: ``azure-csv`` (Azure LLM inference 2023), ``jsonl`` (this project's own),
    ``burstgpt-csv`` (BurstGPT) and ``mooncake-jsonl`` (Mooncake, FAST'25). ``path`` may be
    ``traces:FILE``, a trace shipped in the repository (:mod:`perllm.workload.data`).

    The window replayed: the rows from ``start-s`` seconds after the trace's first row
    (``window: first``), or from the start of the hour with the most arrivals
    (``window: busiest-hour``); of those, the run's first ``requests``. The window's first
    arrival is at time 0.
    """

    path: str = Field(min_length=1)
    format: Literal["azure-csv", "jsonl", "burstgpt-csv", "mooncake-jsonl"]
    rate_rps: float | None = Field(default=None, gt=0, le=1e6)
    window: Literal["first", "busiest-hour"] = "first"
    start_s: float = Field(default=0.0, ge=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _one_start(self) -> Self:
        if self.window == "busiest-hour" and self.start_s > 0:
            raise ValueError("window busiest-hour chooses its own start: give no start-s")
        return self


class WorkloadConfig(KebabModel):
    """A whole workload: arrivals, service classes and an optional trace."""

    arrivals: ArrivalConfig
    classes: list[ServiceClassConfig] = Field(min_length=1)
    trace: TraceConfig | None = None

    @model_validator(mode="after")
    def _check_unique_names(self) -> Self:
        seen: set[str] = set()
        for cls in self.classes:
            if cls.name in seen:
                raise ValueError(f"duplicate service class name {cls.name!r}")
            seen.add(cls.name)
        return self


def load_workload_config(data: Any, source: str | None) -> WorkloadConfig:
    """Validate a parsed YAML mapping as a :class:`WorkloadConfig`.

    Parameters
    ----------
    data
        The mapping, as loaded from YAML or JSON.
    source
        Where it came from, for error messages (e.g. ``scenario.yaml``).

    Returns
    -------
    WorkloadConfig

    Raises
    ------
    InputError
        One line naming the field path (kebab-case) and the problem.
    """
    try:
        return WorkloadConfig.model_validate(data)
    except ValidationError as err:
        raise InputError(validation_message(err, source)) from None
