"""The simulated world as a whole: event counts, clairvoyant predictions, large clocks."""

from __future__ import annotations

import dataclasses
import heapq
from typing import Any, ClassVar

import numpy as np
import pytest

from perllm.cluster import scenario
from perllm.domain import ClusterView, Decision, Feedback, Prediction, Request, RouterRequest
from perllm.policies.registry import make_policy
from perllm.sim import engine as engine_module
from perllm.sim import world as world_module
from perllm.sim.world import World
from perllm.workload.generator import generate_requests


class CountingLoop(engine_module.EventLoop):
    """An event loop that counts the events it handles and refuses to run forever."""

    __slots__ = ("handled", "limit")

    def __init__(self) -> None:
        super().__init__()
        self.handled = 0
        self.limit = 2_000_000

    def run(self) -> None:
        heap = self._heap
        while heap and not self.stopped:
            time, _, _, handler, arg = heapq.heappop(heap)
            self.now = time
            handler(arg)
            self.handled += 1
            if self.handled > self.limit:
                raise AssertionError("the event loop does not terminate")


@pytest.fixture
def counting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(world_module, "EventLoop", CountingLoop)


def _run(cluster: Any, policy: str, requests: list[Request], seed: int = 0) -> World:
    world = World(cluster, make_policy(policy, None, seed), requests, seed=seed)
    world.run()
    return world


def _routed(request: Request, **changes: Any) -> Request:
    """``request`` with ``changes`` to what its router sees."""
    return dataclasses.replace(request, routed=dataclasses.replace(request.routed, **changes))


def _longer(requests: list[Request], factor: int) -> list[Request]:
    return [
        dataclasses.replace(
            _routed(r, deadline_s=r.routed.deadline_s * factor),
            output_tokens=r.output_tokens * factor,
            response_bytes=r.response_bytes * factor,
        )
        for r in requests
    ]


@pytest.mark.usefixtures("counting")
@pytest.mark.parametrize("policy", ["round-robin", "least-loaded"])
def test_events_scale_with_requests_not_tokens(policy: str) -> None:
    cluster = scenario.load("tiny")
    base = generate_requests(cluster.workload, 200, seed=11, rate_rps=0.5)
    short = _run(cluster, policy, base)
    long = _run(cluster, policy, _longer(base, 10))
    tokens = sum(r.output_tokens for r in base)
    events_short = short.loop.handled  # type: ignore[attr-defined]
    events_long = long.loop.handled  # type: ignore[attr-defined]
    assert tokens > 20 * len(base)
    assert events_short < 15 * len(base)
    assert events_long < 15 * len(base)
    assert events_long / events_short < 1.5, (events_short, events_long)
    assert long.recorder.horizon_s > short.recorder.horizon_s


@pytest.mark.usefixtures("counting")
def test_a_very_long_answer_costs_a_handful_of_events() -> None:
    cluster = scenario.load("tiny")
    # 30,000 tokens: as long as edge-0's KV cache (35,027 tokens) holds.
    request = Request.of(0, 0.0, "chat", 100, 30_000, 400, 120_512, 1e9)
    world = _run(cluster, "round-robin", [request])
    assert world.loop.handled <= 8  # type: ignore[attr-defined]
    assert world.recorder.columns["output_tokens"] == [30_000]


@pytest.mark.usefixtures("counting")
def test_events_grow_linearly_with_requests() -> None:
    cluster = scenario.load("tiny")
    small = _run(cluster, "round-robin", generate_requests(cluster.workload, 100, 2, 1.0))
    large = _run(cluster, "round-robin", generate_requests(cluster.workload, 400, 2, 1.0))
    per_small = small.loop.handled / 100  # type: ignore[attr-defined]
    per_large = large.loop.handled / 400  # type: ignore[attr-defined]
    assert per_large == pytest.approx(per_small, rel=0.25)


# -- clairvoyant predictions through the world's view ---------------------------------------------


class PredictingPolicy:
    """Round-robin that asks the clairvoyant view what each placement will give."""

    name: ClassVar[str] = "predicting"

    def __init__(self) -> None:
        self.next = 0
        self.predictions: dict[int, Prediction] = {}

    def select(self, request: RouterRequest, view: ClusterView) -> Decision:
        server = self.next % len(view.servers)
        self.next += 1
        share = 1.0 + (request.id % 3) / 2
        self.predictions[request.id] = view.predict(request, server, share)  # type: ignore[attr-defined]
        return Decision(server=server, share=share)

    def observe(self, feedback: Feedback) -> None:
        return None

    def state(self) -> dict[str, Any]:
        return {}

    def restore(self, state: dict[str, Any]) -> None:
        return None


