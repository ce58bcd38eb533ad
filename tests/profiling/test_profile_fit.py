"""The perf-model fits recover known coefficients from synthetic points."""

from __future__ import annotations

import math

import pytest

from perllm.domain import ServerPerf
from perllm.errors import PerllmError
from perllm.profiling.client import StreamTiming
from perllm.profiling.fit import fit_decode, fit_perf, fit_prefill
from perllm.profiling.measure import DecodePoint, PrefillPoint, effective_batches

TRUE = ServerPerf(
    prefill_fixed_s=0.04,
    prefill_s_per_token=0.0008,
    step_overhead_s=0.0,
    step_weights_s=0.030,
    step_s_per_kv_token=2e-6,
    step_compute_s_per_seq=0.012,
)


def _prefill() -> list[PrefillPoint]:
    return [PrefillPoint(n, TRUE.prefill_s(n)) for n in (32, 128, 256, 512) for _ in range(2)]


def _decode(batches: tuple[int, ...]) -> list[DecodePoint]:
    points = []
    for b in batches:
        for context in (64, 300, 600):
            kv = b * context
            points.append(DecodePoint(b, float(b), float(kv), TRUE.step_s(b, kv), 32))
    return points


def test_prefill_fit_is_exact_on_a_line() -> None:
    fixed, per_token, quality = fit_prefill(_prefill())
    assert fixed == pytest.approx(TRUE.prefill_fixed_s, rel=1e-6)
    assert per_token == pytest.approx(TRUE.prefill_s_per_token, rel=1e-6)
    assert quality.max_rel < 1e-6


def test_decode_fit_predicts_both_roofline_branches() -> None:
    points = _decode((1, 2, 4, 8))
    params, quality, batched = fit_decode(points)
    assert batched
    assert all(v >= 0 for v in params)
    assert quality.max_rel < 0.03


def test_serial_server_gets_batch_one_and_no_compute_term() -> None:
    result = fit_perf(_prefill(), _decode((1,)))
    assert result.max_batch == 1
    assert result.perf.step_compute_s_per_seq == 0.0
    for p in _decode((1,)):
        assert result.perf.step_s(1, p.kv_tokens) == pytest.approx(p.tpot_s, rel=0.02)


def test_batched_server_max_batch_is_the_highest_concurrency() -> None:
    assert fit_perf(_prefill(), _decode((1, 2, 4))).max_batch == 4


def test_too_few_points_is_a_clear_error() -> None:
    with pytest.raises(PerllmError, match="two or more prompt lengths"):
        fit_prefill([PrefillPoint(32, 0.1), PrefillPoint(32, 0.11)])
    with pytest.raises(PerllmError, match="decode points"):
        fit_decode(_decode((1,))[:1])


def test_effective_batch_counts_overlapping_decode_windows() -> None:
    serial = [StreamTiming(10, 0.0, [0.0, 1.0]), StreamTiming(10, 0.0, [1.0, 2.0])]
    together = [StreamTiming(10, 0.0, [0.0, 1.0]), StreamTiming(10, 0.0, [0.0, 1.0])]
    assert effective_batches(serial) == [1.0, 1.0]
    assert effective_batches(together) == [2.0, 2.0]
    assert math.isnan(StreamTiming(10, 0.0, [0.5]).tpot_s)


def test_a_slowed_outlier_barely_moves_the_prefill_fit() -> None:
    points = _prefill()
    points[-1] = PrefillPoint(points[-1].prompt_tokens, points[-1].ttft_s * 1.5)
    _fixed, per_token, _ = fit_prefill(points)
    assert per_token == pytest.approx(TRUE.prefill_s_per_token, rel=0.05)
