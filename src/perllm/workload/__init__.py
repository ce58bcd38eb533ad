"""Workloads: arrival processes, length distributions, service classes and trace readers.

The usual entry point is :func:`generate_requests`, which turns a validated
:class:`WorkloadConfig` (see :func:`load_workload_config`) into requests.
"""

from perllm.workload.arrivals import arrival_times
from perllm.workload.config import (
    BYTES_PER_TOKEN,
    RESPONSE_OVERHEAD_BYTES,
    ArrivalConfig,
    DeadlineConfig,
    LengthConfig,
    ServiceClassConfig,
    TraceConfig,
    WorkloadConfig,
    load_workload_config,
)
from perllm.workload.generator import class_names, generate_requests
from perllm.workload.lengths import LENGTH_PRESETS, LengthDist, length_dist
from perllm.workload.presets import builtin_classes
from perllm.workload.traces import TraceRow, read_trace

__all__ = [
    "BYTES_PER_TOKEN",
    "LENGTH_PRESETS",
    "RESPONSE_OVERHEAD_BYTES",
    "ArrivalConfig",
    "DeadlineConfig",
    "LengthConfig",
    "LengthDist",
    "ServiceClassConfig",
    "TraceConfig",
    "TraceRow",
    "WorkloadConfig",
    "arrival_times",
    "builtin_classes",
    "class_names",
    "generate_requests",
    "length_dist",
    "load_workload_config",
    "read_trace",
]
