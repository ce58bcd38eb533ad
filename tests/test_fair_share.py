"""Weighted fair sharing of a link (the simulator's links, the gateway's upload shaping), and exact
finish predictions."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest

from perllm.fair_share import Channel

MBPS = 1e6


def run_channel(
    channel: Channel,
    starts: Sequence[tuple[float, float, float, object]],
    bandwidth_changes: Sequence[tuple[float, float]] = (),
    max_events: int = 1_000_000,
    link_seconds: dict[object, float] | None = None,
) -> dict[object, float]:
    """Drive a channel as the world does; return each token's finish time (and fill
    ``link_seconds`` with each token's share of the busy time, when given).

    ``starts`` are ``(time_s, bits, weight, token)``; ``bandwidth_changes`` ``(time_s, bps)``.
    """
    inputs = sorted(
        [(t, 0, ("start", bits, w, tok)) for t, bits, w, tok in starts]
        + [(t, 1, ("bandwidth", bps, 0.0, None)) for t, bps in bandwidth_changes],
        key=lambda item: (item[0], item[1]),
    )
    finished: dict[object, float] = {}
    now = 0.0
    events = 0
    while inputs or channel.active:
        events += 1
        assert events <= max_events, "the channel does not make progress"
        due = channel.next_finish_s()
        if inputs and (due is None or inputs[0][0] < due):
            now, _, (kind, value, weight, token) = inputs.pop(0)
            if kind == "start":
                channel.start(now, value, weight, token)
            else:
                channel.set_bandwidth(now, value)
        else:
            assert due is not None
            now = max(due, now)
            for token, held_s in channel.pop_finished(now):
                finished[token] = now
                if link_seconds is not None:
                    link_seconds[token] = held_s
    return finished


def test_one_transfer_takes_bits_over_bandwidth() -> None:
    channel = Channel(100 * MBPS)
    done = run_channel(channel, [(2.0, 8e6, 1.0, "a")])
    assert done["a"] == pytest.approx(2.0 + 8e6 / (100 * MBPS), rel=1e-12)
    assert channel.active == 0 and channel.weight_sum == 0.0


def test_a_weight_alone_gets_the_whole_link() -> None:
    done = run_channel(Channel(50 * MBPS), [(0.0, 1e6, 0.25, "a")])
    assert done["a"] == pytest.approx(1e6 / (50 * MBPS), rel=1e-12)


def test_two_equal_transfers_share_fairly() -> None:
    done = run_channel(Channel(100 * MBPS), [(0.0, 1e6, 1.0, "a"), (0.0, 1e6, 1.0, "b")])
    # Each gets half the bandwidth: both end when 2 Mbit have been served.
    assert done["a"] == pytest.approx(0.02, rel=1e-12)
    assert done["b"] == pytest.approx(0.02, rel=1e-12)


def test_a_short_transfer_leaves_the_rest_to_the_long_one() -> None:
    done = run_channel(Channel(100 * MBPS), [(0.0, 1e6, 1.0, "a"), (0.0, 3e6, 1.0, "b")])
    assert done["a"] == pytest.approx(0.02, rel=1e-12)  # 1 Mbit at 50 Mbps
    assert done["b"] == pytest.approx(0.02 + 2e6 / (100 * MBPS), rel=1e-12)


def test_weights_two_to_one_split_bandwidth_two_to_one() -> None:
    bw = 90 * MBPS
    done = run_channel(Channel(bw), [(0.0, 6e6, 2.0, "heavy"), (0.0, 6e6, 1.0, "light")])
    # heavy gets 60 Mbps, light 30 Mbps; heavy ends at 0.1 s, when light has 3 Mbit left.
    assert done["heavy"] == pytest.approx(6e6 / (60 * MBPS), rel=1e-12)
    assert done["light"] == pytest.approx(0.1 + 3e6 / bw, rel=1e-12)


def test_a_late_joiner_slows_an_ongoing_transfer() -> None:
    done = run_channel(Channel(100 * MBPS), [(0.0, 2e6, 1.0, "a"), (0.01, 0.5e6, 1.0, "b")])
    # a: 1 Mbit alone by 0.01 s, then both at 50 Mbps: b's 0.5 Mbit ends at 0.02 s, a has
    # 0.5 Mbit left at 100 Mbps.
    assert done["b"] == pytest.approx(0.02, rel=1e-12)
    assert done["a"] == pytest.approx(0.025, rel=1e-12)


def test_bandwidth_change_mid_transfer() -> None:
    done = run_channel(
        Channel(100 * MBPS), [(0.0, 10e6, 1.0, "a")], bandwidth_changes=[(0.05, 50 * MBPS)]
    )
    # 5 Mbit in the first 0.05 s, the other 5 Mbit at 50 Mbps.
    assert done["a"] == pytest.approx(0.05 + 0.1, rel=1e-12)


def test_bandwidth_change_while_shared_keeps_the_weights() -> None:
    done = run_channel(
        Channel(60 * MBPS),
        [(0.0, 4e6, 2.0, "heavy"), (0.0, 4e6, 1.0, "light")],
        bandwidth_changes=[(0.05, 120 * MBPS)],
    )
    # Until 0.05 s: heavy 40 Mbps (2 Mbit), light 20 Mbps (1 Mbit). Then heavy 80, light 40:
    # heavy's last 2 Mbit take 0.025 s; light then has 4 - 1 - 1 = 2 Mbit at 120 Mbps.
    assert done["heavy"] == pytest.approx(0.075, rel=1e-12)
    assert done["light"] == pytest.approx(0.075 + 2e6 / (120 * MBPS), rel=1e-12)


@pytest.mark.parametrize("weight", [0.5, 1.0, 3.0])
def test_predict_finish_equals_the_actual_finish(weight: float) -> None:
    channel = Channel(80 * MBPS)
    others = [(0.0, 3e6, 1.0, "x"), (0.001, 0.4e6, 2.0, "y"), (0.002, 9e6, 0.5, "z")]
    # Bring the channel to t = 0.005 with the three others in flight (none done yet).
    for t, bits, w, token in others:
        channel.start(t, bits, w, token)
    now = 0.005
    assert channel.pop_finished(now) == []
    predicted = channel.predict_finish_s(now, 2e6, weight)
    version, active, weight_sum = channel.version, channel.active, channel.weight_sum
    channel.predict_finish_s(now, 2e6, weight)
    assert (channel.version, channel.active, channel.weight_sum) == (version, active, weight_sum)
    finished = run_channel(channel, [(now, 2e6, weight, "new")])
    assert finished["new"] == pytest.approx(predicted, rel=1e-12)
    assert set(finished) == {"x", "y", "z", "new"}


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0), (5.0, 1.0, 0.01), (1e-4, 1.0, 30.0)])
def test_link_seconds_are_bits_over_bandwidth_whatever_the_weights(
    weights: tuple[float, float, float],
) -> None:
    # A link draws its power while busy, whoever holds it: each transfer is charged its bits'
    # time at the bandwidth, however sharing stretched it.
    channel = Channel(40 * MBPS)
    sizes = (2e6, 6e6, 0.5e6)
    starts = [
        (0.01 * i, bits, w, i) for i, (bits, w) in enumerate(zip(sizes, weights, strict=True))
    ]
    held: dict[object, float] = {}
    done = run_channel(channel, starts, link_seconds=held)
    for i, bits in enumerate(sizes):
        assert held[i] == pytest.approx(bits / (40 * MBPS), rel=1e-9)
    # Together they held the link for exactly its busy time (it never idled here).
    assert sum(held.values()) == pytest.approx(max(done.values()), rel=1e-9)


def test_link_seconds_follow_the_bandwidth_the_transfer_had() -> None:
    channel = Channel(60 * MBPS)
    held: dict[object, float] = {}
    changes = [(0.05, 120 * MBPS)]
    starts = [(0.0, 4e6, 2.0, "heavy"), (0.0, 4e6, 1.0, "light")]
    done = run_channel(channel, starts, bandwidth_changes=changes, link_seconds=held)
    # heavy: 2/3 of 0.05 s, then 2/3 of 0.025 s; light: 1/3 of each, then alone to the end.
    assert held["heavy"] == pytest.approx((0.05 + 0.025) * 2 / 3, rel=1e-9)
    assert held["light"] == pytest.approx((0.05 + 0.025) / 3 + done["light"] - 0.075, rel=1e-9)


def test_predict_finish_on_an_idle_channel() -> None:
    channel = Channel(10 * MBPS)
    assert channel.predict_finish_s(3.0, 1e6, 1.0) == pytest.approx(3.1, rel=1e-12)
    assert channel.next_finish_s() is None


def test_finish_tags_restart_when_the_channel_empties() -> None:
    channel = Channel(100 * MBPS)
    run_channel(channel, [(0.0, 1e9, 1.0, "a")])
    assert channel.virtual == 0.0
    done = run_channel(channel, [(20.0, 1e6, 1.0, "b")])
    assert done["b"] == pytest.approx(20.01, rel=1e-12)


@pytest.mark.parametrize("start_s", [0.0, 1e6, 1e8, 1.7e9, 1e10])
def test_many_tiny_transfers_at_large_times_terminate(start_s: float) -> None:
    # At large times the clock's resolution exceeds the nanosecond tolerance: a transfer a
    # hair short of done used to be rescheduled at the same instant forever.
    channel = Channel(100 * MBPS)
    starts = [(start_s + 1e-3 * (k // 10), 8.0 + 0.37 * k, 1.0, k) for k in range(200)]
    done = run_channel(channel, starts, max_events=10_000)
    assert len(done) == 200
    assert all(t >= start_s for t in done.values())
    assert max(done.values()) <= start_s + 1.0


def test_tiny_transfers_next_to_a_huge_virtual_time_terminate() -> None:
    # A near-zero weight makes the virtual time race ahead (bits per unit of weight), so later
    # tags are huge numbers with a coarse resolution.
    channel = Channel(100 * MBPS)
    starts: list[tuple[float, float, float, object]] = [(0.0, 1e12, 1e-6, "bulk")]
    starts += [(1.0 + 1e-4 * k, 8.0, 1.0, k) for k in range(500)]
    done = run_channel(channel, starts, max_events=10_000)
    assert all(k in done for k in range(500))
    assert "bulk" in done and math.isfinite(done["bulk"])
