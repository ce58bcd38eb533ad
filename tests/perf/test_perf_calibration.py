"""The performance and power models reproduce the public measurements they cite."""

from __future__ import annotations

import pytest

from perllm.perf.calibration import CALIBRATION_POINTS, CalibrationPoint

TOLERANCE = 0.15


def _label(point: CalibrationPoint) -> str:
    return f"{point.hardware}-{point.model}-{point.dtype}-b{point.batch}-{point.quantity}"


@pytest.mark.parametrize("point", CALIBRATION_POINTS, ids=_label)
def test_calibration_point_within_15_percent(point: CalibrationPoint) -> None:
    predicted = point.predicted()
    error = predicted / point.measured - 1.0
    assert abs(error) <= TOLERANCE, (
        f"{_label(point)}: predicted {predicted:.6g} vs measured {point.measured:.6g} "
        f"({100 * error:+.1f}%, limit ±{100 * TOLERANCE:.0f}%) [{point.source}]"
    )
    assert point.relative_error() == pytest.approx(error)


def test_calibration_points_cover_both_quantities_and_name_a_source() -> None:
    quantities = {point.quantity for point in CALIBRATION_POINTS}
    assert quantities == {"step_s", "power_w"}
    assert all(point.source.strip() for point in CALIBRATION_POINTS)
    assert len(CALIBRATION_POINTS) >= 10
