"""CS-UCB's wait behind a queue that keeps filling: later arrivals with earlier deadlines pass a
queued request (``passed_wait`` and the router's traffic that feeds it)."""

from __future__ import annotations

from typing import Any

import pytest

from perllm.policies.cs_ucb_kernel import passed_wait
from perllm.policies.outstanding import Traffic
from perllm.policies.registry import make_policy


def test_without_traffic_the_wait_is_the_work_ahead_now() -> None:
    # Nobody placed lately and nothing answered: the model's drain, nobody passing.
    assert passed_wait(2.0, 4.0, 8.0, 0.0, 0.0, 1.0, 30.0) == pytest.approx(2.0)


def test_the_requests_that_pass_lengthen_the_wait_by_their_share() -> None:
    # 4 requests to finish before it, drained at 2 a second; the router sends 2 a second.
    behind, service, slots = 4.0, 4.0, 8.0
    queue_s = behind * service / slots
    args = (queue_s, service, slots, 2.0, 0.0)
    head, middle, tail = (passed_wait(*args, rank, 30.0) for rank in (0.0, 0.5, 1.0))
    assert head == pytest.approx(queue_s)  # at the head of the order, nobody passes it
    assert middle == pytest.approx(behind / (2.0 - 0.5 * 2.0 * 0.5))
    assert tail == pytest.approx(behind / (2.0 - 0.5 * 2.0))
    assert head < middle < tail


def test_the_answers_are_the_drain_once_they_come() -> None:
    # The model drains 2 a second; the server answers 0.5 a second: the queue moves at that.
    queue_s = 2.0  # 4 requests behind at the model's 2 a second
    assert passed_wait(queue_s, 4.0, 8.0, 0.0, 0.5, 1.0, 30.0) == pytest.approx(4.0 / 0.5)
    # Never less than the work ahead now.
    assert passed_wait(queue_s, 4.0, 8.0, 0.0, 50.0, 1.0, 30.0) == pytest.approx(queue_s)


def test_a_flow_that_passes_faster_than_the_drain_means_a_miss() -> None:
    deadline_s = 30.0
    wait = passed_wait(2.0, 4.0, 8.0, 10.0, 1.0, 0.5, deadline_s)
    assert wait > deadline_s


def test_traffic_counts_requests_per_second() -> None:
    traffic = Traffic(2, 2.0)
    for _ in range(4):
        traffic.placed_one(1, 10.0)
    traffic.answered(1, 10.0)
    assert traffic.seconds[0, 1] == pytest.approx(4.0)  # over a 2 s window: 2 a second
    assert traffic.seconds[1, 1] == pytest.approx(1.0)
    assert traffic.seconds[:, 0].tolist() == [0.0, 0.0]


def _loose_choice(flooded: bool, view: Any, request: Any) -> int:
    policy = make_policy("cs-ucb", {"recent-window-s": 2.0}, seed=1)  # rates over 2 s
    policy.begin(len(view.servers))
    # What the A100 runs and queues the router placed there, each due in 5 s.
    for _ in range(int(view.running[5] + view.queued[5])):
        policy.outstanding.add(5, int((request.arrival_s + 5.0) * 1000.0))
    if flooded:  # and it sent the A100 a hundred such requests in the last second
        for k in range(100):
            policy.traffic.placed_one(5, view.clock - k / 100.0)
    return int(policy.select(request, view).server)


def test_a_loose_request_leaves_a_server_the_router_floods(paper_view, request_factory) -> None:
    # The A100's batch is full with a queue: a lenient request waits there, and is placed
    # there while the queue moves; when the router keeps sending it requests that pass the
    # queued ones, the lenient request goes to an edge instead, which makes its deadline.
    server = paper_view.servers[5]
    paper_view.running[5], paper_view.queued[5] = server.max_batch, 8
    request = request_factory(deadline_s=60.0, prompt=50)
    paper_view.clock = request.arrival_s
    assert _loose_choice(False, paper_view, request) == 5
    assert paper_view.servers[_loose_choice(True, paper_view, request)].tier == "edge"
