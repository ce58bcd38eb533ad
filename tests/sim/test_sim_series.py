"""Series bandwidth dynamics: a scenario's series (file or inline points) drives the link."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest

from perllm.cluster import scenario
from perllm.domain import Decision, Request, RouterRequest
from perllm.policies.registry import make_policy
from perllm.sim.world import World
from perllm.testing import scenario_with, write_yaml

# -- series dynamics ----------------------------------------------------------------------------


class _FixedPolicy:
    """Everything to server 0; remembers the bandwidth estimate it saw at each arrival."""

    name: ClassVar[str] = "fixed"

    def __init__(self) -> None:
        self.seen: list[tuple[float, float]] = []

    def select(self, request: RouterRequest, view: Any) -> Decision:
        self.seen.append((view.now(), view.bandwidth_mbps("wan")))
        return Decision(server=0)

    def observe(self, feedback: Any) -> None:
        return None

    def state(self) -> dict[str, Any]:
        return {}

    def restore(self, state: dict[str, Any]) -> None:
        return None


def _request(i: int, arrival_s: float, request_bytes: int) -> Request:
    return Request.of(
        id=i,
        arrival_s=arrival_s,
        service_class="chat",
        prompt_tokens=10,
        output_tokens=1,
        request_bytes=request_bytes,
        response_bytes=1000,
        deadline_s=1e6,
    )


@pytest.mark.parametrize("order", ["sorted", "shuffled"])
def test_series_file_changes_bandwidth_at_the_right_times(tmp_path: Path, order: str) -> None:
    lines = ["# time_s,mbps", "0,100", "10,50", "20,200"]
    if order == "shuffled":
        lines = [lines[0], lines[3], lines[1], lines[2]]
    series = tmp_path / "bw.csv"
    series.write_text("\n".join(lines) + "\n")
    data = scenario_with(links__dynamics={"kind": "series", "file": str(series)})
    cluster = scenario.load(str(write_yaml(tmp_path, data)))
    assert cluster.dynamics["wan"].points == ((0.0, 100.0), (10.0, 50.0), (20.0, 200.0))

    # An upload of 1.2 Gbit starting at t = 5: 0.5 Gbit by t = 10 at 100 Mbps, 0.5 Gbit by
    # t = 20 at 50 Mbps, the last 0.2 Gbit at 200 Mbps: it reaches the server at t = 21.
    policy = _FixedPolicy()
    requests = [_request(0, 5.0, 150_000_000), _request(1, 30.0, 1000)]
    world = World(cluster, policy, requests)
    recorder = world.run()
    transfer = recorder.columns["transfer_s"]
    response_s = 1000 * 8 / 200e6
    assert transfer[0] == pytest.approx(16.0 + response_s, rel=1e-9)
    assert transfer[1] == pytest.approx(1000 * 8 / 200e6 + response_s, rel=1e-9)
    assert world.links["wan"].channels[0].bandwidth_bps == pytest.approx(200e6)
    # The view's estimate moves towards the new bandwidth after each change (an EWMA).
    (t0, est0), (t1, est1) = policy.seen
    assert (t0, t1) == (5.0, 30.0)
    assert est0 == pytest.approx(100.0)
    assert 100.0 < est1 <= 200.0


def test_inline_series_points_behave_like_the_file(tmp_path: Path) -> None:
    data = scenario_with(
        links__dynamics={"kind": "series", "points": [[10, 50], [0, 100], [20, 200]]}
    )
    cluster = scenario.load(str(write_yaml(tmp_path, data)))
    assert cluster.dynamics["wan"].points == ((0.0, 100.0), (10.0, 50.0), (20.0, 200.0))
    world = World(cluster, make_policy("round-robin"), [_request(0, 5.0, 150_000_000)])
    recorder = world.run()
    assert recorder.columns["transfer_s"][0] == pytest.approx(16.0 + 1000 * 8 / 200e6, rel=1e-9)
