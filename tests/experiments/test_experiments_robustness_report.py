"""Robustness outputs: the CSV files, the printed tables and the plot."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from perllm.clustergen.capacity import Capacity
from perllm.experiments.robustness import cloud_check, scores
from perllm.experiments.robustness_report import (
    SCORE_FIELDS,
    FamilyScores,
    plot,
    print_cloud_checks,
    print_tables,
    write_csvs,
    write_scores,
)
from perllm.experiments.robustness_runs import ROW_FIELDS
from perllm.experiments.rows import GeneratedCluster, RunRow

POLICIES = ["a", "b", "oracle"]


def _rows() -> list[RunRow]:
    rows = []
    for cluster in range(2):
        for load in (0.7, 1.5):
            for k, policy in enumerate(POLICIES):
                met = 50 + 10 * k - 20 * cluster
                row: dict[str, object] = {field: 0 for field in ROW_FIELDS}
                row.update(
                    cluster=cluster,
                    load=load,
                    seed=0,
                    family="gpu-edge",
                    policy=policy,
                    requests=100,
                    met=met,
                    goodput_rps=met / 10,
                    deadline_satisfaction=met / 100,
                    weighted_energy_j=1000.0 + k,
                    bound_goodput_rps=10.0,
                )
                rows.append(RunRow(**row))  # type: ignore[arg-type]
    return rows


CLUSTERS = [
    GeneratedCluster(
        family="gpu-edge",
        seed=0,
        data={
            "description": "1 edge + 1 cloud (x)",
            "servers": [{}, {}],
            "requests": 100,
            "workload": {"arrivals": {"process": "gamma", "cv": 2.0}, "classes": "personalized"},
        },
        capacity=Capacity(3.0, 4.0, 1.0, 0.9, 100, 4),
    )
]


def test_outputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = _rows()
    write_csvs(rows, CLUSTERS, tmp_path)
    written = list(csv.DictReader((tmp_path / "robustness.csv").read_text().splitlines()))
    assert len(written) == len(rows) and list(written[0]) == list(ROW_FIELDS)
    clusters = list(csv.DictReader((tmp_path / "clusters.csv").read_text().splitlines()))
    assert clusters[0]["arrivals"] == "gamma cv 2.0" and clusters[0]["family"] == "gpu-edge"
    results = print_tables(rows, ["a", "b"], POLICIES, [0.7, 1.5], "gpu-edge")
    out = capsys.readouterr().out
    assert "win rate" in out and "of bound" in out and "oracle" in out
    assert "family gpu-edge" in out and "dominated" in out and "frugal p95" in out
    assert "energy/met vs most-met" in out and "beats all" not in out
    by_policy = {s.policy: s for s in results}
    # b meets more deadlines than a at about the same energy in every cell: a is dominated.
    assert by_policy["a"].dominated == 1.0 and by_policy["b"].dominated == 0.0
    assert [r.policy for r in results] == [r.policy for r in scores(rows, ["a", "b"], POLICIES)]
    checks = [cloud_check(rows, "a", reference="b")]
    print_cloud_checks(checks, "gpu-edge")
    assert "no cell where b meets >= 95%" in capsys.readouterr().out  # b never meets 95%
    write_scores([FamilyScores("gpu-edge", results, checks)], tmp_path / "scores.csv")
    scored = list(csv.DictReader((tmp_path / "scores.csv").read_text().splitlines()))
    assert list(scored[0]) == list(SCORE_FIELDS) and len(scored) == len(POLICIES)
    assert {row["policy"]: row["dominated"] for row in scored}["a"] == "1.0"
    assert {row["policy"]: row["cloud_check_cells"] for row in scored} == {
        "a": "0",
        "b": "",
        "oracle": "",
    }
    plot(rows, results, ["a", "b"], tmp_path / "r.png")
    assert (tmp_path / "r.png").stat().st_size > 10_000
