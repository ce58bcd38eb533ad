"""Model mismatch: servers and links that run apart from the spec the policies see."""

from __future__ import annotations

import copy
import re
from typing import Any, ClassVar

import pytest

from perllm.cluster import scenario
from perllm.cluster.truth import ClusterTruth, ServerTruth
from perllm.domain import ClusterView, Decision, Feedback, Request, RouterRequest
from perllm.errors import InputError
from perllm.sim.world import World

ONE_SERVER: dict[str, Any] = {
    "name": "one",
    "links": [{"name": "lan", "bandwidth-mbps": 100, "rtt-ms": 0, "tx-power-w": 1.0}],
    "servers": [
        {
            "name": "gpu",
            "tier": "edge",
            "hardware": "rtx-3090",
            "model": "llama-2-7b",
            "dtype": "q4",
            "link": "lan",
        }
    ],
    "workload": {"arrivals": {"process": "poisson", "rate-rps": 1.0}, "classes": "personalized"},
}
# One long request; its upload is 4 MB so link speed shows in the transfer time.
REQUEST = Request.of(0, 0.0, "chat", 500, 2000, 4_000_000, 8512, 1e9)


class SeeingPolicy:
    """Sends everything to server 0 and keeps what the view showed."""

    name: ClassVar[str] = "seeing"

    def __init__(self) -> None:
        self.seen: list[tuple[Any, ...]] = []
        self.feedback: list[Feedback] = []

    def select(self, request: RouterRequest, view: ClusterView) -> Decision:
        spec = view.servers[0]
        self.seen.append((spec.perf, spec.power, view.links["lan"], view.bandwidth_mbps("lan")))
        return Decision(server=0)

    def observe(self, feedback: Feedback) -> None:
        self.feedback.append(feedback)

    def state(self) -> dict[str, Any]:
        return {}

    def restore(self, state: dict[str, Any]) -> None:
        return None


def _cluster(server: dict[str, Any] | None = None, link: dict[str, Any] | None = None) -> Any:
    data = copy.deepcopy(ONE_SERVER)
    data["servers"][0].update(server or {})
    data["links"][0].update(link or {})
    return scenario.build(scenario.parse(data, "test.yaml"))


def _run(cluster: Any) -> tuple[SeeingPolicy, World, Feedback]:
    policy = SeeingPolicy()
    world = World(cluster, policy, [REQUEST])
    world.run()
    return policy, world, policy.feedback[0]


def test_no_mismatch_is_the_default() -> None:
    cluster = _cluster()
    assert cluster.truth == ClusterTruth()
    assert cluster.truth.server(0) == ServerTruth()
    assert scenario.load("perllm-paper").truth == ClusterTruth()


@pytest.mark.parametrize("speed", [0.5, 1.6])
def test_a_mismatched_server_really_runs_at_its_true_speed(speed: float) -> None:
    _, _, exact = _run(_cluster())
    policy, _, true = _run(_cluster({"true-speed-factor": speed}))
    assert true.prefill_s == pytest.approx(exact.prefill_s / speed, rel=1e-9)
    assert true.decode_s == pytest.approx(exact.decode_s / speed, rel=1e-9)
    assert true.transfer_s == pytest.approx(exact.transfer_s, rel=1e-12)
    # Same power for a different time: inference energy scales with the time.
    assert true.energy.inference_j == pytest.approx(exact.energy.inference_j / speed, rel=1e-9)
    # The view shows the spec, not the truth.
    nominal = _cluster().servers[0]
    assert policy.seen[0][0] == nominal.perf
    assert policy.seen[0][1] == nominal.power


UP_S = REQUEST.routed.request_bytes * 8 / 100e6  # the upload's time on the nominal 100 Mbps
DOWN_S = REQUEST.response_bytes * 8 / 100e6


@pytest.mark.parametrize("power", [0.7, 1.4])
def test_a_mismatched_server_really_draws_its_true_power(power: float) -> None:
    _, _, exact = _run(_cluster())
    policy, _, true = _run(_cluster({"true-power-factor": power}))
    assert true.decode_s == pytest.approx(exact.decode_s, rel=1e-12)
    assert true.energy.inference_j == pytest.approx(exact.energy.inference_j * power, rel=1e-9)
    # The idle gap before the request (its upload) is attributed to it, at the true idle power.
    assert exact.energy.idle_j > 0
    assert true.energy.idle_j == pytest.approx(exact.energy.idle_j * power, rel=1e-9)
    assert policy.seen[0][1] == _cluster().servers[0].power


