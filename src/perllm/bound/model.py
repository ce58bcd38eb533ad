"""The bound's linear program, built from an :class:`~perllm.bound.instance.Instance` and solved
with HiGHS (:func:`scipy.optimize.linprog`).

Variables (all in ``[0, ub]``): per eligible pair ``(i, s)`` and slot, the fraction of request
``i`` met on server ``s`` whose work falls in that slot (:mod:`perllm.bound.flows`); per heavy
upload and link slot, the fraction of its bits carried then; per slot, its load. Rows:

- each request is met at most once: ``sum over its pairs and slots of y <= 1``;
- each server's time and each link's upload bits fit in every slot of every level;
- a met request's upload was carried: ``sum_slots y(i, s) <= sum_slots z(i, link(s))``.

``x(i, s) = sum over slots of y`` is the fraction of request ``i`` met on ``s``. The number met
is ``sum x``; the weighted energy is at least ``base + sum_i unmet_i + sum x(i, s) (e(i, s) -
unmet_i)``, where ``unmet_i`` is what request ``i`` costs at the least if served but late.

Only uploads that need at least ``HEAVY_SHARE`` of their link's capacity over their interval
get link variables (dropping a request from a capacity row only loosens the bound); downloads
get none (a response is a few kilobytes; their least time is in each pair's interval).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.optimize import linprog

from perllm.bound.flows import FloatArray, IntArray, SparseLP, add_flow
from perllm.bound.instance import Instance
from perllm.errors import PerllmError

HEAVY_SHARE = 0.005
IPM_ABOVE_VARIABLES = 150_000


@dataclass(frozen=True, slots=True)
class Model:
    """A built LP: ``A x <= b``, ``0 <= x <= ub``; ``pair_vars`` are the ``y`` columns and
    ``pair_of_var`` their pair."""

    a: sparse.csr_matrix
    b: FloatArray
    ub: FloatArray
    pair_vars: IntArray
    pair_of_var: IntArray
    n_pairs: int

    @property
    def stats(self) -> dict[str, int]:
        return {"variables": int(self.a.shape[1]), "rows": int(self.a.shape[0]), "nnz": self.a.nnz}


def build_model(inst: Instance, *, delta_s: float, target: int) -> Model:
    """Build the LP of ``inst`` with finest slots of ``delta_s`` seconds and at most ``target``
    slots per item (see :mod:`perllm.bound.flows`)."""
    pairs = inst.pairs
    lp = SparseLP()
    lp.add_vars(np.zeros(0))
    request_rows = lp.add_rows(np.ones(inst.n))
    pair_vars: list[IntArray] = []
    pair_of_var: list[IntArray] = []
    for s in np.unique(pairs.server).tolist():
        members = np.flatnonzero(pairs.server == s)
        item, var = add_flow(
            lp,
            pairs.ready_s[members],
            pairs.due_s[members],
            pairs.work_s[members],
            lambda t0, t1: t1 - t0,
            delta_s=delta_s,
            target=target,
        )
        pair_vars.append(var)
        pair_of_var.append(members[item])
    y_vars = np.concatenate(pair_vars) if pair_vars else np.zeros(0, dtype=np.int64)
    y_pair = np.concatenate(pair_of_var) if pair_of_var else np.zeros(0, dtype=np.int64)
    lp.add(request_rows[pairs.request[y_pair]], y_vars, 1.0)
    arrival = inst.arrival_s[pairs.request]
    server_link = np.array(inst.server_links, dtype=object)[pairs.server]
    for name, link in inst.links.items():
        on_link = np.flatnonzero(server_link == name) if len(pairs.server) else np.zeros(0, int)
        room = link.bits_between(arrival[on_link], np.maximum(pairs.upload_due_s[on_link], 0.0))
        heavy = on_link[pairs.upload_bits[on_link] >= HEAVY_SHARE * np.maximum(room, 1.0)]
        if len(heavy) == 0:
            continue
        item, z_vars = add_flow(
            lp,
            arrival[heavy],
            pairs.upload_due_s[heavy],
            pairs.upload_bits[heavy],
            link.bits_between,
            delta_s=0.25,
            target=8,
        )
        couple = lp.add_rows(np.zeros(len(heavy)))
        row_of_pair = np.full(len(pairs.request), -1, dtype=np.int64)
        row_of_pair[heavy] = couple
        mine = row_of_pair[y_pair] >= 0
        lp.add(row_of_pair[y_pair[mine]], y_vars[mine], 1.0)
        lp.add(couple[item], z_vars, -1.0)
    a = sparse.csr_matrix(
        (np.concatenate(lp.vals), (np.concatenate(lp.rows), np.concatenate(lp.cols))),
        shape=(lp.n_rows, lp.n_vars),
    )
    n_pairs = len(pairs.request)
    return Model(a, np.concatenate(lp.rhs), np.concatenate(lp.ub), y_vars, y_pair, n_pairs)


def _solve(
    model: Model, cost: FloatArray, extra_row: FloatArray | None = None, extra_rhs: float = 0.0
) -> tuple[float, FloatArray, float]:
    """Minimise ``cost . x``; returns (value, x, marginal of the extra row)."""
    if model.a.shape[1] == 0:
        return 0.0, np.zeros(0), 0.0
    a, b = model.a, model.b
    if extra_row is not None:
        a = sparse.vstack([a, sparse.csr_matrix(extra_row)], format="csr")
        b = np.append(b, extra_rhs)
    bounds = np.column_stack([np.zeros(len(model.ub)), model.ub])
    # The interior-point method is the faster on large models (10,000 requests: 5 s against
    # 18 s), dual simplex on small ones.
    method = "highs-ipm" if a.shape[1] > IPM_ABOVE_VARIABLES else "highs-ds"
    res = linprog(cost, A_ub=a, b_ub=b, bounds=bounds, method=method)
    if res.status != 0:
        raise PerllmError(f"the bound's LP was not solved: {res.message}")
    marginal = float(res.ineqlin.marginals[-1]) if extra_row is not None else 0.0
    return float(res.fun), np.asarray(res.x, dtype=np.float64), marginal


def _per_pair(model: Model, x: FloatArray) -> FloatArray:
    met = np.bincount(model.pair_of_var, x[model.pair_vars], minlength=model.n_pairs)
    return np.asarray(met, dtype=np.float64)


def _extra_energy(model: Model, inst: Instance) -> FloatArray:
    """Per ``y`` column: the energy its pair costs above the request's cheapest service."""
    pairs = inst.pairs
    extra = np.asarray(pairs.energy_j - inst.unmet_energy_j[pairs.request], dtype=np.float64)
    return np.maximum(extra[model.pair_of_var], 0.0)


def max_met(model: Model) -> tuple[float, FloatArray]:
    """Largest (fractional) number of requests met, and each pair's met fraction."""
    cost = np.zeros(model.a.shape[1])
    cost[model.pair_vars] = -1.0
    value, x, _ = _solve(model, cost)
    return -value, _per_pair(model, x)


def min_energy(model: Model, inst: Instance, met: float) -> tuple[float, float, FloatArray]:
    """Least weighted energy with at least ``met`` requests met.

    Returns
    -------
    (energy_j, slope_j_per_met, pair_fractions)
        ``slope`` is the LP's marginal cost of one more met request (a subgradient of the
        convex function ``met -> energy``).
    """
    cost = np.zeros(model.a.shape[1])
    cost[model.pair_vars] = _extra_energy(model, inst)
    row = np.zeros(model.a.shape[1])
    row[model.pair_vars] = -1.0
    value, x, marginal = _solve(model, cost, row, -met)
    total = value + float(inst.unmet_energy_j.sum()) + inst.base_energy_j
    return total, -marginal, _per_pair(model, x)


__all__ = ["Model", "build_model", "max_met", "min_energy"]
