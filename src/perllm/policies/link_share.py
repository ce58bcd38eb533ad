"""Link shares by urgency: a transfer's weight on its link grows as its time to spare shrinks.

A link serves its active transfers by weighted fair sharing: transfer ``i`` with weight ``z_i``
gets ``bandwidth * z_i / sum(z)``. A share is a real, constrained resource: the weights split
one budget (the link's bandwidth), so what one transfer gets another does not. Giving every
transfer the same weight (processor sharing) treats an urgent photo upload and a lenient
document upload alike; on a busy link the photo waits behind the documents and misses its
deadline while the documents had a minute to spare.

The rule here weighs each transfer by its urgency:

``z = clip(tau / budget, floor, 1)``, ``budget = D - rest - rtt``,

where ``D`` is the request's deadline, ``rest`` the time the rest of its processing is expected
to take (queueing and service) and ``tau`` = 0.1 s (every transfer with less than that to spare
gets the full weight; only ratios of weights matter otherwise). Earliest deadline first meets
every set of deadlines that one link can meet; weights inversely proportional to the time to
spare approach it (the transfer due first gets most of the link) without ever stopping a
transfer outright, so a lenient upload still moves while urgent ones come and go, and catches up
when they are done. ``floor`` bounds how small that trickle gets.

The weight does not grow with the transfer's size: weighing by *need* (``wire / budget``, the
bandwidth that finishes a transfer just in time) would give a large lenient upload a
just-in-time share with no margin for the bandwidth's fluctuation or a crowded link. The figures
on the ``document-uploads`` scenario are in ``docs/results.md``; how the rule was chosen is in
``docs/lab-notebook.md``.
"""

from __future__ import annotations

__all__ = ["SHARE_FLOOR", "URGENT_S", "urgency_share"]

URGENT_S = 0.1
"""``tau``: a transfer with at most this much time to spare gets the full weight, 1."""

SHARE_FLOOR = 1e-4
"""The least weight: a transfer with 1,000 s or more to spare, or one that has lost its
deadline already (a deflected request)."""


def urgency_share(budget_s: float) -> float:
    """The weight on its link of a transfer that may take ``budget_s``: ``clip(tau / budget,
    floor, 1)`` (1 when nothing is left to spare).

    Parameters
    ----------
    budget_s
        The time the transfer may take: the deadline less the rest of the processing and the
        round trip.
    """
    if budget_s <= URGENT_S:
        return 1.0
    return max(URGENT_S / budget_s, SHARE_FLOOR)
