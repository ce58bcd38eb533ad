"""Profile files: fitted perf coefficients, power, measured points and provenance, as YAML.

A profile (kebab-case keys) looks like::

    perllm-profile: 1
    endpoint: http://127.0.0.1:8081
    model: gemma-3-270m
    date: 2025-01-01T12:00:00+00:00
    source: measured by `perllm profile` (streaming /v1/completions)
    max-batch: 1
    perf: {prefill-fixed-s: 0.05, prefill-s-per-token: 0.0004, step-overhead-s: 0.0, ...}
    power: {idle-w: 5, max-w: 20, batch1-fraction: 0.8, log2-slope: 0.05, source: ...}  # or null
    energy: {source: measured (RAPL), energy-j: 120.0, seconds: 40.0}
    fit: {prefill-rms-rel: 0.03, decode-rms-rel: 0.02, ...}
    points: {prefill: [{prompt-tokens: 32, ttft-s: 0.1}, ...], decode: [...]}

:func:`read_profile` is the one reader: the cluster builder (:mod:`perllm.cluster.build`) reads
the profile a scenario server group or a gateway backend names, ``perllm profile`` writes one
with :func:`write_profile`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from perllm.cluster.settings import to_kebab, validation_message, yaml_message
from perllm.domain import PowerSpec, ServerPerf
from perllm.errors import InputError

FORMAT_VERSION = 1

__all__ = ["FORMAT_VERSION", "ProfileFile", "read_profile", "write_profile"]


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="allow", populate_by_name=True, alias_generator=to_kebab, frozen=True
    )


class PerfFields(_Model):
    prefill_fixed_s: float = Field(ge=0.0)
    prefill_s_per_token: float = Field(ge=0.0)
    step_overhead_s: float = Field(ge=0.0)
    step_weights_s: float = Field(ge=0.0)
    step_s_per_kv_token: float = Field(ge=0.0)
    step_compute_s_per_seq: float = Field(ge=0.0)


class PowerFields(_Model):
    idle_w: float = Field(ge=0.0)
    max_w: float = Field(gt=0.0)
    batch1_fraction: float = Field(0.43, gt=0.0, le=1.0)
    log2_slope: float = Field(0.066, ge=0.0)


class ProfileFile(_Model):
    """The validated top level of a profile (extra provenance keys are kept, not checked)."""

    perllm_profile: int = Field(FORMAT_VERSION, ge=1, le=FORMAT_VERSION)
    model: str = ""
    max_batch: int = Field(1, ge=1)
    perf: PerfFields
    power: PowerFields | None = None

    def server_perf(self) -> ServerPerf:
        return ServerPerf(**self.perf.model_dump(include=set(PerfFields.model_fields)))

    def power_spec(self) -> PowerSpec | None:
        if self.power is None:
            return None
        return PowerSpec(**self.power.model_dump(include=set(PowerFields.model_fields)))


def read_profile(path: str | Path) -> ProfileFile:
    """Read and validate a profile; errors are one-line :class:`InputError` naming the file."""
    source = str(path)
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as err:
        raise InputError(f"{source}: cannot read profile: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise InputError(yaml_message(err, source)) from None
    if not isinstance(data, dict):
        raise InputError(f"{source}: a profile must be a YAML mapping")
    try:
        return ProfileFile.model_validate(data)
    except ValidationError as err:
        raise InputError(validation_message(err, source)) from None


def _plain(value: Any) -> Any:
    """YAML-friendly values: floats rounded to 6 significant digits, NaN as null."""
    if isinstance(value, float):
        return None if math.isnan(value) else float(f"{value:.6g}")
    if isinstance(value, dict):
        return {to_kebab(str(k)): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def write_profile(path: Path, data: dict[str, Any]) -> None:
    """Write a profile mapping (snake_case keys become kebab-case) as YAML."""
    text = yaml.safe_dump(_plain(data), sort_keys=False, default_flow_style=None, width=100)
    path.write_text(text)
