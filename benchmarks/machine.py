"""The machine a benchmark ran on, printed with its figures, and a yardstick of its speed.

Timings depend on the CPU: every benchmark prints :func:`describe` first, and the speed
benchmarks also give their figures against :func:`yardstick`, a fixed pure-Python workload timed
in the same run (a binary heap of timed events, the shape of the simulator's and the gateway's
inner loops), so that two machines' figures can be compared as ratios.
"""

from __future__ import annotations

import heapq
import os
import platform
import random
import time
from pathlib import Path

YARDSTICK_EVENTS = 200_000


def cpu_name() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``), else what :mod:`platform` says."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def describe() -> str:
    """One line: CPU, cores this process may use, Python."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"machine: {cpu_name()}, {cores} cores, Python {platform.python_version()}"


def yardstick(repeats: int = 5) -> float:
    """Heap events per second of one core (the best of ``repeats``): push and pop
    :data:`YARDSTICK_EVENTS` timed events, each popped one scheduling another."""
    rng = random.Random(0)
    delays = [rng.expovariate(1.0) for _ in range(YARDSTICK_EVENTS)]
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        heap = [(d, i) for i, d in enumerate(delays[:1000])]
        heapq.heapify(heap)
        for i in range(YARDSTICK_EVENTS):
            now, _ = heapq.heappop(heap)
            heapq.heappush(heap, (now + delays[i], i))
        best = min(best, time.perf_counter() - start)
    return YARDSTICK_EVENTS / best


def header() -> tuple[str, float]:
    """The machine line with its yardstick, and the yardstick (events per second)."""
    speed = yardstick()
    return f"{describe()}; yardstick {speed / 1e6:.2f} M heap events/s", speed
