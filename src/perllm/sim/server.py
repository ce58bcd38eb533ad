"""One LLM server with continuous batching, advanced analytically between membership changes.

The server alternates between *prefill* (the requests joining the batch are prefilled together
while decoding pauses, as in vLLM without chunked prefill) and *decode segments* during which
the batch is constant. In a segment of batch ``b`` that starts with ``kv0`` cached tokens, step
``k`` takes ``ovh + max(c, alpha + beta k)`` with ``c = b * compute_per_seq``,
``alpha = weights + kv0 * per_kv`` and ``beta = b * per_kv`` (the cache grows ``b`` tokens a
step). Steps are treated as continuous, so the time of ``n`` steps is an integral in closed form
and its inverse a quadratic: the server needs one event per membership change, never one per
token.

Energy: while busy the server draws ``power.busy_w(members)``; that energy is split equally
among the members (running and prefilling requests) through a per-member accumulator, so the
requests' inference energies add up to the server's exactly. The idle gap that ends when a busy
period starts (``idle_w * gap``) is attributed to the first request of that busy period.

Waiting requests join the batch in order of their decision's ``priority`` (lower first), then of
arrival; a running request is never preempted.

Prefix cache: a request whose prompt names its blocks (``request.routed.prefix_blocks``) skips
the prefill of its longest prefix found in the server's cache (:class:`perllm.prefix.BlockLRU`,
sized to the KV cache, least recently used evicted first); its blocks enter the cache when its
prefill starts. The request still holds its whole prompt in the KV cache.
"""

from __future__ import annotations

import copy
import heapq
import itertools
import math
from dataclasses import dataclass

from perllm import physics
from perllm.domain import Decision, Request, ServerSpec
from perllm.prefix import BLOCK_TOKENS, BlockLRU, cached_tokens
from perllm.sim.truth import faster

IDLE, PREFILL, DECODE = 0, 1, 2
_STEP_EPS = 1e-6


@dataclass(slots=True, eq=False)
class Job:
    """A request's life in the simulated world (times in seconds, energies in joules)."""

    request: Request
    decision: Decision
    dispatch_s: float
    arrive_server_s: float = math.nan
    start_s: float = math.nan
    first_token_s: float = math.nan
    finish_s: float = math.nan
    done_s: float = math.nan
    uplink_s: float = 0.0
    downlink_s: float = 0.0
    join_step: float = 0.0
    finish_step: float = 0.0
    energy_mark: float = 0.0
    inference_j: float = 0.0
    idle_j: float = 0.0
    transmission_j: float = 0.0
    cached_tokens: int = 0


def decode_time_s(n: float, ovh: float, c: float, alpha: float, beta: float) -> float:
    """Time of ``n`` decode steps of a segment (see the module docstring)."""
    if n <= 0.0:
        return 0.0
    if alpha >= c or beta <= 0.0:
        per_step = ovh + max(c, alpha)
        return per_step * n + (beta * n * n / 2.0 if alpha >= c else 0.0)
    cross = (c - alpha) / beta
    if n <= cross:
        return (ovh + c) * n
    tail = n - cross
    return (ovh + c) * cross + (ovh + c) * tail + beta * tail * tail / 2.0


def decode_steps(dt: float, ovh: float, c: float, alpha: float, beta: float) -> float:
    """Inverse of :func:`decode_time_s`: steps completed in ``dt`` seconds."""
    if dt <= 0.0:
        return 0.0
    if alpha >= c:
        base, start = ovh + alpha, 0.0
    else:
        if beta <= 0.0:
            return dt / (ovh + c)
        cross = (c - alpha) / beta
        if dt <= (ovh + c) * cross:
            return dt / (ovh + c)
        dt -= (ovh + c) * cross
        base, start = ovh + c, cross
    # Solve base*u + beta*u^2/2 = dt for u >= 0 in a stable form.
    return start + 2.0 * dt / (base + math.sqrt(base * base + 2.0 * beta * dt))


