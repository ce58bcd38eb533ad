"""The bound: an LP relaxation of everything the simulator can do with one trace.

``compute_bound(cluster, requests, world_seed)`` returns an upper bound on the deadlines met
(and on goodput), and lower bounds on the weighted energy of a run that meets a given number
of them. It is solved with HiGHS through :func:`scipy.optimize.linprog`.

The relaxation (:mod:`.instance`, :mod:`.charges`, :mod:`.flows`, :mod:`.model`)
-------------------------------------------------------------------------------
Variables ``y(i, s, slot) in [0, 1]``: the fraction of request ``i``'s *charge* on server
``s`` that falls in a time slot, for the pairs where ``i`` can meet its deadline on ``s`` alone
(``ready(i, s) + alone(i, s) <= due(i, s)``). Maximise ``sum y`` subject to: each request met
at most once; on every server and every slot of every level, the charges inside fit in the
slot's length; every heavy upload's bits fit in its link's capacity over slots; a met
request's upload was carried. Weighted energy is bounded below by
``base + sum_i unmet_i + sum y (e(i, s) - unmet_i)`` at least ``m`` met.

Why every run of the simulator is a feasible point
--------------------------------------------------
Take any run (any policy, any decisions) of this trace: the same requests with their true
lengths, and the same bandwidth series (:mod:`.bandwidth` replays the world's draws from its
seed). Set ``y(i, s, slot)`` = the share of ``i``'s charge accrued in that slot if ``i`` ran on
``s`` and met its deadline, else 0; ``z`` = the share of its upload bits carried in each link
slot; each slot's load = all charges (bits) accrued in it by items of its level or finer.

1. *Each request at most once*: a request runs on one server (or is rejected).
2. *Eligibility*: a request that met its deadline on ``s`` took at least ``alone(i, s)`` there
   (more joiners lengthen a prefill; more members or cached tokens lengthen every decode
   step; queueing only adds), its upload and download each took at least as long as alone at
   the link's true bandwidth (a weighted fair share is at most the whole link), plus the RTT.
   So ``ready + alone <= due``: the pair exists.
3. *Interval*: its prefill starts after it reaches the server (``>= ready``) and its last token
   comes by ``due`` (else the download would end too late), so all its charge falls in
   ``[ready, due]``; its upload runs in ``[arrival, due - alone - rtt / 2]``.
4. *Capacity*: :mod:`.charges` shows that the members' charges at every instant add up to at
   most the rate at which the server spends time (per decode step: at most the step's
   duration, for every batch size up to ``max_batch`` and every KV-cache fill; per prefill: at
   most its duration). So the charges accrued in any interval, by any requests (met or not),
   are at most its length, and those of met requests of a level or finer in a slot are at
   most the slot's load, which is at most the slot's length; a single request's charge in the
   part of a slot inside its interval is at most that part's length (the variable's upper
   bound). A link direction carries at most ``B(t)`` bits per second in total.
5. *Energy*: :mod:`perllm.metrics.summary` reports ``w_tran E_tran + w_infer E_infer +
   w_idle E_idle``, idle counted for every server from 0 to the horizon (the last
   completion). Per server that is at least ``rho0 H + sum over members of their energy
   charges`` (:class:`.charges.EnergyCharge`); ``H`` is at least the last arrival and, when
   every request is served, every request's earliest possible completion; transmission is
   ``tx_power`` times the transfer times, at least the alone times. A request that is
   served but late costs at least its cheapest service on any server (``unmet_i``); with
   admission control on, it may be rejected and cost nothing (``unmet_i = 0``). Every
   registered policy serves every request when admission control is off.
6. *Goodput*: :mod:`perllm.metrics.summary` counts met requests completed by the last arrival;
   the second LP is the same with every deadline cut at the last arrival.

So the LP's optimum bounds every run; it is rounded outwards by a relative 1e-6 plus 1e-3 for
the solver's tolerances. ``E(m)``, the least energy with at least ``m`` met, is convex and
non-decreasing in ``m``: the frontier's tangents bound it at any ``m``.

How coarse, and where it is loose
---------------------------------
Slots are ``0.25 s * 2**k``; each interval uses the finest level at which it spans at most 6
slots, so an interval is widened by at most two of its slots. Downloads (a few kB) have no
link rows, and uploads below 0.5% of their link's capacity over their interval none either:
dropping rows keeps the bound valid. The relaxation is loose where the simulator is rigid:
it lets every decode step run at the most efficient batch and every prefill share its fixed
cost with a full batch, ignores FIFO order inside a server (work may move freely within a
request's interval), and splits requests fractionally.
"""

from perllm.bound.api import bound_for_run, compute_bound
from perllm.bound.result import BoundResult, FrontierPoint

__all__ = ["BoundResult", "FrontierPoint", "bound_for_run", "compute_bound"]
