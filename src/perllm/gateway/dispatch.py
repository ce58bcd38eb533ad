"""The request path: ask the policy, send upstream, retry elsewhere on failure, learn.

For each call: build a :class:`~perllm.domain.RouterRequest`, ask ``policy.select`` through a
view in which only the backends serving the call's model (and not yet failed for it) may be healthy,
and send it there. A failure before the first byte marks that backend failed for the call (and
counts against its circuit breaker) and the policy is asked again, until a backend answers or
none is left (502, or 503 when no backend is available at all).

Each call is one :class:`~perllm.gateway.call.CallContext`: the dispatcher adds its request and
its attempts to it, and ends each call a backend answered (a plain answer once its body is
read, a stream once its relay has ended, however it ended); the route ends the others.

Each ended attempt becomes one :class:`~perllm.domain.Feedback`, handed once to each sink of
:attr:`Dispatcher.attempt_sinks` (the metrics, the per-backend failure count), then to the
policy. On a backend with a ``power-source`` that has not yet measured a busy interval, the
inference energy is the model's stand-in: counted as modelled, and not shown to the policy as a
measurement (its ``inference_j`` is ``nan`` there), since it would teach the model its own
figure. The attempt that settles a call (the one a backend answered, or the last failed one
when every backend failed) is the call's outcome: :meth:`Dispatcher.on_end`, a sink of every
call's ending, hands it once to :attr:`Dispatcher.outcome_sinks` (the recorder, and any sink
added there), after counting one a backend answered for that backend
(:attr:`Dispatcher.answered`); a call refused before any attempt is recorded as rejected.

If the policy picks a backend that may not take the call (a load-blind policy such as
round-robin ignores health), the least occupied backend that may take it is used instead. Only
backends whose ``max_tokens`` cap admits the call's ``max_tokens``, and whose context window
holds its prompt and ``max_tokens``, may take it (a 400 naming the problem when none does).

A call the gateway cancels (its client went away, or its time limit passed; see
:meth:`~perllm.gateway.call.CallContext.interrupt`) is never retried elsewhere: its attempt
releases its in-flight counts at once. An abandoned attempt teaches the policy nothing and
counts against no backend; a timed-out one is a failed attempt for the policy (the backend was
too slow).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence

import httpx
import numpy as np
import numpy.typing as npt
from starlette.responses import Response

from perllm.domain import Decision, Feedback, FeedbackSink, RouterRequest, ServerSpec
from perllm.gateway.call import CallContext
from perllm.gateway.energy import EnergyAccounts
from perllm.gateway.feedback import (
    Attempt,
    energy_j,
    make_feedback,
    tokens_from_body,
    tokens_from_sse,
    with_energy,
    with_stream_energy,
)
from perllm.gateway.health import HealthChecker
from perllm.gateway.intake import ApiError, Call
from perllm.gateway.metrics import BackendTally, GatewayMetrics
from perllm.gateway.outcome import NO_BACKEND, Ending, Outcome
from perllm.gateway.upstream import (
    AttemptFailed,
    RelayResponse,
    StreamProgress,
    Upstream,
    close_quietly,
    relay,
)
from perllm.gateway.view import LiveView, RestrictedView
from perllm.metrics.recorder import Recorder
from perllm.metrics.sinks import FanOut, PolicySink
from perllm.policies.base import Policy

__all__ = ["Dispatcher", "RollingRecorder"]

log = logging.getLogger(__name__)

PASSED_HEADERS = ("content-type",)
ENERGY_HEADER = "x-perllm-energy-j"


class RollingRecorder:
    """The gateway's recorder (a :class:`~perllm.domain.FeedbackSink`), started afresh once it
    holds ``max_records`` records (bounded memory)."""

    def __init__(self, servers: tuple[ServerSpec, ...], max_records: int) -> None:
        self.servers = servers
        self.max_records = max_records
        self.recorder = Recorder(servers)

    def _current(self) -> Recorder:
        if len(self.recorder) >= self.max_records:
            self.recorder = Recorder(self.servers)
        return self.recorder

    def on_feedback(self, now: float, feedback: Feedback) -> None:
        self._current().on_feedback(now, feedback)

    def on_reject(self, now: float, request: RouterRequest) -> None:
        self._current().on_reject(now, request)


class Dispatcher:
    """Schedules and forwards calls; owns the in-flight bookkeeping of one gateway app.

    ``sinks`` are handed each call's outcome once, after the recorder (see the module
    docstring); :meth:`on_end` is to be a sink of each call's ending.
    """

    def __init__(
        self,
        policy: Policy,
        view: LiveView,
        upstream: Upstream,
        health: HealthChecker,
        metrics: GatewayMetrics,
        energy: EnergyAccounts,
        max_records: int = 100_000,
        sinks: Sequence[FeedbackSink] = (),
    ) -> None:
        self.policy = policy
        self.energy = energy
        self.view = view
        self.upstream = upstream
        self.health = health
        self.metrics = metrics
        self.records = RollingRecorder(view.servers, max_records)
        self.names = [s.name for s in view.servers]
        self.serving: dict[str, npt.NDArray[np.bool_]] = {}
        for server, model_map in enumerate(upstream.model_maps):
            for model in model_map:
                mask = self.serving.setdefault(model, np.zeros(len(self.names), dtype=bool))
                mask[server] = True
        self.max_tokens = np.array([b.max_output_tokens for b in upstream.backends])
        self.context = np.array(
            [b.context_window or math.inf for b in upstream.backends], dtype=float
        )
        self.answered = BackendTally(self.names)
        self.failures = BackendTally(self.names, failed_only=True)
        self.attempt_sinks = FanOut((metrics, self.failures))
        self._learner = PolicySink(policy)
        self.outcome_sinks = FanOut((self.records, *sinks))
        self._ids = itertools.count(1)
        self.active = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.waiting: set[CallContext] = set()  # calls awaiting their upstream work (see watch)
        self._streams: set[StreamProgress] = set()

    def make_request(self, call: Call) -> RouterRequest:
        return RouterRequest(
            id=next(self._ids),
            arrival_s=self.view.now(),
            service_class=call.service_class,
            prompt_tokens=call.prompt_tokens,
            request_bytes=len(call.raw),
            deadline_s=call.deadline_s,
            model=call.model,
            max_output_tokens=call.output_tokens,
            prefix_blocks=call.prefix_blocks,
        )

    def choose(self, request: RouterRequest, allowed: npt.NDArray[np.bool_]) -> Decision:
        """The policy's decision among ``allowed`` backends (:class:`ApiError` 503 if none)."""
        usable = self.view.healthy() & allowed
        if not usable.any():
            raise ApiError(
                503, f"no healthy backend can serve model {request.model!r}", "no_backend"
            )
        decision = self.policy.select(request, RestrictedView(self.view, allowed))
        if decision.reject:
            raise ApiError(
                503, "rejected by admission control: no backend can meet the deadline", "rejected"
            )
        if not 0 <= decision.server < len(usable) or not usable[decision.server]:
            occupancy = self.view.in_flight / self.view.max_batch
            fallback = int(np.argmin(np.where(usable, occupancy, np.inf)))
            decision = dataclasses.replace(decision, server=fallback)
        return decision

    def eligible(self, call: Call) -> npt.NDArray[np.bool_]:
        """The backends that may take ``call``: those whose ``max_tokens`` cap admits its
        ``max_tokens`` and whose context window holds its prompt (estimated) and ``max_tokens``
        (:class:`ApiError` 400 naming the first of these that no backend meets)."""
        serving = self.serving[call.model]
        allowed = serving.copy()
        if call.max_tokens is not None:
            allowed &= self.max_tokens >= call.max_tokens
            if not allowed.any():
                most = int(self.max_tokens[serving].max())
                raise ApiError(
                    400,
                    f"'max_tokens' of {call.max_tokens} exceeds the most any backend serving "
                    f"model {call.model!r} allows ({most})",
                    "max_tokens_too_large",
                )
        needed = call.prompt_tokens + (call.max_tokens or 0)
        fits = allowed & (self.context >= needed)
        if not fits.any():
            largest = int(self.context[allowed].max())
            asked = "" if call.max_tokens is None else f" plus 'max_tokens' of {call.max_tokens}"
            raise ApiError(
                400,
                f"the prompt of about {call.prompt_tokens} tokens{asked} exceeds the context "
                f"window of every backend serving model {call.model!r} (at most {largest})",
                "context_length_exceeded",
            )
        return fits

    async def dispatch(self, ctx: CallContext) -> Response:
        """Answer one validated call, ``ctx.call`` (raises :class:`ApiError` when no backend
        can); a backend's answer ends the call (a stream's once its relay has ended).

        The call counts as in flight (see :meth:`drain`) until its answer is complete: for a
        stream, until the relay has ended.
        """
        if ctx.call is None:
            raise ValueError(f"request {ctx.request_id}: dispatched before its call was parsed")
        self.active += 1
        self._idle.clear()
        try:
            response = await self._dispatch(ctx, ctx.call)
        except BaseException:
            self._leave()
            raise
        if not isinstance(response, RelayResponse):
            self._leave()
        return response

    def _leave(self) -> None:
        self.active -= 1
        if self.active == 0:
            self._idle.set()

    async def _dispatch(self, ctx: CallContext, call: Call) -> Response:
        allowed = self.eligible(call)
        request = ctx.request = self.make_request(call)
        errors: list[str] = []
        while True:
            try:
                decision = self.choose(request, allowed)
            except ApiError:
                last = ctx.attempts[-1].feedback if ctx.attempts else None
                if last is None:
                    ctx.reject(self.view.now())
                    raise
                ctx.settle(self.view.now(), last)
                message = "all backends failed: " + "; ".join(errors)
                raise ApiError(502, message, "upstream_error") from None
            self.metrics.decided(decision.server)
            try:
                return await self._attempt(ctx, call, request, decision)
            except AttemptFailed as err:
                errors.append(str(err))
                allowed[decision.server] = False
                self.metrics.retried(decision.server)
                self.health.breakers[decision.server].record_failure(time.monotonic())
                log.info("retrying request %s elsewhere: %s", ctx.request_id, err)

    async def _attempt(
        self, ctx: CallContext, call: Call, request: RouterRequest, decision: Decision
    ) -> Response:
        server = decision.server
        batch = self.view.begin(server, request)
        attempt = Attempt(request, decision, batch, sent_s=self.view.now(), streamed=call.stream)
        ctx.attempts.append(attempt)
        self.energy.begin(server, attempt.sent_s)
        try:
            response = await self.upstream.open(call, server, decision, ctx.request_id)
            if call.stream and response.status_code < 400:
                chunks, first = await self.upstream.first_chunk(response, server)
            else:
                content = await self.upstream.read_all(response, server)
        except BaseException:
            # Failed before the first byte (retried elsewhere), cancelled by the gateway
            # (client gone, time limit, shutdown), or an unexpected error.
            attempt.end_s = self.view.now()
            if ctx.cancelled_for in ("abandoned", "shutdown"):
                self._abandon(attempt)
            else:
                self._finish(attempt, failed=True)
            raise
        name = self.names[server]
        headers = {
            "x-perllm-backend": name,
            "x-perllm-request-id": str(request.id),
        }
        if math.isfinite(decision.estimate_s):  # policies without an estimate send none
            headers["x-perllm-estimate-ms"] = f"{decision.estimate_s * 1000.0:.3f}"
        self.health.breakers[server].record_success()
        if response.status_code >= 400 or not call.stream:
            attempt.end_s = attempt.first_byte_s = self.view.now()
            attempt.response_bytes = len(content)
            if response.status_code < 400:
                attempt.output_tokens, attempt.cached_tokens = tokens_from_body(content)
            feedback = self._finish(attempt, failed=response.status_code >= 400, settles=ctx)
            for passed in PASSED_HEADERS:
                if passed in response.headers:
                    headers[passed] = response.headers[passed]
            if response.status_code < 400:
                source = self._energy_source(attempt)
                headers[ENERGY_HEADER] = str(energy_j(feedback.energy))
                content = with_energy(content, feedback.energy, source)
            answer = Response(content, status_code=response.status_code, headers=headers)
            outcome: Outcome = "answered" if response.status_code < 400 else "error"
            ctx.end(outcome, response.status_code, f"backend {name}", backend=name)
            return answer
        attempt.first_byte_s = self.view.now()
        progress = StreamProgress(
            on_chunk=lambda n: self._streamed_tokens(attempt, n),
            on_done=lambda p: self._stream_done(ctx, attempt, p),
        )
        options = call.body.get("stream_options") or {}
        if options.get("include_usage"):
            progress.rewrite = lambda chunk: self._stream_energy(attempt, progress, chunk)
        self._streams.add(progress)
        headers["cache-control"] = "no-cache"
        body = relay(response, chunks, first, progress, name, ctx.remaining_s())
        return RelayResponse(body, self._ender(response, progress), headers)

    @staticmethod
    def _ender(response: httpx.Response, progress: StreamProgress) -> Callable[[], Awaitable[None]]:
        async def end() -> None:
            progress.finish()
            await close_quietly(response)

        return end

    def _streamed_tokens(self, attempt: Attempt, tokens: int) -> None:
        attempt.view_tokens += tokens
        self.view.add_tokens(attempt.decision.server, tokens)

    def _stream_done(self, ctx: CallContext, attempt: Attempt, progress: StreamProgress) -> None:
        """Account for a stream whose relay has ended, and end its call."""
        self._streams.discard(progress)
        self._leave()
        attempt.end_s = self.view.now()
        attempt.response_bytes = progress.size_bytes
        attempt.output_tokens, attempt.cached_tokens = tokens_from_sse(
            progress.tail, progress.events
        )
        name = self.names[attempt.decision.server]
        outcome = progress.outcome
        status = {"ok": "200", "failed": "error", "timeout": "timeout"}.get(outcome, "client-gone")
        if progress.stop_code == "shutting_down":
            status = "shutdown"
        if outcome == "client-gone":
            # A client that went away says nothing about the backend: nothing is learned.
            self._abandon(attempt)
            detail = f"client went away mid-stream from backend {name}"
            ctx.end("abandoned", status, detail, backend=name)
            return
        if outcome == "failed":
            self.health.breakers[attempt.decision.server].record_failure(time.monotonic())
        self._finish(attempt, failed=outcome != "ok", settles=ctx)
        if outcome == "ok":
            ctx.end("answered", 200, f"streamed by backend {name}", backend=name)
        else:
            ctx.end("stream-error", status, progress.error, backend=name)

    def _abandon(self, attempt: Attempt) -> None:
        """End an abandoned attempt: its in-flight counts, and what the policy keeps for it
        (nothing is learned or counted)."""
        self._release(attempt)
        self.policy.forget(attempt.request, attempt.decision)

    def _release(self, attempt: Attempt) -> None:
        """Give back an attempt's in-flight counts, and close its energy account."""
        server = attempt.decision.server
        self.view.end(server, attempt.request.prompt_tokens + attempt.view_tokens)
        end = attempt.end_s if math.isfinite(attempt.end_s) else self.view.now()
        self.energy.end(server, attempt.sent_s, end, attempt.request.service_class)

    def _stream_energy(self, attempt: Attempt, progress: StreamProgress, chunk: bytes) -> bytes:
        """``chunk`` with the stream's energy so far in its usage event, if it has one."""
        if b'"usage"' not in chunk:
            return chunk
        now = dataclasses.replace(
            attempt, end_s=self.view.now(), response_bytes=progress.size_bytes
        )
        server = attempt.decision.server
        spec = self.view.servers[server]
        measured = self.energy.provisional_j(server, now.sent_s, now.end_s)
        energy = make_feedback(
            now, spec, self.view.links[spec.link], float(self.view.bandwidth[server]), measured
        ).energy
        source = "modelled" if measured is None else "measured"
        return with_stream_energy(chunk, energy, source)

    def _energy_source(self, attempt: Attempt) -> str:
        """Whether a call's inference energy is ``measured`` or ``modelled``."""
        server = attempt.decision.server
        measured = self.energy.provisional_j(server, attempt.sent_s, attempt.end_s)
        return "modelled" if measured is None else "measured"

    @property
    def recorder(self) -> Recorder:
        """The records of the latest calls (at most ``max_records``)."""
        return self.records.recorder

    def _finish(
        self, attempt: Attempt, *, failed: bool, settles: CallContext | None = None
    ) -> Feedback:
        """End an attempt that ran: its in-flight counts, and its feedback to the attempt sinks
        and the policy; the outcome of the call it ``settles``, if it does."""
        server = attempt.decision.server
        self._release(attempt)
        spec = self.view.servers[server]
        measured = self.energy.provisional_j(server, attempt.sent_s, attempt.end_s)
        feedback = make_feedback(
            attempt,
            spec,
            self.view.links[spec.link],
            float(self.view.bandwidth[server]),
            measured,
            failed=failed,
        )
        name, service_class = self.names[server], attempt.request.service_class
        energy = feedback.energy
        self.energy.spend(name, service_class, "transmission", "modelled", energy.transmission_j)
        if measured is None:  # a measured one is counted once settled
            self.energy.spend(name, service_class, "inference", "modelled", energy.inference_j)
        if not failed and not attempt.streamed:
            # A measured download rate (not part of the feedback, which used the estimate).
            self.view.observe_transfer(
                server, attempt.response_bytes, attempt.end_s - attempt.sent_s
            )
        now = self.view.now()
        self.attempt_sinks.on_feedback(now, feedback)
        if measured is None and self.energy.ledgers[server] is not None:
            unmeasured = dataclasses.replace(feedback.energy, inference_j=math.nan)
            self._learner.on_feedback(now, dataclasses.replace(feedback, energy=unmeasured))
        else:
            self._learner.on_feedback(now, feedback)
        attempt.feedback = feedback
        if settles is not None:
            settles.settle(now, feedback)
        return feedback

    def on_end(self, ending: Ending) -> None:
        """A call's outcome to the outcome sinks, once (a sink of each call's ending): the
        attempt that settled it, counted first for the backend that answered it, if one did;
        or its request refused before any attempt, to the recorder."""
        if ending.feedback is not None:
            if ending.backend != NO_BACKEND:
                self.answered.on_feedback(ending.settled_s, ending.feedback)
            self.outcome_sinks.on_feedback(ending.settled_s, ending.feedback)
        elif ending.rejected is not None:
            self.records.on_reject(ending.settled_s, ending.rejected)

    def stop_all(self, reason: str) -> None:
        """End every call in flight now: streams with an SSE error event saying ``reason``,
        the others (see :func:`perllm.gateway.watch.watched`) with a ``503``."""
        for ctx in list(self.waiting):
            ctx.interrupt("shutdown")
        for progress in list(self._streams):
            progress.stop(reason)

    async def drain(self, timeout_s: float) -> bool:
        """Wait until no call is in flight (at most ``timeout_s``); returns whether it did."""
        if self._idle.is_set():
            return True
        if math.isinf(timeout_s):
            await self._idle.wait()
            return True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True