class ServerEngine:
    """State machine of one server. The world calls :meth:`add` and :meth:`wakeup` and schedules
    a wake-up at :meth:`next_event_s` whenever :attr:`version` changes."""

    def __init__(self, spec: ServerSpec) -> None:
        self.spec = spec
        self.perf = spec.perf
        self.power = spec.power
        # Waiting requests, served by (priority, arrival): lower priority values first, as vLLM's
        # ``--scheduling-policy priority`` does (equal priorities: first come, first served).
        self.queue: list[tuple[int, int, Job]] = []
        self.running: list[tuple[float, int, Job]] = []
        self.prefilling: list[Job] = []
        self._seq = itertools.count()
        self.phase = IDLE
        self.phase_end_s = math.inf
        self.version = 0
        self.steps = 0.0
        self.kv_base = 0.0
        self.reserved = 0
        self.queued_prompt = 0
        self._segment = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0)  # start_s, steps0, ovh, c, alpha, beta
        self.idle_since_s = 0.0
        self.energy_acc = 0.0
        self.accounted_s = 0.0
        self.power_w = 0.0
        self.members = 0
        self.busy_s = 0.0
        self.inference_j = 0.0
        self.idle_attributed_j = 0.0
        self._busy_w: list[float] = []
        self.prefix = BlockLRU(spec.kv_capacity_tokens // BLOCK_TOKENS)

    # -- what a router sees --------------------------------------------------------------
    @property
    def batch(self) -> int:
        return len(self.running) + len(self.prefilling)

    def decode_step_s(self) -> float | None:
        """The decode step it runs now (``None`` unless decoding), as its inter-token latency
        metrics show it: its true speed, the prefill pauses apart."""
        if self.phase != DECODE:
            return None
        _, _, overhead, compute, alpha, _ = self._segment
        return overhead + max(compute, alpha)

    def kv_tokens(self) -> float:
        return self.kv_base + len(self.running) * self.steps

    def next_event_s(self) -> float:
        return self.phase_end_s

    # -- transitions -----------------------------------------------------------------------
    def add(self, job: Job, now: float) -> None:
        """A request's upload has reached the server."""
        self._account(now)
        job.arrive_server_s = now
        heapq.heappush(self.queue, (job.decision.priority, next(self._seq), job))
        self.queued_prompt += job.request.routed.prompt_tokens
        if self.phase == IDLE:
            self._continue(now)
        elif self.phase == DECODE and self._admissible(self.queue[0][2]):
            self._sync_decode(now)
            self._continue(now)

    def wakeup(self, now: float) -> list[Job]:
        """Handle the end of a prefill or a decode segment; return the requests that finished."""
        self._account(now)
        if self.phase == PREFILL:
            for job in self.prefilling:
                job.first_token_s = now
                job.join_step = self.steps
                job.finish_step = self.steps + max(job.request.output_tokens - 1, 0)
                self.kv_base += job.request.routed.prompt_tokens + 1 - self.steps
                heapq.heappush(self.running, (job.finish_step, next(self._seq), job))
            self.prefilling = []
        elif self.phase == DECODE:
            self.steps = self.running[0][0]
        finished = []
        while self.running and self.running[0][0] <= self.steps + _STEP_EPS:
            job = heapq.heappop(self.running)[2]
            job.finish_s = now
            job.inference_j = self.energy_acc - job.energy_mark
            request = job.request
            prompt = request.routed.prompt_tokens
            self.kv_base -= prompt + 1 - job.join_step
            self.reserved -= prompt + request.output_tokens
            finished.append(job)
        self._continue(now)
        return finished

    def _admissible(self, job: Job) -> bool:
        batch = len(self.running) + len(self.prefilling)
        if batch == 0:
            return True
        request = job.request
        need = request.routed.prompt_tokens + request.output_tokens
        return batch < self.spec.max_batch and self.reserved + need <= self.spec.kv_capacity_tokens

    def _continue(self, now: float) -> None:
        """Start a prefill for admissible queued requests, else a decode segment, else idle."""
        joiners = []
        while self.queue and self._admissible(self.queue[0][2]):
            job = heapq.heappop(self.queue)[2]
            request = job.request
            prompt_tokens = request.routed.prompt_tokens
            self.queued_prompt -= prompt_tokens
            self.reserved += prompt_tokens + request.output_tokens
            self.prefilling.append(job)
            joiners.append(job)
        if joiners:
            if self.phase == IDLE:
                gap_j = self.power.idle_w * (now - self.idle_since_s)
                joiners[0].idle_j += gap_j
                self.idle_attributed_j += gap_j
            prompt = 0
            for job in joiners:
                job.start_s = now
                job.energy_mark = self.energy_acc
                routed = job.request.routed
                blocks = routed.prefix_blocks
                if blocks:
                    job.cached_tokens = cached_tokens(
                        self.prefix.match(blocks), routed.prompt_tokens
                    )
                    self.prefix.insert(blocks)
                prompt += routed.prompt_tokens - job.cached_tokens
            self.phase = PREFILL
            self.phase_end_s = (
                now + self.perf.prefill_fixed_s + prompt * self.perf.prefill_s_per_token
            )
        elif self.running:
            b = len(self.running)
            perf = self.perf
            alpha = perf.step_weights_s + self.kv_tokens() * perf.step_s_per_kv_token
            segment = (
                now,
                self.steps,
                perf.step_overhead_s,
                b * perf.step_compute_s_per_seq,
                alpha,
                b * perf.step_s_per_kv_token,
            )
            self._segment = segment
            self.phase = DECODE
            n = self.running[0][0] - self.steps
            self.phase_end_s = now + decode_time_s(n, *segment[2:])
        else:
            if self.phase != IDLE:
                self.idle_since_s = now
            self.phase = IDLE
            self.phase_end_s = math.inf
        members = self.members = len(self.running) + len(self.prefilling)
        if members:
            # busy_w(b) memoised per batch size (the same float, computed once).
            cache = self._busy_w
            while len(cache) <= members:
                cache.append(self.power.busy_w(len(cache)))
            self.power_w = cache[members]
        else:
            self.power_w = 0.0
        self.version += 1

    def _sync_decode(self, now: float) -> None:
        start, steps0, ovh, c, alpha, beta = self._segment
        done = decode_steps(now - start, ovh, c, alpha, beta)
        self.steps = min(steps0 + done, self.running[0][0])

    def _account(self, now: float) -> None:
        if self.members:
            dt = now - self.accounted_s
            self.inference_j += self.power_w * dt
            self.energy_acc += physics.batch_share_j(self.power_w, dt, self.members)
            self.busy_s += dt
        self.accounted_s = now

    # -- clairvoyance (for the oracle) ---------------------------------------------------------
    def predict(self, job: Job, arrive_s: float) -> Job:
        """Run a copy of this server forward with ``job`` arriving at ``arrive_s`` and no other
        arrival; return the copy of ``job`` with its times and energies filled in."""
        clone = copy.copy(self)
        clone.queue = [(p, s, copy.copy(j)) for p, s, j in self.queue]
        clone.running = [(f, s, copy.copy(j)) for f, s, j in self.running]
        clone.prefilling = [copy.copy(j) for j in self.prefilling]
        clone.prefix = self.prefix.copy()
        clone._seq = itertools.count(1 << 40)  # later than any entry already in the heap
        while clone.next_event_s() <= arrive_s:
            clone.wakeup(clone.next_event_s())
        probe = copy.copy(job)
        clone.add(probe, arrive_s)
        while math.isnan(probe.finish_s):
            clone.wakeup(clone.next_event_s())
        return probe

    def idle_energy_until(self, horizon_s: float) -> float:
        """Idle energy of the whole run up to ``horizon_s`` (attributed and trailing)."""
        trailing = horizon_s - self.idle_since_s if self.phase == IDLE else 0.0
        return self.idle_attributed_j + self.power.idle_w * max(trailing, 0.0)

    # -- model mismatch ------------------------------------------------------------------------
    def scale_speed(self, now: float, factor: float) -> None:
        """Run ``factor`` times as fast from ``now`` on (``< 1``: throttled). The work left in
        the current prefill or decode segment is re-timed; the power draw is unchanged."""
        self._account(now)
        self.perf = faster(self.perf, factor)
        if self.phase == PREFILL:
            self.phase_end_s = now + (self.phase_end_s - now) / factor
            self.version += 1
        elif self.phase == DECODE:
            self._sync_decode(now)
            self._continue(now)
