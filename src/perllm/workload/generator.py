"""Turn a :class:`WorkloadConfig` into a list of :class:`~perllm.domain.Request`.

Synthetic workloads are drawn column by column with numpy; trace workloads take their rows
from :func:`perllm.workload.traces.read_trace` and fill what a row lacks from its class.

Random streams: one ``numpy.random.default_rng(seed)`` spawns independent child streams for
the arrivals, the class choice and each class (which spawns one stream per quantity), so the
same seed gives the same requests, and adding a class does not change the arrival times.
"""

from __future__ import annotations

import dataclasses
import gc
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from perllm import physics
from perllm.domain import Request
from perllm.errors import InputError, where
from perllm.workload.arrivals import arrival_times
from perllm.workload.config import (
    ServiceClassConfig,
    TraceConfig,
    WorkloadConfig,
)
from perllm.workload.lengths import length_dist
from perllm.workload.traces import TraceRow, read_trace

__all__ = ["class_names", "generate_requests"]

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class _Columns:
    """A workload as columns, one entry per request."""

    arrival_s: FloatArray
    class_index: IntArray
    prompt_tokens: IntArray
    output_tokens: IntArray
    request_bytes: IntArray
    response_bytes: IntArray
    deadline_s: FloatArray
    models: Sequence[str | None]
    prefix_blocks: Sequence[tuple[int, ...]]


@dataclass(frozen=True, slots=True)
class _ClassDraws:
    """Per-request quantities drawn from one class for ``m`` of its requests."""

    prompt_tokens: IntArray
    output_tokens: IntArray
    attachment_bytes: IntArray
    deadline_base_s: FloatArray


def class_names(cfg: WorkloadConfig) -> list[str]:
    """Names of the workload's service classes, in config order."""
    return [cls.name for cls in cfg.classes]


def _choose_classes(cfg: WorkloadConfig, rng: np.random.Generator, n: int) -> IntArray:
    shares = np.array([cls.share for cls in cfg.classes], dtype=np.float64)
    return rng.choice(len(shares), size=n, p=shares / shares.sum()).astype(np.int64)


def _draw_class(cls: ServiceClassConfig, rng: np.random.Generator, m: int) -> _ClassDraws:
    """Draw lengths, attachments and the uniform part of deadlines for ``m`` requests.

    Output lengths are at least 1 token (a response always has a last token).
    """
    prompt_rng, output_rng, attachment_rng, deadline_rng = rng.spawn(4)
    output = np.maximum(length_dist(cls.output).sample(output_rng, m), 1)
    if cls.attachment_bytes is None:
        attachment = np.zeros(m, dtype=np.int64)
    else:
        attachment = length_dist(cls.attachment_bytes).sample(attachment_rng, m)
    return _ClassDraws(
        prompt_tokens=length_dist(cls.prompt).sample(prompt_rng, m),
        output_tokens=output,
        attachment_bytes=attachment,
        deadline_base_s=deadline_rng.uniform(cls.deadline.low_s, cls.deadline.high_s, m),
    )


def _deadline_per_request_s(cls: ServiceClassConfig, output: IntArray) -> FloatArray | float:
    """The length-dependent part of a class's deadlines: per output token times the class's
    nominal output length, or times each request's own (``per-token-of: request``)."""
    per_token = cls.deadline.per_output_token_s
    if cls.deadline.per_token_of == "request":
        return per_token * output.astype(np.float64)
    return per_token * length_dist(cls.output).nominal_mean


HOUR_S = 3600.0


def _window(rows: list[TraceRow], trace: TraceConfig) -> list[TraceRow]:
    """The rows from the window's start on (see :class:`TraceConfig`), the first at time 0;
    all of them, as read, for the default window."""
    if trace.window == "first" and trace.start_s == 0.0:
        return rows
    arrivals = np.array([row.arrival_s for row in rows], dtype=np.float64)
    if trace.window == "busiest-hour":
        # For each row, the arrivals in the hour it opens; the first row of the fullest hour.
        counts = np.searchsorted(arrivals, arrivals + HOUR_S, side="left") - np.arange(
            arrivals.size
        )
        first = int(np.argmax(counts))
    else:
        first = int(np.searchsorted(arrivals, arrivals[0] + trace.start_s, side="left"))
        if first == len(rows):
            span = float(arrivals[-1] - arrivals[0])
            problem = f"start-s {trace.start_s:g} is past the trace's last arrival ({span:g} s)"
            raise InputError(f"{where(trace.path)}{problem}")
    origin = rows[first].arrival_s
    return [dataclasses.replace(row, arrival_s=row.arrival_s - origin) for row in rows[first:]]


