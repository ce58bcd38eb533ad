"""A CS-UCB parameter sweep: the frontier's dominance over each baseline, the summary rows,
the table, the CSV and the plot."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from perllm.experiments.robustness import cells
from perllm.experiments.robustness_sweep import (
    SweepPoint,
    frontier_dominates,
    plot_sweep,
    print_sweep,
    summarize_sweep,
    sweep_label,
    write_sweep_csv,
)
from perllm.experiments.rows import RunRow

POINTS = [SweepPoint(sweep_label("confidence", v), v) for v in ("0.5", "2")]
LOW, HIGH = (p.label for p in POINTS)


def _row(cluster: int, policy: str, met: int, energy: float) -> RunRow:
    fields = {
        "cluster": cluster,
        "load": 1.0,
        "seed": 0,
        "policy": policy,
        "requests": 1000,
        "met": met,
        "weighted_energy_j": energy,
    }
    return RunRow(**{**dict.fromkeys(RunRow.columns(), 0), **fields})


ROWS = [
    # cell 0: LOW is cheap with few met, HIGH meets many at a high cost.
    _row(0, LOW, 900, 900.0),
    _row(0, HIGH, 990, 3000.0),
    _row(0, "x", 990, 2000.0),  # neither point: HIGH costs more, LOW meets too few
    _row(0, "y", 901, 950.0),  # LOW: one fewer (within 0.1 pt of 1000) at less energy per met
    # cell 1: HIGH dominates both.
    _row(1, LOW, 500, 500.0),
    _row(1, HIGH, 800, 800.0),
    _row(1, "x", 800, 900.0),
    _row(1, "y", 100, 50.0),  # LOW meets more, but spends 1.0 J per met against 0.5: not y
]


def test_sweep_labels_name_the_parameter_and_value() -> None:
    assert sweep_label("target-satisfaction", "0.99") == "cs-ucb[target-satisfaction=0.99]"


def test_the_frontier_dominates_a_baseline_through_any_of_its_points() -> None:
    grouped = list(cells(ROWS).values())
    frontier = [LOW, HIGH]
    assert not frontier_dominates(grouped[0], frontier, "x")
    assert frontier_dominates(grouped[0], frontier, "y")
    assert frontier_dominates(grouped[1], frontier, "x")
    assert not frontier_dominates(grouped[1], frontier, "y")
    assert not frontier_dominates(grouped[0], [HIGH], "y")  # HIGH alone: too costly


def test_the_summary_counts_cells_times_baselines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    summary = summarize_sweep(ROWS, "confidence", POINTS, ["x", "y"])
    assert (summary.dominated_pairs, summary.pairs) == (2, 4)
    assert summary.share == 0.5
    by_label = {row.label: row for row in summary.rows}
    assert by_label["x"].frontier_dominates == 0.5 and by_label["y"].frontier_dominates == 0.5
    assert math.isnan(by_label[LOW].frontier_dominates) and by_label[LOW].value == "0.5"
    assert by_label[HIGH].met_share == pytest.approx(math.sqrt((990.5 / 1000.5) * (800.5 / 1000.5)))
    # y is the cheapest run of cell 1; in cell 0 LOW is (900 / 900.5 < 950 / 901.5)
    assert by_label[LOW].relative_energy == pytest.approx(
        math.sqrt(1.0 * (500 / 500.5) / (50 / 100.5))
    )
    print_sweep(summary, "gpu-only")
    out = capsys.readouterr().out
    assert "cs-ucb[confidence=0.5]" in out  # the label survives rich's markup
    assert "frontier dominates the baseline in 50.0% of 4 (cell, baseline) pairs" in out
    write_sweep_csv([("gpu-only", summary)], tmp_path / "sweep.csv")
    written = list(csv.DictReader((tmp_path / "sweep.csv").read_text().splitlines()))
    assert [row["policy"] for row in written] == [LOW, HIGH, "x", "y"]
    assert written[2]["frontier_dominates"] == "0.5" and written[0]["frontier_dominates"] == ""
    plot_sweep(summary, "gpu-only", tmp_path / "sweep.png")
    assert (tmp_path / "sweep.png").stat().st_size > 10_000
