"""`perllm reproduce` against the bound: bounds.csv, fractions and multiples, Pareto plots."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
from matplotlib import image

from perllm.experiments.executors import ExecutorSpec
from perllm.experiments.grid import GridConfig
from perllm.experiments.reproduce import reproduce, total_runs

GRID = GridConfig(
    deployments=("7b/13b",),
    bandwidths=("nominal", "constrained"),
    rate_factors=(1.0,),
    policies=("cs-ucb", "cloud-only", "round-robin"),
    seeds=2,
    requests=150,
)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bound-grid")
    done: list[int] = []
    reproduce(GRID, out, ExecutorSpec("process", 2), done.append, "test")
    assert done[-1] == total_runs(GRID)
    return out


@pytest.mark.slow
def test_one_bound_per_cell_and_seed(run: Path) -> None:
    with (run / "bounds.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert {(r["bandwidth"], r["seed"]) for r in rows} == {
        (b, str(s)) for b in GRID.bandwidths for s in range(GRID.seeds)
    }
    for row in rows:
        assert 0 < int(row["met_upper_bound"]) <= GRID.requests
        assert float(row["energy_lower_bound_j"]) >= float(row["energy_floor_j"]) > 0


@pytest.mark.slow
def test_every_policy_is_within_the_bound(run: Path) -> None:
    document = json.loads((run / "results.json").read_text())
    bounds = {(b["bandwidth"], b["seed"]): b for b in document["bounds"]}
    for row in document["runs"]:
        bound = bounds[(row["bandwidth"], row["seed"])]
        assert row["goodput_rps"] <= bound["goodput_upper_bound_rps"] * (1 + 1e-9)
        assert row["weighted_energy_j"] >= bound["energy_floor_j"]
    for cell in document["bound"].values():
        for policy, stats in cell["policies"].items():
            assert stats["goodput_fraction"]["mean"] <= 1.0 + 1e-9, policy
            assert stats["energy_multiple"]["mean"] >= 1.0 - 1e-9, policy
            assert math.isfinite(stats["energy_multiple"]["mean"])


@pytest.mark.slow
def test_report_and_pareto_plot(run: Path) -> None:
    report = (run / "report.md").read_text()
    assert "## Against the bound" in report and "goodput fraction" in report
    assert "![pareto_7b-13b.png](pareto_7b-13b.png)" in report
    pixels = image.imread(run / "pareto_7b-13b.png")
    assert pixels.shape[0] > 300 and pixels.shape[1] > 600


def test_the_planner_is_opt_in() -> None:
    assert "planner" not in GridConfig.preset(quick=True).policies
    assert "planner" in GridConfig.preset(quick=True, planner=True).policies