def _synthetic(
    cfg: WorkloadConfig, n: int, rng: np.random.Generator, rate_rps: float | None
) -> _Columns:
    arrival_rng, class_rng, *per_class_rngs = rng.spawn(2 + len(cfg.classes))
    class_index = _choose_classes(cfg, class_rng, n)
    prompt = np.zeros(n, dtype=np.int64)
    output = np.ones(n, dtype=np.int64)
    attachment = np.zeros(n, dtype=np.int64)
    deadline = np.zeros(n, dtype=np.float64)
    for k, (cls, class_rng_k) in enumerate(zip(cfg.classes, per_class_rngs, strict=True)):
        rows = np.flatnonzero(class_index == k)
        draws = _draw_class(cls, class_rng_k, rows.size)
        prompt[rows] = draws.prompt_tokens
        output[rows] = draws.output_tokens
        attachment[rows] = draws.attachment_bytes
        deadline[rows] = draws.deadline_base_s + _deadline_per_request_s(cls, draws.output_tokens)
    return _Columns(
        arrival_s=arrival_times(cfg.arrivals, n, arrival_rng, rate_rps),
        class_index=class_index,
        prompt_tokens=prompt,
        output_tokens=output,
        request_bytes=physics.request_bytes(prompt, attachment),
        response_bytes=physics.response_bytes(output),
        deadline_s=deadline,
        models=[None] * n,
        prefix_blocks=[()] * n,
    )


def _rescale(arrival_s: FloatArray, rate_rps: float | None, source: str) -> FloatArray:
    """Stretch arrivals about the first one so the mean rate is ``rate_rps``."""
    if rate_rps is None or arrival_s.size < 2:
        return arrival_s
    span_s = float(arrival_s[-1] - arrival_s[0])
    if span_s <= 0:
        raise InputError(f"{where(source)}cannot rescale to rate-rps: all arrivals are equal")
    factor = (arrival_s.size - 1) / span_s / rate_rps
    start_s = float(arrival_s[0])
    return start_s + (arrival_s - start_s) * factor


def _trace_classes(
    cfg: WorkloadConfig, rows: Sequence[TraceRow], rng: np.random.Generator, source: str
) -> IntArray:
    """Class of each row: the row's own, or drawn by share when it has none."""
    drawn = _choose_classes(cfg, rng, len(rows))
    name_to_index = {name: k for k, name in enumerate(class_names(cfg))}
    for i, row in enumerate(rows):
        if row.service_class is None:
            continue
        if row.service_class not in name_to_index:
            known = ", ".join(name_to_index)
            problem = f"unknown service class {row.service_class!r} (configured: {known})"
            raise InputError(f"{where(source, row.line)}field 'service_class': {problem}")
        drawn[i] = name_to_index[row.service_class]
    return drawn


