"""A server's slowdown, as its metrics show it: its observed decode step over its datasheet's,
and what CS-UCB makes of it."""

from __future__ import annotations

import pytest

from perllm.policies.registry import make_policy


def test_the_slowdown_is_the_observed_step_over_the_datasheet_s(paper_view) -> None:
    perf = paper_view.servers[5].perf
    datasheet = perf.step_s(8, 20_000.0)
    assert perf.slowdown(datasheet, 8, 20_000.0) == pytest.approx(1.0)
    assert perf.slowdown(3.0 * datasheet, 8, 20_000.0) == pytest.approx(3.0)


def test_cs_ucb_leaves_a_server_whose_steps_run_slow(paper_view, request_factory) -> None:
    # A request goes to the A100 (2.3 s); once the A100's steps show it twenty times slower
    # than its datasheet, past the request's 20 s, the request goes to an edge CPU, where it
    # makes its deadline (14 s).
    request = request_factory(deadline_s=20.0, prompt=200)
    paper_view.clock = request.arrival_s

    def choice() -> tuple[int, float]:
        policy = make_policy("cs-ucb", seed=1)
        policy.begin(len(paper_view.servers))
        decision = policy.select(request, paper_view)
        return int(decision.server), float(decision.estimate_s)

    first, _ = choice()
    assert paper_view.servers[first].tier == "cloud"
    paper_view.slowdown[first] = 20.0
    second, estimate_s = choice()
    assert paper_view.servers[second].tier == "edge"
    assert estimate_s < request.deadline_s