def test_degradation_takes_effect_at_its_time() -> None:
    _, _, exact = _run(_cluster())
    decode_start = UP_S + exact.prefill_s
    decode_end = decode_start + exact.decode_s
    assert exact.processing_s == pytest.approx(decode_end + DOWN_S, rel=1e-9)
    at = decode_start + exact.decode_s / 2
    policy, _, slow = _run(_cluster({"degrade": {"at-s": at, "speed-factor": 0.25}}))
    # Everything before the degradation is as specified; what is left takes 4x as long.
    assert slow.prefill_s == pytest.approx(exact.prefill_s, rel=1e-12)
    expected_end = at + (decode_end - at) / 0.25
    assert slow.processing_s == pytest.approx(expected_end + DOWN_S, rel=1e-9)
    assert policy.seen[0][0] == _cluster().servers[0].perf


def test_degradation_during_prefill_retimes_the_rest_of_it() -> None:
    _, _, exact = _run(_cluster())
    at = UP_S + exact.prefill_s / 2
    _, _, slow = _run(_cluster({"degrade": {"at-s": at, "speed-factor": 0.5}}))
    assert slow.prefill_s == pytest.approx(exact.prefill_s * 1.5, rel=1e-9)
    assert slow.decode_s == pytest.approx(exact.decode_s * 2, rel=1e-9)


def test_a_degradation_after_the_run_changes_nothing() -> None:
    _, _, exact = _run(_cluster())
    _, _, late = _run(_cluster({"degrade": {"at-s": 1e6, "speed-factor": 0.5}}))
    assert late.processing_s == exact.processing_s


def test_a_mismatched_link_carries_its_true_bandwidth_but_the_view_shows_the_nominal() -> None:
    _, _, exact = _run(_cluster())
    policy, _, slow = _run(_cluster(link={"true-bandwidth-factor": 0.5}))
    assert exact.transfer_s == pytest.approx(UP_S + DOWN_S, rel=1e-9)
    assert slow.transfer_s == pytest.approx(2 * (UP_S + DOWN_S), rel=1e-9)
    _, _, link, estimate = policy.seen[0]
    assert link.bandwidth_mbps == 100
    assert estimate == 100


def test_a_fluctuating_mismatched_link_keeps_the_view_on_the_nominal() -> None:
    dynamics = {"kind": "series", "points": [[0.0, 100.0], [0.01, 50.0]]}
    cluster = _cluster(link={"true-bandwidth-factor": 2.0, "dynamics": dynamics})
    world = World(cluster, SeeingPolicy(), [REQUEST])
    world.run()
    assert world.view.bandwidth_mbps("lan") == pytest.approx(75.0)  # EWMA of the nominal 50
    assert world.links["lan"].channels[0].bandwidth_bps == pytest.approx(100e6)


@pytest.mark.parametrize(
    ("server", "field"),
    [
        ({"true-speed-factor": 0}, "servers.0.true-speed-factor"),
        ({"true-power-factor": -1}, "servers.0.true-power-factor"),
        ({"degrade": {"at-s": -1, "speed-factor": 0.5}}, "servers.0.degrade.at-s"),
        ({"degrade": {"at-s": 5}}, "servers.0.degrade.speed-factor"),
    ],
)
def test_bad_mismatch_fields_are_named(server: dict[str, Any], field: str) -> None:
    with pytest.raises(InputError, match=re.escape(f"field '{field}'")):
        _cluster(server)


def test_bad_link_factor_is_named() -> None:
    with pytest.raises(InputError, match=re.escape("field 'links.0.true-bandwidth-factor'")):
        _cluster(link={"true-bandwidth-factor": 0})


class SlowdownSeeingPolicy(SeeingPolicy):
    """Sends everything to server 0 and keeps the slowdown the view showed there."""

    def __init__(self) -> None:
        super().__init__()
        self.slowdowns: list[float] = []

    def select(self, request: RouterRequest, view: ClusterView) -> Decision:
        self.slowdowns.append(float(view.load_arrays().slowdown[0]))
        return super().select(request, view)


@pytest.mark.parametrize(
    ("server", "shown"),
    [
        ({}, 1.0),
        ({"true-speed-factor": 0.5}, 2.0),
        ({"true-speed-factor": 2.0}, 0.5),
        ({"degrade": {"at-s": 1.0, "speed-factor": 0.25}}, 4.0),
    ],
)
def test_the_view_shows_how_much_slower_than_its_datasheet_a_server_decodes(
    server: dict[str, Any], shown: float
) -> None:
    # The long request decodes for tens of seconds; the one after it arrives at 5 s and sees
    # the server's step, as its metrics would show it, against the datasheet's.
    later = Request.of(1, 5.0, "chat", 50, 10, 1000, 100, 1e9)
    policy = SlowdownSeeingPolicy()
    World(_cluster(server), policy, [REQUEST, later]).run()
    assert policy.slowdowns[0] == 1.0  # nothing decoded yet: as the datasheet
    assert policy.slowdowns[1] == pytest.approx(shown, rel=1e-9)