def _assert_exact(prediction: Prediction, cols: dict[str, list[Any]], i: int) -> None:
    assert prediction.processing_s == pytest.approx(cols["processing_s"][i], rel=1e-9)
    energy = prediction.energy
    assert energy.inference_j == pytest.approx(cols["inference_j"][i], rel=1e-9)
    assert energy.idle_j == pytest.approx(cols["idle_j"][i], rel=1e-9, abs=1e-12)
    # The world sums a transfer's link time from differences of clock readings (a
    # millisecond-long upload at a clock of minutes keeps about 8 digits of it).
    assert energy.transmission_j == pytest.approx(cols["transmission_j"][i], rel=1e-7)


def test_prediction_of_the_last_arrival_is_exact() -> None:
    # Fixed links: once the last request has arrived, nothing unforeseen happens.
    cluster = scenario.load("tiny")
    requests = generate_requests(cluster.workload, 60, seed=9, rate_rps=3.0)
    policy = PredictingPolicy()
    recorder = World(cluster, policy, requests).run()
    cols = recorder.columns
    last = requests[-1].routed.id
    _assert_exact(policy.predictions[last], cols, cols["id"].index(last))


def test_predictions_of_isolated_requests_are_exact() -> None:
    cluster = scenario.load("tiny")
    base = generate_requests(cluster.workload, 12, seed=9)
    requests = [_routed(r, arrival_s=1000.0 * i) for i, r in enumerate(base)]
    policy = PredictingPolicy()
    recorder = World(cluster, policy, requests).run()
    cols = recorder.columns
    for i, rid in enumerate(cols["id"]):
        _assert_exact(policy.predictions[int(rid)], cols, i)


def test_predictions_never_undershoot_the_run_when_later_arrivals_only_add_load() -> None:
    # With fixed links and FIFO servers, a later arrival can only delay an earlier request.
    cluster = scenario.load("tiny")
    requests = generate_requests(cluster.workload, 80, seed=10, rate_rps=3.0)
    policy = PredictingPolicy()
    recorder = World(cluster, policy, requests).run()
    for i, rid in enumerate(recorder.columns["id"]):
        actual = float(recorder.columns["processing_s"][i])
        assert policy.predictions[int(rid)].processing_s <= actual * (1 + 1e-9) + 1e-9


# -- large clocks -------------------------------------------------------------------------------


@pytest.mark.usefixtures("counting")
@pytest.mark.parametrize("offset_s", [1e8, 1.7e9])
def test_large_arrival_times_terminate_and_shift_nothing(offset_s: float) -> None:
    # A JSONL trace may carry epoch timestamps: the run must end and give the same answers.
    cluster = scenario.load("tiny")
    base = generate_requests(cluster.workload, 150, seed=12)
    shifted = [_routed(r, arrival_s=r.routed.arrival_s + offset_s) for r in base]
    a = _run(cluster, "round-robin", base).recorder
    b = _run(cluster, "round-robin", shifted).recorder
    pa = np.array(a.columns["processing_s"])
    pb = np.array(b.columns["processing_s"])
    assert len(pb) == 150
    # The clock's resolution at 1.7e9 s is 0.24 us: times agree to a few of those.
    assert np.allclose(pb, pa, rtol=0, atol=1e-4)
    assert np.allclose(b.columns["inference_j"], a.columns["inference_j"], rtol=1e-4)


def test_rejections_are_recorded_and_end_the_run() -> None:
    class RejectEveryOther(PredictingPolicy):
        def select(self, request: RouterRequest, view: ClusterView) -> Decision:
            if request.id % 2:
                return Decision(server=-1, reject=True)
            return Decision(server=0)

    cluster = scenario.load("tiny")
    requests = generate_requests(cluster.workload, 40, seed=1)
    recorder = World(cluster, RejectEveryOther(), requests).run()
    assert len(recorder) == 40
    assert recorder.columns["rejected"].count(True) == 20
    assert recorder.horizon_s > 0


def test_request_order_in_the_input_does_not_matter() -> None:
    cluster = scenario.load("perllm-paper")
    requests = generate_requests(cluster.workload, 150, seed=6)
    # Two requests at the same instant keep their input order (id order here).
    requests[5] = _routed(requests[5], arrival_s=requests[4].routed.arrival_s)
    a = _run(cluster, "cs-ucb", requests, seed=1).recorder
    shuffled = list(reversed(requests))
    shuffled[-5], shuffled[-6] = shuffled[-6], shuffled[-5]  # keep 4 before 5
    b = _run(cluster, "cs-ucb", shuffled, seed=1).recorder
    assert a.columns["id"] == b.columns["id"]
    assert a.columns["finish_s"] == b.columns["finish_s"]
    assert a.columns["server"] == b.columns["server"]
