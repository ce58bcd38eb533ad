"""Robustness outputs: the CSV files, the printed tables and the plot."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from perllm.experiments.robustness import scores
from perllm.experiments.robustness_report import plot, print_tables, write_csvs
from perllm.experiments.robustness_runs import ROW_FIELDS

POLICIES = ["a", "b", "oracle"]


def _rows() -> list[dict[str, object]]:
    rows = []
    for cluster in range(2):
        for load in (0.7, 1.5):
            for k, policy in enumerate(POLICIES):
                met = 50 + 10 * k - 20 * cluster
                row = {field: 0 for field in ROW_FIELDS}
                row.update(
                    cluster=cluster,
                    load=load,
                    seed=0,
                    policy=policy,
                    met=met,
                    goodput_rps=met / 10,
                    deadline_satisfaction=met / 100,
                    weighted_energy_j=1000.0 + k,
                    bound_goodput_rps=10.0,
                )
                rows.append(row)
    return rows


CLUSTERS = [
    {
        "seed": 0,
        "data": {
            "description": "1 edge + 1 cloud (x)",
            "servers": [{}, {}],
            "requests": 100,
            "workload": {"arrivals": {"process": "gamma", "cv": 2.0}, "classes": "personalized"},
        },
        "capacity": {"rate_rps": 3.0, "fluid_rps": 4.0},
    }
]


def test_outputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = _rows()
    write_csvs(rows, CLUSTERS, tmp_path)  # type: ignore[arg-type]
    written = list(csv.DictReader((tmp_path / "robustness.csv").read_text().splitlines()))
    assert len(written) == len(rows) and list(written[0]) == list(ROW_FIELDS)
    clusters = list(csv.DictReader((tmp_path / "clusters.csv").read_text().splitlines()))
    assert clusters[0]["arrivals"] == "gamma cv 2.0"
    results = print_tables(rows, ["a", "b"], POLICIES, [0.7, 1.5])  # type: ignore[arg-type]
    out = capsys.readouterr().out
    assert "win rate" in out and "of bound" in out and "oracle" in out
    # b meets more deadlines than a in every cell: it beats all at both loads, a at neither.
    assert "beats all" in out and "100 / 100" in out and "0 / 0" in out
    assert "within 1%" in out
    assert [r.policy for r in results] == [r.policy for r in scores(rows, ["a", "b"], POLICIES)]
    plot(rows, results, ["a", "b"], tmp_path / "r.png")  # type: ignore[arg-type]
    assert (tmp_path / "r.png").stat().st_size > 10_000
