"""The simulated world hands each finished request's one Feedback to each sink exactly once: the
recorder, the policy, then the sinks a caller adds."""

from __future__ import annotations

from typing import Any

import pytest

from perllm.cluster import scenario
from perllm.domain import ClusterView, Decision, Feedback, RouterRequest
from perllm.policies.registry import make_policy
from perllm.sim.world import World
from perllm.workload.generator import generate_requests


class Spy:
    def __init__(self) -> None:
        self.seen: list[tuple[float, Feedback]] = []

    def on_feedback(self, now: float, feedback: Feedback) -> None:
        self.seen.append((now, feedback))


class LearningSpy:
    """A registered policy that also keeps the feedback it learns from."""

    def __init__(self, name: str) -> None:
        self.inner = make_policy(name, None, 1)
        self.feedback: list[Feedback] = []

    def select(self, request: RouterRequest, view: ClusterView) -> Decision:
        return self.inner.select(request, view)

    def observe(self, feedback: Feedback) -> None:
        self.feedback.append(feedback)
        self.inner.observe(feedback)

    def forget(self, request: RouterRequest, decision: Decision) -> None:
        self.inner.forget(request, decision)

    def state(self) -> dict[str, Any]:
        return self.inner.state()

    def restore(self, state: dict[str, Any]) -> None:
        self.inner.restore(state)


@pytest.mark.parametrize("policy", ["least-loaded", "feasible-energy"])
def test_each_sink_sees_each_finished_request_once(policy: str) -> None:
    cluster = scenario.load("tiny")
    requests = generate_requests(cluster.workload, 300, 2, rate_rps=40.0)
    learner = LearningSpy(policy)
    first, second = Spy(), Spy()
    world = World(cluster, learner, requests, seed=2, sinks=[first, second])
    columns = world.run().columns
    finished = [i for i, rejected in enumerate(columns["rejected"]) if not rejected]
    assert finished, "nothing finished"
    ids = [columns["id"][i] for i in finished]
    # Every sink saw the same Feedback objects, one per finished request, in finishing order.
    for spy in (first, second):
        assert [f.request.id for _, f in spy.seen] == ids
        assert all(a is b for (_, a), b in zip(spy.seen, learner.feedback, strict=True))
        assert [now for now, _ in spy.seen] == [columns["finish_s"][i] for i in finished]
    assert len(set(ids)) == len(ids)
    assert len(columns["id"]) == len(requests)  # rejected ones are recorded, not fed back
    # The recorder's row is the feedback's.
    for (_, feedback), i in zip(first.seen, finished, strict=True):
        assert columns["processing_s"][i] == feedback.processing_s
        assert columns["transmission_j"][i] == feedback.energy.transmission_j
