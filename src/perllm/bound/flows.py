"""Capacity of a resource over time as a sparse LP block: hierarchical time slots.

A *resource* (a server's time, or one direction of a link's bits) has a capacity over any
interval ``[t0, t1]`` (its length in seconds, or the bits the link can carry). An *item* (one
request on one server or link) needs ``weight`` units of it, all inside its interval
``[lo, hi]``, if it is served there. Time is cut into slots of ``delta_s * 2**level``; an item
spreads its demand over the slots of one level that overlap its interval (the finest level
where it overlaps at most ``target`` slots): variable ``y`` is the fraction of the item done in
that slot, with ``weight * y`` at most the capacity of the overlap of the slot and the interval.

Capacity: every slot of every level carries a load variable ``u <= capacity(slot)`` with
``u >= (its own items' demand) + (its two halves' loads)``. A schedule that does every item's
work inside its interval therefore gives a feasible point (``y`` = the share of the item's
work done in each slot, ``u`` = all the work inside the slot by items of its level or finer),
for any ``delta_s`` and ``target``: coarser slots only make the relaxation looser.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Capacity = Callable[[FloatArray, FloatArray], FloatArray]

_LEVEL_KEY = 1 << 40


@dataclass
class SparseLP:
    """An LP ``A x <= b`` with bounds ``0 <= x <= ub`` being built column block by block."""

    ub: list[FloatArray] = field(default_factory=list)
    rows: list[IntArray] = field(default_factory=list)
    cols: list[IntArray] = field(default_factory=list)
    vals: list[FloatArray] = field(default_factory=list)
    rhs: list[FloatArray] = field(default_factory=list)
    n_vars: int = 0
    n_rows: int = 0

    def add_vars(self, ub: FloatArray) -> IntArray:
        """New variables with these upper bounds; returns their indices."""
        start = self.n_vars
        self.ub.append(np.asarray(ub, dtype=np.float64))
        self.n_vars += len(ub)
        return np.arange(start, self.n_vars, dtype=np.int64)

    def add_rows(self, rhs: FloatArray) -> IntArray:
        start = self.n_rows
        self.rhs.append(np.asarray(rhs, dtype=np.float64))
        self.n_rows += len(rhs)
        return np.arange(start, self.n_rows, dtype=np.int64)

    def add(self, rows: IntArray, cols: IntArray, vals: FloatArray | float) -> None:
        self.rows.append(np.asarray(rows, dtype=np.int64))
        self.cols.append(np.asarray(cols, dtype=np.int64))
        self.vals.append(np.broadcast_to(np.asarray(vals, dtype=np.float64), len(rows)).copy())

    @property
    def nnz(self) -> int:
        return sum(len(r) for r in self.rows)


def _levels(lo: FloatArray, hi: FloatArray, delta_s: float, target: int) -> IntArray:
    top = max(0, int(np.ceil(np.log2(max(float(hi.max()), delta_s) / delta_s))))
    level = np.full(len(lo), top, dtype=np.int64)
    todo = np.ones(len(lo), dtype=bool)
    for k in range(top + 1):
        width = delta_s * 2.0**k
        count = np.floor(hi / width) - np.floor(lo / width) + 1
        fits = todo & (count <= target)
        level[fits] = k
        todo &= ~fits
    return level


def add_flow(
    lp: SparseLP,
    lo: FloatArray,
    hi: FloatArray,
    weight: FloatArray,
    capacity: Capacity,
    *,
    delta_s: float,
    target: int,
) -> tuple[IntArray, IntArray]:
    """Add one resource's slot variables and capacity rows.

    Returns
    -------
    (item, var)
        For each fraction variable created, the index of its item and its column.
    """
    lo = np.maximum(lo, 0.0)
    hi = np.maximum(hi, lo)
    if len(lo) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    level = _levels(lo, hi, delta_s, target)
    width = delta_s * 2.0 ** level.astype(np.float64)
    first = np.floor(lo / width).astype(np.int64)
    count = np.floor(hi / width).astype(np.int64) - first + 1
    item = np.repeat(np.arange(len(lo), dtype=np.int64), count)
    offsets = np.arange(len(item)) - np.repeat(np.cumsum(count) - count, count)
    slot = np.repeat(first, count) + offsets
    lvl, w = level[item], width[item]
    start, end = slot * w, (slot + 1) * w
    room = capacity(np.maximum(lo[item], start), np.minimum(hi[item], end))
    ub = np.minimum(1.0, np.maximum(room, 0.0) / weight[item])
    keep = ub > 0.0
    item, slot, lvl, ub = item[keep], slot[keep], lvl[keep], ub[keep]
    var = lp.add_vars(ub)
    # Every slot holding an item, and every ancestor of one, gets a load variable and a row.
    key = lvl * _LEVEL_KEY + slot
    slots = np.unique(key)
    top = int(level.max())
    for k in range(top):
        here = slots[slots // _LEVEL_KEY == k]
        slots = np.union1d(slots, (k + 1) * _LEVEL_KEY + (here % _LEVEL_KEY) // 2)
    slot_level = slots // _LEVEL_KEY
    slot_index = slots % _LEVEL_KEY
    slot_width = delta_s * 2.0 ** slot_level.astype(np.float64)
    load = lp.add_vars(capacity(slot_index * slot_width, (slot_index + 1) * slot_width))
    rows = lp.add_rows(np.zeros(len(slots)))
    # Items' demand in their slot's row, minus the slot's own load, plus each child's load in
    # its parent's row (``slots`` is sorted, so a key's row is found by bisection).
    lp.add(rows[np.searchsorted(slots, key)], var, weight[item])
    lp.add(rows, load, -1.0)
    child = slot_level < top
    parent = (slot_level[child] + 1) * _LEVEL_KEY + slot_index[child] // 2
    lp.add(rows[np.searchsorted(slots, parent)], load[child], 1.0)
    return item, var
