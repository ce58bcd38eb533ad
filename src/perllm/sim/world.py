"""The simulated edge-cloud world: requests arrive, a policy places them, links and servers
serve them, feedback flows back to the policy, and the recorder keeps every record.

Life of a request: arrival -> ``policy.select`` -> upload on the server's link (weighted fair
share) -> half an RTT -> the server's queue -> prefill + decode (continuous batching) -> download
on the link -> half an RTT -> done: one :class:`~perllm.domain.Feedback`, handed once to each
sink (the recorder, then the policy, then any sink the caller added).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from perllm import physics
from perllm.cluster.scenario import Cluster, LinkDynamics
from perllm.domain import (
    ClusterView,
    Decision,
    EnergyParts,
    EnergyWeights,
    Feedback,
    FeedbackSink,
    LinkSpec,
    LoadArrays,
    Prediction,
    Request,
    RouterRequest,
    ServerLoad,
    ServerSpec,
)
from perllm.fair_share import Channel
from perllm.metrics.recorder import Recorder
from perllm.metrics.sinks import FanOut, PolicySink
from perllm.policies.base import Policy
from perllm.prefix import PrefixRecord
from perllm.sim.engine import PRIORITY_ARRIVAL, PRIORITY_ENVIRONMENT, PRIORITY_PROGRESS, EventLoop
from perllm.sim.server import Job, ServerEngine
from perllm.sim.truth import true_spec

UP, DOWN = 0, 1


@dataclass(slots=True)
class _LinkState:
    spec: LinkSpec
    dynamics: LinkDynamics
    channels: tuple[Channel, Channel]
    estimate_mbps: float
    servers: tuple[int, ...]
    true_factor: float = 1.0  # the channels carry this times the nominal (model mismatch)


def _arrival_time(request: Request) -> float:
    return request.routed.arrival_s


def _fit_limit(spec: ServerSpec, enforce_context: bool) -> tuple[int, str]:
    """The longest request (prompt + output tokens) ``spec`` can hold, and what limits it."""
    context = spec.context_tokens
    if enforce_context and context is not None and context < spec.kv_capacity_tokens:
        return context, "context window"
    return spec.kv_capacity_tokens, "KV cache"


class SimView:
    """The :class:`ClusterView` (and oracle's clairvoyant view) of a simulated world."""

    def __init__(self, world: World) -> None:
        self._world = world
        self.servers: tuple[ServerSpec, ...] = world.cluster.servers
        self.links: dict[str, LinkSpec] = world.cluster.links
        self.weights: EnergyWeights = world.cluster.weights
        self.admission_control: bool = world.cluster.admission_control
        self._healthy = np.ones(len(self.servers), dtype=bool)
        self._healthy.flags.writeable = False
        self._usable = self._healthy
        self._no_prefix = np.zeros(len(self.servers))
        self._no_prefix.flags.writeable = False

    def now(self) -> float:
        return self._world.loop.now

    def load(self, server: int) -> ServerLoad:
        w = self._world
        return ServerLoad(
            queued=int(w.queued[server]),
            running=int(w.running[server]),
            tokens_in_flight=int(w.tokens[server]),
        )

    def load_arrays(self) -> LoadArrays:
        w = self._world
        return LoadArrays(
            w.queued,
            w.running,
            w.tokens,
            w.link_estimate[w.server_link],
            w.link_weight[w.server_link],
            self._usable,
            w.slowdown,
        )

    def restrict(self, allowed: npt.NDArray[np.bool_] | None) -> None:
        """Show only the ``allowed`` servers as healthy until the next call (``None``: all), as
        the gateway's view of one request does."""
        self._usable = self._healthy if allowed is None else allowed

    def prefix_tokens(self, request: RouterRequest) -> npt.NDArray[np.float64]:
        record = self._world.prefix_record
        if record is None:
            return self._no_prefix
        return record.tokens(request.prefix_blocks, request.prompt_tokens)

    def bandwidth_mbps(self, link: str) -> float:
        return self._world.links[link].estimate_mbps

    def link_active_weight(self, link: str) -> float:
        return self._world.links[link].channels[UP].weight_sum

    def predict(
        self, request: RouterRequest, server: int, share: float, priority: int = 0
    ) -> Prediction:
        """Exact outcome of placing ``request`` on ``server`` now, if nothing else arrives."""
        truth = self._world.true_request(request.id)
        return self._world.predict(truth, server, share, priority)


class World:
    """One simulation run. Build it, call :meth:`run`, read :attr:`recorder`.

    Each finished request's feedback goes to the recorder, then the policy, then each of
    ``sinks`` (once each, at the time the response reaches its user).
    """

    def __init__(
        self,
        cluster: Cluster,
        policy: Policy,
        requests: Sequence[Request],
        *,
        seed: int = 0,
        oracle: Policy | None = None,
        progress: Callable[[int], None] | None = None,
        sinks: Sequence[FeedbackSink] = (),
    ) -> None:
        self.cluster = cluster
        self.policy = policy
        self.oracle = oracle
        self.requests = requests
        self._truth: dict[int, Request] | None = None
        self.progress = progress
        self.loop = EventLoop()
        self.rng = np.random.default_rng(seed)
        # The engines run on the true specs; the view shows the nominal ones (perllm.sim.truth).
        truth = cluster.truth
        self.servers = [
            ServerEngine(true_spec(spec, truth.server(i))) for i, spec in enumerate(cluster.servers)
        ]
        self.server_versions = [-1] * len(self.servers)
        link_names = list(cluster.links)
        self.links: dict[str, _LinkState] = {}
        for name, spec in cluster.links.items():
            factor = truth.bandwidth_factor(name)
            bps = spec.bandwidth_mbps * factor * 1e6
            members = tuple(i for i, s in enumerate(cluster.servers) if s.link == name)
            self.links[name] = _LinkState(
                spec,
                cluster.dynamics[name],
                (Channel(bps), Channel(bps)),
                spec.bandwidth_mbps,
                members,
                factor,
            )
        n = len(self.servers)
        self.server_link = np.array([link_names.index(s.link) for s in cluster.servers])
        self.link_estimate = np.array([self.links[k].estimate_mbps for k in link_names])
        self.link_weight = np.zeros(len(link_names))
        self._link_index = {name: i for i, name in enumerate(link_names)}
        self.queued = np.zeros(n)
        self.slowdown = np.ones(n)  # each server's step as it last showed, over its datasheet's
        self.running = np.zeros(n)
        self.tokens = np.zeros(n)
        self.uploading = [0] * n
        self.uploading_prompt = [0] * n
        self.recorder = Recorder(cluster.servers)
        # The router's record of the prompt blocks it sent (nominal KV sizes: what it knows).
        self.prefix_record = (
            PrefixRecord.for_servers([s.kv_capacity_tokens for s in cluster.servers])
            if cluster.prefix_record
            else None
        )
        self.feedback = FanOut((self.recorder, PolicySink(policy), *sinks))
        self.view = SimView(self)
        # A request longer than a server's limit is refused there; one longer than all of
        # them is refused before any policy sees it (a record with its reason, never a crash).
        self._fit = [_fit_limit(s, cluster.enforce_context_window) for s in cluster.servers]
        self._largest_fit = max(self._fit)
        self._context = np.array(
            [
                s.context_tokens
                if cluster.enforce_context_window and s.context_tokens is not None
                else math.inf
                for s in cluster.servers
            ]
        )
        self._smallest_context = float(self._context.min())
        self.finished = 0
        self._progress_every = max(1, len(requests) // 200)
        self.last_done_s = 0.0
        self._arrivals: Iterator[Request] = iter(())

    # -- running ---------------------------------------------------------------------------
    def run(self) -> Recorder:
        if not self.requests:
            self.recorder.on_end(0.0, {})
            return self.recorder
        # Arrivals are fed one at a time (each schedules the next), so the event heap holds only
        # what is in flight, not every future request. The stable sort keeps the order in which
        # arrivals at equal times used to leave the heap (their index).
        self._arrivals = iter(sorted(self.requests, key=_arrival_time))
        self._schedule_next_arrival()
        for name, state in self.links.items():
            self._schedule_dynamics(name, state, 0.0)
        for server, truth in enumerate(self.cluster.truth.servers):
            if truth.degrades:
                self.loop.schedule(
                    truth.degrade_at_s, PRIORITY_ENVIRONMENT, self._on_degrade, server
                )
        self.loop.run()
        # The last response reaches its user half an RTT after its download ends (the last
        # event): the horizon runs to that completion.
        horizon = max(self.loop.now, self.last_done_s)
        trailing = {}
        for engine in self.servers:
            trailing[engine.spec.name] = engine.idle_energy_until(horizon) - (
                engine.idle_attributed_j
            )
        self.recorder.on_end(horizon, trailing)
        return self.recorder

    def _count_done(self) -> None:
        self.finished += 1
        if self.progress is not None and self.finished % self._progress_every == 0:
            self.progress(self.finished)
        if self.finished == len(self.requests):
            self.loop.stop()

    # -- arrivals and decisions --------------------------------------------------------------
    def _schedule_next_arrival(self) -> None:
        request = next(self._arrivals, None)
        if request is not None:
            self.loop.schedule(
                request.routed.arrival_s, PRIORITY_ARRIVAL, self._on_arrival, request
            )

    def _on_arrival(self, request: Request) -> None:
        self._schedule_next_arrival()
        now = self.loop.now
        routed = request.routed
        tokens = routed.prompt_tokens + request.output_tokens
        if tokens > self._largest_fit[0]:
            limit, what = self._largest_fit
            reason = f"fits no server: {_length(request)} > {limit}, the largest {what}"
            self._refuse(request, reason)
            return
        # As the gateway does, a server whose context window cannot hold the prompt (and the
        # client's max_tokens) is out for this request: a router knows both.
        need = routed.prompt_tokens + (routed.max_output_tokens or 0)
        self.view.restrict(None if need <= self._smallest_context else self._context >= need)
        if self.oracle is not None:
            self._record_oracle(request)
        decision = self.policy.select(routed, self.view)
        if decision.reject or not 0 <= decision.server < len(self.servers):
            self.recorder.on_reject(now, routed)
            self._count_done()
            return
        server = decision.server
        limit, what = self._fit[server]
        if tokens > limit:
            self.policy.forget(routed, decision)
            name = self.cluster.servers[server].name
            self._refuse(request, f"does not fit {name}: {_length(request)} > {limit}, its {what}")
            return
        if self.prefix_record is not None:
            self.prefix_record.sent(server, routed.prefix_blocks)
        job = Job(request, decision, dispatch_s=now)
        self.uploading[server] += 1
        self.uploading_prompt[server] += routed.prompt_tokens
        self._sync_load(server)
        link = self.links[self.cluster.servers[server].link]
        self._transfer(link, UP, job, routed.request_bytes * 8.0)

    def _refuse(self, request: Request, reason: str) -> None:
        self.recorder.on_reject(self.loop.now, request.routed, reason)
        self._count_done()

    def _record_oracle(self, request: Request) -> None:
        assert self.oracle is not None
        choice = self.oracle.select(request.routed, self.view)
        if choice.reject:
            return
        outcome = self.predict(request, choice.server, choice.share)
        weighted = self.cluster.weights.weighted(
            outcome.energy.transmission_j, outcome.energy.inference_j, outcome.energy.idle_j
        )
        self.recorder.on_oracle(
            request.routed, weighted, outcome.processing_s <= request.routed.deadline_s
        )

    # -- links -------------------------------------------------------------------------------
    def _transfer(self, link: _LinkState, direction: int, job: Job, bits: float) -> None:
        channel = link.channels[direction]
        channel.start(self.loop.now, max(bits, 1.0), max(job.decision.share, 1e-6), job)
        self._schedule_channel(link, direction)

    def _schedule_channel(self, link: _LinkState, direction: int) -> None:
        channel = link.channels[direction]
        if direction == UP:
            self.link_weight[self._link_index[link.spec.name]] = channel.weight_sum
        finish = channel.next_finish_s()
        if finish is not None:
            arg = (link, direction, channel.version)
            self.loop.schedule(finish, PRIORITY_PROGRESS, self._on_channel, arg)

    def _on_channel(self, arg: tuple[_LinkState, int, int]) -> None:
        link, direction, version = arg
        channel = link.channels[direction]
        if version != channel.version:
            return
        now = self.loop.now
        spec = link.spec
        half_rtt = spec.rtt_s / 2.0
        for job, link_s in channel.pop_finished(now):
            job.transmission_j += physics.transmission_j(spec.tx_power_w, link_s)
            if direction == UP:
                job.uplink_s = now - job.dispatch_s
                self.loop.schedule(now + half_rtt, PRIORITY_PROGRESS, self._on_delivered, job)
            else:
                job.downlink_s = now - job.finish_s
                job.done_s = now + half_rtt
                self._complete(job)
        self._schedule_channel(link, direction)

    def _schedule_dynamics(self, name: str, state: _LinkState, now: float) -> None:
        dyn = state.dynamics
        if dyn.kind == "fluctuate":
            self.loop.schedule(now + dyn.period_s, PRIORITY_ENVIRONMENT, self._on_bandwidth, name)
        elif dyn.kind == "series":
            for time_s, _ in dyn.points:
                self.loop.schedule(time_s, PRIORITY_ENVIRONMENT, self._on_bandwidth, name)

    def _on_bandwidth(self, name: str) -> None:
        state = self.links[name]
        now = self.loop.now
        dyn = state.dynamics
        if dyn.kind == "fluctuate":
            factor = self.rng.uniform(1.0 - dyn.amplitude, 1.0 + dyn.amplitude)
            mbps = state.spec.bandwidth_mbps * factor
            self._schedule_dynamics(name, state, now)
        else:
            mbps = next(v for t, v in reversed(dyn.points) if t <= now)
        true_bps = mbps * state.true_factor * 1e6
        for direction in (UP, DOWN):
            state.channels[direction].set_bandwidth(now, true_bps)
            self._schedule_channel(state, direction)
        state.estimate_mbps = physics.bandwidth_estimate(state.estimate_mbps, mbps)
        self.link_estimate[self._link_index[name]] = state.estimate_mbps

    # -- servers -----------------------------------------------------------------------------
    def _on_degrade(self, server: int) -> None:
        truth = self.cluster.truth.servers[server]
        self.servers[server].scale_speed(self.loop.now, truth.degrade_speed_factor)
        self._after_server(server)

    def _on_delivered(self, job: Job) -> None:
        server = job.decision.server
        self.uploading[server] -= 1
        self.uploading_prompt[server] -= job.request.routed.prompt_tokens
        self.servers[server].add(job, self.loop.now)
        self._after_server(server)

    def _on_server(self, arg: tuple[int, int]) -> None:
        server, version = arg
        engine = self.servers[server]
        if version != engine.version:
            return
        finished = engine.wakeup(self.loop.now)
        if finished:
            link = self.links[engine.spec.link]
            for job in finished:
                self._transfer(link, DOWN, job, job.request.response_bytes * 8.0)
        self._after_server(server)

    def _after_server(self, server: int) -> None:
        engine = self.servers[server]
        if engine.version != self.server_versions[server]:
            self.server_versions[server] = engine.version
            if engine.phase_end_s < math.inf:
                arg = (server, engine.version)
                self.loop.schedule(engine.phase_end_s, PRIORITY_PROGRESS, self._on_server, arg)
            step = engine.decode_step_s()
            if step is not None:  # a new decode segment: its step as the server's metrics show it
                datasheet = self.cluster.servers[server].perf
                self.slowdown[server] = datasheet.slowdown(step, engine.batch, engine.kv_tokens())
        self._sync_load(server)

    def _sync_load(self, server: int) -> None:
        engine = self.servers[server]
        self.queued[server] = len(engine.queue) + self.uploading[server]
        self.running[server] = engine.batch
        self.tokens[server] = (
            engine.kv_tokens() + engine.queued_prompt + self.uploading_prompt[server]
        )

    # -- completion --------------------------------------------------------------------------
    def _complete(self, job: Job) -> None:
        request = job.request
        routed = request.routed
        processing = job.done_s - routed.arrival_s
        feedback = Feedback(
            request=routed,
            decision=job.decision,
            processing_s=processing,
            transfer_s=job.uplink_s
            + job.downlink_s
            + self.links[self.cluster.servers[job.decision.server].link].spec.rtt_s,
            queue_s=job.start_s - job.arrive_server_s,
            prefill_s=job.first_token_s - job.start_s,
            decode_s=job.finish_s - job.first_token_s,
            output_tokens=request.output_tokens,
            energy=EnergyParts(job.transmission_j, job.inference_j, job.idle_j),
            met=processing <= routed.deadline_s,
            cached_tokens=job.cached_tokens,
        )
        self.last_done_s = max(self.last_done_s, job.done_s)
        self.feedback.on_feedback(job.done_s, feedback)
        self._count_done()

    # -- clairvoyance ------------------------------------------------------------------------
    def true_request(self, request_id: int) -> Request:
        """The ground truth of a request, for the clairvoyant view only: policies are handed
        the routed request (:class:`RouterRequest`), which has no true output length."""
        if self._truth is None:
            self._truth = {r.routed.id: r for r in self.requests}
        return self._truth[request_id]

    def predict(self, request: Request, server: int, share: float, priority: int = 0) -> Prediction:
        now = self.loop.now
        spec = self.cluster.servers[server]
        link = self.links[spec.link]
        up, down = link.channels
        weight = max(share, 1e-6)
        request_bits = max(request.routed.request_bytes * 8.0, 1.0)
        up_end = up.predict_finish_s(now, request_bits, weight)
        job = Job(request, Decision(server=server, share=share, priority=priority), dispatch_s=now)
        probe = self.servers[server].predict(job, up_end + link.spec.rtt_s / 2.0)
        down_end = down.predict_finish_s(
            probe.finish_s, max(request.response_bytes * 8.0, 1.0), weight
        )
        bits = request_bits + max(request.response_bytes * 8.0, 1.0)
        tx = physics.transmission_j(link.spec.tx_power_w, bits / up.bandwidth_bps)
        done = down_end + link.spec.rtt_s / 2.0
        return Prediction(
            processing_s=done - request.routed.arrival_s,
            energy=EnergyParts(tx, probe.inference_j, probe.idle_j),
        )


def _length(request: Request) -> str:
    prompt = request.routed.prompt_tokens
    tokens = prompt + request.output_tokens
    return f"{tokens} tokens ({prompt} prompt + {request.output_tokens} output)"


def simulate(
    cluster: Cluster,
    policy: Policy,
    requests: Sequence[Request],
    *,
    seed: int = 0,
    oracle: Policy | None = None,
    progress: Callable[[int], None] | None = None,
) -> Recorder:
    """Run one simulation and return its recorder."""
    return World(cluster, policy, requests, seed=seed, oracle=oracle, progress=progress).run()


__all__ = ["ClusterView", "SimView", "World", "simulate"]
