"""Experiments: the ``perllm reproduce`` grid, where its runs execute (a process pool or Ray),
the checkpoint that lets a sweep resume, and what is made of the results (tables, the headline
ratios, ``report.md``, plots).

- :class:`GridConfig` and :func:`reproduce`: run the grid and write every output;
- :class:`ExecutorSpec` (:data:`EXECUTORS`): where the runs execute; :class:`Checkpoint`;
- :func:`cell_tables`, :func:`headline`, :func:`capacity`: the numbers people compare;
- :func:`write_report`: ``report.md``;
- :mod:`perllm.experiments.rows`: the rows, one frozen dataclass per kind (a grid run, a bound,
  a regret curve, a robustness run, a generated cluster), and their one way to JSON and CSV.

Names are imported on first use (some pull in matplotlib or Ray).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from perllm.lazy import lazy_exports

if TYPE_CHECKING:
    from perllm.experiments.analysis import capacity, cell_tables, headline
    from perllm.experiments.checkpoint import Checkpoint
    from perllm.experiments.executors import EXECUTORS, ExecutorSpec
    from perllm.experiments.grid import GridConfig
    from perllm.experiments.report import write_report
    from perllm.experiments.reproduce import reproduce

_EXPORTS: dict[str, tuple[str, str]] = {
    "GridConfig": ("perllm.experiments.grid", "GridConfig"),
    "reproduce": ("perllm.experiments.reproduce", "reproduce"),
    "ExecutorSpec": ("perllm.experiments.executors", "ExecutorSpec"),
    "EXECUTORS": ("perllm.experiments.executors", "EXECUTORS"),
    "Checkpoint": ("perllm.experiments.checkpoint", "Checkpoint"),
    "cell_tables": ("perllm.experiments.analysis", "cell_tables"),
    "headline": ("perllm.experiments.analysis", "headline"),
    "capacity": ("perllm.experiments.analysis", "capacity"),
    "write_report": ("perllm.experiments.report", "write_report"),
}

__all__ = [
    "EXECUTORS",
    "Checkpoint",
    "ExecutorSpec",
    "GridConfig",
    "capacity",
    "cell_tables",
    "headline",
    "reproduce",
    "write_report",
]

__getattr__ = lazy_exports(__name__, _EXPORTS)