def _from_trace(
    cfg: WorkloadConfig, trace: TraceConfig, n: int, rng: np.random.Generator, rate: float | None
) -> _Columns:
    # The same streams as a synthetic workload, less the arrivals (they come from the trace).
    class_rng, *per_class_rngs = rng.spawn(2 + len(cfg.classes))[1:]
    rows = _window(read_trace(trace), trace)[:n]
    m = len(rows)
    class_index = _trace_classes(cfg, rows, class_rng, trace.path)
    prompt = np.array([row.prompt_tokens for row in rows], dtype=np.int64)
    output = np.maximum(np.array([row.output_tokens for row in rows], dtype=np.int64), 1)
    attachment = np.zeros(m, dtype=np.int64)
    deadline = np.zeros(m, dtype=np.float64)
    for k, (cls, class_rng_k) in enumerate(zip(cfg.classes, per_class_rngs, strict=True)):
        members = np.flatnonzero(class_index == k)
        draws = _draw_class(cls, class_rng_k, members.size)
        attachment[members] = draws.attachment_bytes
        deadline[members] = draws.deadline_base_s + _deadline_per_request_s(cls, output[members])
    request_bytes = physics.request_bytes(prompt, attachment)
    response_bytes = physics.response_bytes(output)
    for i, row in enumerate(rows):
        if row.deadline_s is not None:
            deadline[i] = row.deadline_s
        if row.request_bytes is not None:
            request_bytes[i] = row.request_bytes
        if row.response_bytes is not None:
            response_bytes[i] = row.response_bytes
    arrival = np.array([row.arrival_s for row in rows], dtype=np.float64)
    return _Columns(
        arrival_s=_rescale(arrival, rate, trace.path),
        class_index=class_index,
        prompt_tokens=prompt,
        output_tokens=output,
        request_bytes=request_bytes,
        response_bytes=response_bytes,
        deadline_s=deadline,
        models=[row.model for row in rows],
        prefix_blocks=[row.prefix_blocks for row in rows],
    )


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building many acyclic objects."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _to_requests(columns: _Columns, names: Sequence[str]) -> list[Request]:
    """Build the Request objects, the slow part of a large synthetic workload (the garbage
    collector is paused meanwhile: these objects hold no cycles)."""
    classes = np.asarray(names, dtype=object)[columns.class_index].tolist()
    values: list[Sequence[object]] = [
        range(len(classes)),
        columns.arrival_s.tolist(),
        classes,
        columns.prompt_tokens.tolist(),
        columns.output_tokens.tolist(),
        columns.request_bytes.tolist(),
        columns.response_bytes.tolist(),
        columns.deadline_s.tolist(),
        columns.models,
        columns.prefix_blocks,
    ]
    with _gc_paused():
        return list(map(Request.of, *values))


def generate_requests(
    cfg: WorkloadConfig, n: int, seed: int, rate_rps: float | None = None
) -> list[Request]:
    """Generate ``n`` requests (ids ``0..n-1``, arrivals non-decreasing).

    Synthetic (no trace): arrivals from ``cfg.arrivals``; each request's class drawn by
    share; prompt, output and attachment lengths from the class; deadline uniform in the
    class's range plus ``per-output-token-s`` times the class's nominal mean output length
    (never the request's true one);
    ``request_bytes = prompt * BYTES_PER_TOKEN + attachment`` and
    ``response_bytes = output * BYTES_PER_TOKEN + RESPONSE_OVERHEAD_BYTES``
    (:func:`perllm.physics.request_bytes`, :func:`perllm.physics.response_bytes`).

    Trace: the first ``n`` rows of the window (:class:`~perllm.workload.config.TraceConfig`;
    all of them if it is shorter); a row without a class gets one drawn by share, and a
    missing deadline or byte size is filled in as above.
    Output lengths below 1 (e.g. ``GeneratedTokens`` 0) count as 1. Timestamps are stretched
    so that the mean rate is ``rate_rps`` (the argument, else the trace's ``rate-rps``).

    Parameters
    ----------
    cfg
        The workload.
    n
        Number of requests (``>= 0``).
    seed
        Seed of the one generator every draw comes from; same seed, same requests.
    rate_rps
        Overrides the arrival rate (synthetic) or the trace's ``rate-rps``.

    Returns
    -------
    list of Request

    Raises
    ------
    InputError
        A negative ``n`` or a non-positive rate, or a bad trace.
    """
    if n < 0:
        raise InputError(f"number of requests must be >= 0, got {n}")
    if rate_rps is not None and rate_rps <= 0:
        raise InputError(f"field 'rate-rps': must be > 0, got {rate_rps!r}")
    rng = np.random.default_rng(seed)
    if cfg.trace is None:
        columns = _synthetic(cfg, n, rng, rate_rps)
    else:
        rate = rate_rps if rate_rps is not None else cfg.trace.rate_rps
        columns = _from_trace(cfg, cfg.trace, n, rng, rate)
    return _to_requests(columns, class_names(cfg))
