"""Domain types shared by every part of perllm: the simulator, the policies and the gateway.

Everything here is a plain frozen dataclass or a Protocol. Validation of user input happens at
the edges (YAML, CLI, HTTP) with pydantic; inside, these types are trusted.

Units are part of the names: ``_s`` seconds, ``_mbps`` megabits per second, ``_j`` joules,
``_w`` watts, ``_tokens`` tokens, ``_bytes`` bytes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, NamedTuple, Protocol

import numpy as np
import numpy.typing as npt

from perllm import physics
from perllm.physics import BYTES_PER_TOKEN as BYTES_PER_TOKEN
from perllm.physics import CHARS_PER_TOKEN as CHARS_PER_TOKEN
from perllm.physics import RESPONSE_OVERHEAD_BYTES as RESPONSE_OVERHEAD_BYTES
from perllm.physics import response_bytes as response_bytes

Tier = Literal["edge", "cloud"]
TIERS: tuple[Tier, ...] = ("edge", "cloud")


@dataclass(frozen=True, slots=True)
class RouterRequest:
    """A request as a router sees it when it arrives: what a policy may read.

    ``deadline_s`` is the service's processing-time requirement: the time from arrival to the
    last byte of the response, in seconds. ``max_output_tokens`` is the client's cap on the
    answer (``max_tokens``) when it sent one. ``prefix_blocks`` are the chained hashes of the
    prompt's blocks (:mod:`perllm.prefix`), which a router computes from the prompt it holds.
    The true output length, and the response size that follows from it, are *not* here: a
    router learns them only when the answer ends.
    """

    id: int
    arrival_s: float
    service_class: str
    prompt_tokens: int
    request_bytes: int
    deadline_s: float
    model: str | None = None
    max_output_tokens: int | None = None
    prefix_blocks: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Request:
    """One LLM service request with its ground truth (the simulator's view of it).

    :attr:`routed` is the request as a router sees it (:class:`RouterRequest`), the only part a
    policy is handed; ``output_tokens`` is the true output length and ``response_bytes`` the
    true response size, which only the simulator and the clairvoyant references may read. A
    :class:`Request` is not a :class:`RouterRequest`, so that passing the truth to a policy is
    a type error rather than a convention. :meth:`of` builds one from flat values.
    """

    routed: RouterRequest
    output_tokens: int
    response_bytes: int

    @classmethod
    def of(
        cls,
        id: int,
        arrival_s: float,
        service_class: str,
        prompt_tokens: int,
        output_tokens: int,
        request_bytes: int,
        response_bytes: int,
        deadline_s: float,
        model: str | None = None,
        prefix_blocks: tuple[int, ...] = (),
    ) -> Request:
        """A request from its router's fields and its ground truth, in the order a workload
        lists them (the prompt's ``prefix_blocks`` are :attr:`RouterRequest.prefix_blocks`; the
        client sets no ``max_output_tokens``)."""
        routed = RouterRequest(
            id,
            arrival_s,
            service_class,
            prompt_tokens,
            request_bytes,
            deadline_s,
            model,
            prefix_blocks=prefix_blocks,
        )
        return cls(routed, output_tokens, response_bytes)


@dataclass(frozen=True, slots=True)
class PowerSpec:
    """Electrical power of one server.

    While busy with a batch of ``b`` requests the server draws
    ``idle_w + (max_w - idle_w) * min(1, batch1_fraction + log2_slope * log2(b))``;
    while idle it draws ``idle_w``.
    """

    idle_w: float
    max_w: float
    batch1_fraction: float = 0.43
    log2_slope: float = 0.066

    def busy_w(self, batch: int) -> float:
        """Power drawn while running a batch of ``batch`` requests (``batch >= 1``;
        :func:`perllm.physics.busy_power_w`)."""
        return physics.busy_power_w(
            self.idle_w, self.max_w, self.batch1_fraction, self.log2_slope, batch
        )


@dataclass(frozen=True, slots=True)
class ServerPerf:
    """Performance coefficients of one (hardware, model) deployment.

    Derived by :mod:`perllm.perf` from hardware and model numbers, or fitted by calibration.

    - prefill of ``n`` prompt tokens takes ``prefill_fixed_s + n * prefill_s_per_token``;
    - one decode step of a batch of ``b`` sequences holding ``kv`` cached tokens takes
      ``step_overhead_s + max(compute, memory)`` (a roofline) with
      ``compute = step_compute_s_per_seq * b`` and
      ``memory = step_weights_s + kv * step_s_per_kv_token``.
    """

    prefill_fixed_s: float
    prefill_s_per_token: float
    step_overhead_s: float
    step_weights_s: float
    step_s_per_kv_token: float
    step_compute_s_per_seq: float

    def prefill_s(self, prompt_tokens: int) -> float:
        """Time to prefill ``prompt_tokens`` tokens (also the time to the first token;
        :func:`perllm.physics.prefill_s`)."""
        return physics.prefill_s(self.prefill_fixed_s, self.prefill_s_per_token, prompt_tokens)

    def step_s(self, batch: int, kv_tokens: float) -> float:
        """Time of one decode step for ``batch`` sequences holding ``kv_tokens`` cached tokens
        (:func:`perllm.physics.step_s`)."""
        return physics.step_s(
            self.step_overhead_s,
            self.step_compute_s_per_seq,
            self.step_weights_s,
            self.step_s_per_kv_token,
            batch,
            kv_tokens,
        )

    def slowdown(self, step_s: float, batch: int, kv_tokens: float) -> float:
        """How many times longer than these coefficients say a decode step of ``batch``
        sequences holding ``kv_tokens`` cached tokens took, observed at ``step_s``."""
        return step_s / self.step_s(batch, kv_tokens)


@dataclass(frozen=True, slots=True)
class ServerSpec:
    """Static description of one LLM server: what a router can know before any request."""

    name: str
    tier: Tier
    hardware: str
    model: str
    max_batch: int
    kv_capacity_tokens: int
    perf: ServerPerf
    power: PowerSpec
    link: str
    context_tokens: int | None = None  # the model's context window (prompt + output), if known


@dataclass(frozen=True, slots=True)
class LinkSpec:
    """A network link between the users and a server (shared by every server behind it).

    ``tx_power_w`` is the power the link draws while it moves bytes (the radio / NIC and
    network share attributed to the users' transfers), however many transfers share it; a
    transfer's transmission energy is ``tx_power_w`` times its share of the link's busy time,
    its bytes at the link's bandwidth, the round trip excluded
    (:func:`perllm.physics.transmission_j`).
    """

    name: str
    bandwidth_mbps: float
    rtt_s: float
    tx_power_w: float


@dataclass(frozen=True, slots=True)
class EnergyWeights:
    """The paper's weights on the three energy parts."""

    transmission: float = 1.0
    inference: float = 1.0
    idle: float = 1.0

    def weighted(self, transmission_j: float, inference_j: float, idle_j: float) -> float:
        return (
            self.transmission * transmission_j + self.inference * inference_j + self.idle * idle_j
        )


@dataclass(frozen=True, slots=True)
class Decision:
    """Where a request runs, what share of the link it gets and its place in the server's queue.

    ``share`` is the request's weight in weighted fair sharing of its link's bandwidth
    (1.0 is a full fair share). ``priority`` orders the server's waiting queue, lower values
    first and first come, first served among equals (vLLM's ``--scheduling-policy priority``);
    a running request is not preempted. ``reject`` refuses the request at admission (counted,
    never silently dropped). ``estimate_s`` is the policy's estimate of the request's
    processing time, if it makes one (the gateway reports it to the client). What a policy keeps
    to learn from the request's feedback stays in the policy, keyed by the request's id.
    """

    server: int
    share: float = 1.0
    reject: bool = False
    estimate_s: float = math.nan
    priority: int = 0


REJECT = Decision(server=-1, share=0.0, reject=True)

DEFERRED_PRIORITY = 1 << 50
"""A queue priority after any other a policy gives (deadline-based ones are milliseconds): for
requests that can no longer meet their deadline, so that they wait behind all that can."""


@dataclass(frozen=True, slots=True)
class EnergyParts:
    transmission_j: float = 0.0
    inference_j: float = 0.0
    idle_j: float = 0.0

    @property
    def total_j(self) -> float:
        return self.transmission_j + self.inference_j + self.idle_j


@dataclass(frozen=True, slots=True)
class Feedback:
    """What a world (simulated or real) reports after executing a decision.

    Times are in seconds; a part that is not known is ``nan``. ``processing_s`` is the time from
    arrival to the last byte of the response. ``cached_tokens`` are the prompt tokens the server
    took from its prefix cache instead of prefilling them (0 where unknown).
    """

    request: RouterRequest
    decision: Decision
    processing_s: float
    transfer_s: float
    queue_s: float
    prefill_s: float
    decode_s: float
    output_tokens: int
    energy: EnergyParts
    met: bool
    failed: bool = False
    cached_tokens: int = 0


class FeedbackSink(Protocol):
    """Anything that learns or counts from finished requests: the world (simulated or live)
    builds one :class:`Feedback` per finished request and hands it to each of its sinks once
    (the recorder, the policy through :class:`perllm.metrics.sinks.PolicySink`, the gateway's
    metrics and counters). ``now`` is the world's time of the finish, in seconds."""

    def on_feedback(self, now: float, feedback: Feedback) -> None: ...


@dataclass(frozen=True, slots=True)
class ServerLoad:
    """Live load of one server as a router sees it."""

    queued: int = 0
    running: int = 0
    tokens_in_flight: int = 0
    healthy: bool = True


@dataclass(frozen=True, slots=True)
class Prediction:
    """A clairvoyant prediction of one assignment (only the oracle's view gives these)."""

    processing_s: float
    energy: EnergyParts


class LoadArrays(NamedTuple):
    """Live load of every server at once, indexed like ``ClusterView.servers`` (read-only)."""

    queued: npt.NDArray[np.float64]
    running: npt.NDArray[np.float64]
    tokens_in_flight: npt.NDArray[np.float64]
    bandwidth_mbps: npt.NDArray[np.float64]
    link_active_weight: npt.NDArray[np.float64]
    healthy: npt.NDArray[np.bool_]
    slowdown: npt.NDArray[np.float64]
    """Each server's decode step as its metrics last showed it, over its datasheet's step at the
    batch and cache it then had (:meth:`ServerPerf.slowdown`); 1 until it shows one."""


class ClusterView(Protocol):
    """What a real router could know at decision time. Never the future."""

    @property
    def servers(self) -> tuple[ServerSpec, ...]: ...

    @property
    def links(self) -> dict[str, LinkSpec]: ...

    @property
    def weights(self) -> EnergyWeights: ...

    @property
    def admission_control(self) -> bool: ...

    def now(self) -> float:
        """The router's clock, in seconds (the clock of ``RouterRequest.arrival_s``)."""
        ...

    def load_arrays(self) -> LoadArrays:
        """Every server's load, its link's bandwidth estimate and active transfer weight."""
        ...

    def prefix_tokens(self, request: RouterRequest) -> npt.NDArray[np.float64]:
        """Per server, the tokens of ``request``'s prompt prefix that the router has itself
        sent there recently (:class:`perllm.prefix.PrefixRecord`): what it may expect the
        server to have cached. Zeros where the router keeps no record (read-only)."""
        ...


class ClairvoyantView(ClusterView, Protocol):
    """The clairvoyant references' view: exact state and true output lengths, via exact
    predictions (the world looks the request's ground truth up by its id)."""

    def predict(
        self, request: RouterRequest, server: int, share: float, priority: int = 0
    ) -> Prediction:
        """Exact outcome of sending ``request`` to ``server`` now with queue ``priority``, with
        no later arrivals."""
        ...
