"""What the robustness benchmark runs and saves: each cell's policies, the checkpoint's keys, and
the results read back into rows.

A generated cluster's cells are *synthetic* (its own workload); its trace cell cluster on a
production trace (:mod:`perllm.experiments.robustness_traces`) has *trace cells*. The
checkpoint's keys (:func:`result_key`):

- synthetic: ``("cluster", seed)``, ``("run", seed, load, run seed, label)`` and
  ``("bound", seed, load, run seed)``;
- trace cells: ``("trace-cluster", trace, seed)``, ``("trace-run", trace, seed, load, run
  seed, label)`` and ``("trace-bound", trace, seed, load, run seed)``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from perllm.experiments.robustness_traces import PREFIX_POLICIES, TRACES, TraceCluster
from perllm.experiments.rows import GeneratedCluster, RunRow

__all__ = [
    "Chosen",
    "Collected",
    "cell_policies",
    "collect",
    "decode",
    "key_kind",
    "result_key",
]

Chosen = dict[str, tuple[str, dict[str, Any]]]
"""Policy label -> (registered policy, params)."""


def cell_policies(chosen: Chosen, trace: str = "", *, named: bool = False) -> Chosen:
    """The policies that run on a cell of ``trace`` (empty: a synthetic cell): ``chosen``, less
    a policy of :data:`~perllm.experiments.robustness_traces.PREFIX_POLICIES` under its own
    name where the prompts share no prefix blocks (there it is least-loaded), unless the
    policies were ``named`` one by one (``--policies``)."""
    if named or (trace and TRACES[trace].prefixes):
        return chosen
    return {
        label: entry
        for label, entry in chosen.items()
        if not (label == entry[0] and entry[0] in PREFIX_POLICIES)
    }


def result_key(kind: str, trace: str, *rest: Any) -> tuple[Any, ...]:
    """The checkpoint key of a result of ``kind`` (cluster, run or bound) of ``trace``'s cells
    (empty: synthetic) with the fields ``rest`` (see the module docstring)."""
    return (f"trace-{kind}", trace, *rest) if trace else (kind, *rest)


def key_kind(key: tuple[Any, ...]) -> tuple[str, str]:
    """A checkpoint key's kind (cluster, run or bound) and trace (empty: synthetic)."""
    if key[0].startswith("trace-"):
        return key[0].removeprefix("trace-"), key[1]
    return key[0], ""


def decode(key: Any, data: Any) -> Any:
    """A result of the checkpoint, read back: a generated or trace cell cluster, a run's row, or
    a cell's bound (``[[cluster, load, seed], goodput bound]``, as written)."""
    kind, trace = key_kind(key)
    if kind == "cluster":
        return TraceCluster.from_json(data) if trace else GeneratedCluster.from_json(data)
    if kind == "run":
        return RunRow.from_json(data)
    return data


@dataclass(frozen=True, slots=True)
class Collected:
    """The results of a benchmark: its rows (synthetic first, then each trace's, each by
    cluster, load, seed and policy), generated clusters (by seed) and trace cell clusters (by
    trace, then seed; skipped ones included)."""

    rows: list[RunRow]
    clusters: list[GeneratedCluster]
    cells: list[TraceCluster]


def collect(
    results: Mapping[Any, Any], chosen: Chosen, traces: list[str], *, named: bool = False
) -> Collected:
    """The rows, clusters and trace cell clusters of ``results`` that a benchmark of ``chosen``
    and ``traces`` asks for (a resumed checkpoint may hold others: other traces' cells, other
    policies' runs), each row with its cell's bound (``nan`` where there is none)."""
    order = list(chosen)
    bounds: dict[tuple[Any, ...], float] = {}
    rows: dict[str, list[RunRow]] = {"": [], **{trace: [] for trace in traces}}
    clusters: list[GeneratedCluster] = []
    cells: list[TraceCluster] = []
    for key, result in results.items():
        kind, trace = key_kind(key)
        if trace not in rows:
            continue
        if kind == "bound":
            bounds[key] = result[1]
        elif kind == "run" and key[-1] in cell_policies(chosen, trace, named=named):
            rows[trace].append(result)
        elif kind == "cluster":
            (cells if trace else clusters).append(result)
    ordered: list[RunRow] = []
    for trace, mine in rows.items():
        mine.sort(key=lambda r: (r.cluster, r.load, r.seed, order.index(r.policy)))
        for row in mine:
            bound = bounds.get(result_key("bound", trace, row.cluster, row.load, row.seed))
            bound = math.nan if bound is None else bound
            ordered.append(dataclasses.replace(row, bound_goodput_rps=bound))
    clusters.sort(key=lambda c: c.seed)
    cells.sort(key=lambda c: (traces.index(c.trace), c.seed))
    return Collected(ordered, clusters, cells)
