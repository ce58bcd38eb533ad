"""The report's line plots: every policy keeps a look of its own, coinciding curves stay
visible, and the legend never covers data."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from perllm.experiments.plots import (
    SUBJECT,
    regret_figure,
    satisfaction_vs_rate,
    satisfaction_vs_rate_figure,
    styles,
)
from perllm.experiments.rows import GridRow, RegretCurve
from perllm.policies.registry import REGISTRY

POLICIES = sorted(REGISTRY)
# Pairs whose curves coincide exactly in the shipped results.
TWINS = (("cloud-only", "greedy-energy"), ("random", "round-robin"))


def _satisfaction(policy: str, rate: float) -> float:
    for pair in TWINS:
        if policy in pair:
            return {"cloud-only": 0.9, "random": 0.16}[pair[0]] - 0.01 * rate
    return (POLICIES.index(policy) + 1) / (len(POLICIES) + 2) - 0.02 * rate


@pytest.fixture
def rows() -> list[GridRow]:
    blank = dict.fromkeys(GridRow.columns(), 0)
    return [
        GridRow(
            **{
                **blank,
                "deployment": deployment,
                "bandwidth": "nominal",
                "policy": policy,
                "rate_rps": rate,
                "seed": seed,
                "deadline_satisfaction": _satisfaction(policy, rate),
            }
        )
        for deployment in ("6b/6b", "7b/13b", "7b/33b")
        for policy in POLICIES
        for rate in (1.0, 2.0, 4.0)
        for seed in (0, 1)
    ]


def _policy_lines(fig: Figure) -> list[list[Line2D]]:
    return [[line for line in ax.get_lines() if line.get_label() in REGISTRY] for ax in fig.axes]


def _assert_legend_outside_the_axes(fig: Figure) -> None:
    fig.canvas.draw()
    assert all(ax.get_legend() is None for ax in fig.axes)
    (legend,) = fig.legends
    box = legend.get_window_extent()
    for ax in fig.axes:
        assert not box.overlaps(ax.get_window_extent()), ax.get_title()
    # wholly inside the figure, so that the saved PNG shows all of it
    assert fig.bbox.x0 <= box.x0 and box.x1 <= fig.bbox.x1
    assert fig.bbox.y0 <= box.y0 and box.y1 <= fig.bbox.y1
    assert {t.get_text() for t in legend.get_texts()} == set(POLICIES)


def test_every_policy_has_a_distinct_marker_and_line_style() -> None:
    looks = styles(POLICIES)
    assert set(looks) == set(POLICIES)
    pairs = {(look.marker, look.filled, str(look.linestyle)) for look in looks.values()}
    assert len(pairs) == len(POLICIES)
    # no two share their dashes (pattern and phase), so a curve exactly over another leaves
    # gaps where the one under it shows; also past the built-in policies (plugins)
    many = [f"plugin-{i:02d}" for i in range(60)]
    for names in (POLICIES, many):
        assert len({str(x.linestyle) for x in styles(names).values()}) == len(names)


def test_the_lines_drawn_carry_those_styles(rows: list[GridRow]) -> None:
    fig = satisfaction_vs_rate_figure(rows, "nominal")
    looks = styles(POLICIES)
    for lines in _policy_lines(fig):
        assert {line.get_label() for line in lines} == set(POLICIES)
        keys = {(line.get_marker(), line.get_markerfacecolor() == "none") for line in lines}
        assert len(keys) == len(lines)
        for line in lines:
            assert line.get_marker() == looks[str(line.get_label())].marker
    plt.close(fig)


@pytest.mark.parametrize(("under", "over"), TWINS)
def test_a_curve_exactly_over_another_leaves_it_visible(
    rows: list[GridRow], under: str, over: str
) -> None:
    fig = satisfaction_vs_rate_figure(rows, "nominal")
    for lines in _policy_lines(fig):
        line = {str(x.get_label()): x for x in lines}
        bottom, top = line[under], line[over]
        assert np.array_equal(np.asarray(bottom.get_xdata()), np.asarray(top.get_xdata()))
        assert np.array_equal(np.asarray(bottom.get_ydata()), np.asarray(top.get_ydata()))
        assert top.get_zorder() > bottom.get_zorder()
        # the top line is dashed (the one under shows through its gaps) ...
        assert top.get_linestyle() != "-"
        # ... and its hollow marker is of another shape and smaller, inside the one under it
        assert top.get_markerfacecolor() == "none"
        assert top.get_marker() != bottom.get_marker()
        assert top.get_markersize() < bottom.get_markersize()
    plt.close(fig)


def test_only_the_subject_draws_a_solid_line(rows: list[GridRow]) -> None:
    fig = satisfaction_vs_rate_figure(rows, "nominal")
    for lines in _policy_lines(fig):
        solid = [line.get_label() for line in lines if line.get_linestyle() == "-"]
        assert solid == [SUBJECT]
    plt.close(fig)


def test_the_satisfaction_legend_lies_outside_every_panel(rows: list[GridRow]) -> None:
    fig = satisfaction_vs_rate_figure(rows, "nominal")
    _assert_legend_outside_the_axes(fig)
    plt.close(fig)


def test_the_regret_legend_lies_outside_every_panel() -> None:
    curves = [
        RegretCurve(d, p, (0.0, 1.0, 2.0), (0.0, 1.0, 3.0))
        for d in ("6b/6b", "7b/13b")
        for p in POLICIES
    ]
    fig = regret_figure(curves)
    _assert_legend_outside_the_axes(fig)
    plt.close(fig)


def test_the_figure_is_written_as_a_png(rows: list[GridRow], tmp_path: Path) -> None:
    path = tmp_path / "satisfaction.png"
    satisfaction_vs_rate(rows, "nominal", path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
