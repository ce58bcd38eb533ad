"""The bound replays the world's bandwidth draws exactly, and transfers at full bandwidth."""

from __future__ import annotations

import numpy as np
import pytest

from perllm.bound.bandwidth import LinkCapacity, true_links
from perllm.cluster import scenario
from perllm.policies.registry import make_policy
from perllm.sim.runner import seeds_for
from perllm.sim.world import UP, World
from perllm.workload.generator import generate_requests


class _Recording(World):
    changes: list[tuple[float, str, float]]

    def _on_bandwidth(self, name: str) -> None:
        super()._on_bandwidth(name)
        self.changes.append((self.loop.now, name, self.links[name].channels[UP].bandwidth_bps))


@pytest.mark.parametrize("name", ["perllm-paper", "tiny"])
def test_replay_matches_every_change_the_world_makes(name: str) -> None:
    cluster = scenario.load(name)
    workload_seed, _, world_seed = seeds_for(3)
    trace = generate_requests(cluster.workload, 60, workload_seed)
    world = _Recording(cluster, make_policy("round-robin"), trace, seed=world_seed)
    world.changes = []
    assert len(world.run()) == 60
    horizon = world.loop.now
    links = true_links(cluster, world_seed, horizon + 10.0)
    for time_s, link, bps in world.changes:
        capacity = links[link]
        k = np.searchsorted(capacity.times_s, time_s, side="right") - 1
        assert capacity.times_s[k] == time_s
        assert capacity.bps[k] == bps
    if name == "perllm-paper":
        assert len(world.changes) > 100
    if name == "tiny":
        assert not world.changes and all(len(c.times_s) == 1 for c in links.values())


def test_series_points_apply_the_last_value_at_or_before_each_time() -> None:
    config = scenario.load("tiny").config
    links = []
    for link in config.links:
        dyn = link.dynamics.model_copy(
            update={"kind": "series", "points": [(-1.0, 50.0), (0.0, 60.0), (2.0, 10.0)]}
        )
        links.append(link.model_copy(update={"dynamics": dyn}))
    cluster = scenario.build(config.model_copy(update={"links": links}))
    capacity = true_links(cluster, 0, 10.0)["cloud-wan"]
    assert capacity.times_s.tolist() == [0.0, 2.0]
    assert capacity.bps.tolist() == [60e6, 10e6]


def test_transfers_at_full_bandwidth_forward_and_backward() -> None:
    capacity = LinkCapacity.from_steps(np.array([0.0, 1.0, 3.0]), np.array([10.0, 20.0, 5.0]))
    start = np.array([0.5, 0.0, 2.5])
    bits = np.array([5.0, 30.0, 15.0])
    end = capacity.earliest_end(start, bits)
    assert end.tolist() == pytest.approx([1.0, 2.0, 4.0])
    assert capacity.latest_start(end, bits).tolist() == pytest.approx(start.tolist())
    assert capacity.latest_start(np.array([0.5]), np.array([6.0]))[0] == -np.inf
    assert capacity.bits_between(np.array([0.5]), np.array([4.0]))[0] == pytest.approx(50.0)
