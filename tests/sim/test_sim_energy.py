"""Energy bookkeeping of a whole simulated world: nothing is created or lost."""

from __future__ import annotations

import math

import numpy as np
import pytest

from perllm.cluster import scenario
from perllm.domain import Feedback
from perllm.metrics.summary import summarize
from perllm.policies.registry import make_policy
from perllm.sim.world import World
from perllm.workload.generator import generate_requests

CASES = [
    ("tiny", "round-robin", 300),
    ("tiny", "greedy-energy", 300),
    ("tiny", "cs-ucb", 300),
    ("perllm-paper", "round-robin", 300),
    ("perllm-paper", "least-loaded", 300),
    ("perllm-paper", "cs-ucb", 300),
    ("perllm-paper", "random", 200),
]


class TransmissionTally:
    """A feedback sink summing the transmission energy the world reports."""

    def __init__(self) -> None:
        self.transmission_j = 0.0

    def on_feedback(self, now: float, feedback: Feedback) -> None:
        self.transmission_j += feedback.energy.transmission_j


def _run(name: str, policy: str, n: int, seed: int = 3) -> World:
    cluster = scenario.load(name)
    requests = generate_requests(cluster.workload, n, seed)
    tally = TransmissionTally()
    world = World(cluster, make_policy(policy, None, seed), requests, seed=seed, sinks=[tally])
    world.run()
    return world


@pytest.fixture(scope="module", params=CASES, ids=["-".join(map(str, c)) for c in CASES])
def world(request: pytest.FixtureRequest) -> World:
    return _run(*request.param)


def _columns(world: World) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in world.recorder.columns.items()}


def test_every_request_is_recorded_once(world: World) -> None:
    cols = _columns(world)
    assert sorted(cols["id"].tolist()) == [r.routed.id for r in world.requests]
    # The horizon is the last completion: the last response reaches its user half an RTT
    # after the last event (its download) ends.
    done = ~cols["rejected"]
    assert world.recorder.horizon_s == float(cols["finish_s"][done].max())
    assert world.recorder.horizon_s >= world.loop.now


def test_inference_energy_of_requests_adds_up_to_each_server(world: World) -> None:
    cols = _columns(world)
    for engine in world.servers:
        mine = cols["server"] == engine.spec.name
        assert float(cols["inference_j"][mine].sum()) == pytest.approx(
            engine.inference_j, rel=1e-9, abs=1e-9
        ), engine.spec.name
    used = [e for e in world.servers if e.busy_s > 0]
    assert used, "no server was ever busy"


def test_idle_energy_is_idle_power_times_idle_time(world: World) -> None:
    cols = _columns(world)
    rec = world.recorder
    horizon = rec.horizon_s
    assert set(rec.server_extra_idle_j) == {e.spec.name for e in world.servers}
    for engine in world.servers:
        name = engine.spec.name
        mine = cols["server"] == name
        attributed = float(cols["idle_j"][mine].sum())
        expected = engine.power.idle_w * (horizon - engine.busy_s)
        assert attributed + rec.server_extra_idle_j[name] == pytest.approx(expected, rel=1e-6), name
        assert rec.server_extra_idle_j[name] >= 0.0
        assert 0.0 <= engine.busy_s <= horizon + 1e-9


def test_inference_energy_lies_between_idle_and_max_power(world: World) -> None:
    for engine in world.servers:
        if engine.busy_s == 0:
            continue
        power = engine.inference_j / engine.busy_s
        assert engine.power.busy_w(1) - 1e-9 <= power <= engine.power.max_w + 1e-9


def test_transmission_energy_is_link_power_times_the_link_time_held(world: World) -> None:
    # A link draws its power while it moves bytes, however many transfers share it: each
    # transfer is charged its bits' time at the bandwidth (here nominal times the scenario's
    # fixed factor, when the link does not fluctuate), not its stretched transfer time.
    cols = _columns(world)
    cluster = world.cluster
    server_to_link = {s.name: cluster.links[s.link] for s in cluster.servers}
    dynamic = {name for name, dyn in cluster.dynamics.items() if dyn.kind != "fixed"}
    checked = 0
    for i in np.flatnonzero(~cols["rejected"]):
        link = server_to_link[str(cols["server"][i])]
        transfer = float(cols["transfer_s"][i]) - link.rtt_s  # upload + download
        assert transfer > 0
        request = world.true_request(int(cols["id"][i]))
        bits = max(request.routed.request_bytes * 8.0, 1.0) + max(request.response_bytes * 8.0, 1.0)
        held_s = float(cols["transmission_j"][i]) / link.tx_power_w
        assert held_s <= transfer * (1 + 1e-9)
        if link.name not in dynamic:
            bandwidth = link.bandwidth_mbps * 1e6 * cluster.truth.bandwidth_factor(link.name)
            assert held_s == pytest.approx(bits / bandwidth, rel=1e-9)
            checked += 1
    assert checked > 0 or dynamic
    (tally,) = (s for s in world.feedback.sinks if isinstance(s, TransmissionTally))
    assert float(cols["transmission_j"].sum()) == pytest.approx(tally.transmission_j, rel=1e-12)


def test_summary_energy_parts_add_to_the_total(world: World) -> None:
    cols = _columns(world)
    rec = world.recorder
    summary = summarize(rec, policy="p", scenario=world.cluster.name, weights=world.cluster.weights)
    energy = summary.energy_j
    assert energy.total == pytest.approx(
        energy.transmission + energy.inference + energy.idle, rel=1e-12
    )
    assert energy.transmission == pytest.approx(float(cols["transmission_j"].sum()), rel=1e-12)
    assert energy.inference == pytest.approx(sum(e.inference_j for e in world.servers), rel=1e-9)
    idle_all = sum(e.power.idle_w * (rec.horizon_s - e.busy_s) for e in world.servers)
    assert energy.idle == pytest.approx(idle_all, rel=1e-6)
    # Per server, the summary's energy is its requests' energy plus its unattributed idle.
    per_server = summary.per_server
    assert sum(s.energy_j for s in per_server.values()) == pytest.approx(energy.total, rel=1e-9)
    assert summary.energy_per_request_j == pytest.approx(
        energy.total / summary.completed, rel=1e-12
    )
    assert math.isfinite(summary.weighted_energy_j)
