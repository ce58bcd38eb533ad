"""The experiments' typed rows: their columns keep their order, a row survives JSON and CSV
unchanged, and lines written when the rows were plain mappings read back to the same text."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from perllm.experiments.checkpoint import Checkpoint
from perllm.experiments.executors import ExecutorSpec
from perllm.experiments.grid import ROW_FIELDS, GridConfig, Task, run_regret, run_task
from perllm.experiments.reproduce import reproduce
from perllm.experiments.robustness_runs import ROW_FIELDS as RUN_FIELDS
from perllm.experiments.rows import BoundRow, GridRow, RegretCurve, Row, RunRow, write_csv
from perllm.experiments.yardstick import BOUND_FIELDS

# Lines of results.json, bounds.csv, results.csv and a robustness checkpoint as `perllm
# reproduce --quick` and `benchmarks/robustness.py` wrote them with rows as plain mappings.
GRID_JSON = (
    '{"deployment": "6b/6b", "bandwidth": "nominal", "rate_factor": 0.5, "rate_rps": 6.5, '
    '"policy": "cs-ucb", "seed": 0, "requests": 2000, "completed": 2000, "rejected": 0, '
    '"throughput_rps": 6.627151838103702, "goodput_rps": 6.6104419242406065, '
    '"deadline_satisfaction": 0.9975, "latency_p50_s": 1.2189427659894143, '
    '"latency_p95_s": 7.323722748791308, "latency_p99_s": 14.383212436735395, '
    '"energy_total_j": 123412.01058744919, "energy_transmission_j": 161.39568722797014, '
    '"energy_inference_j": 85027.59396912936, "energy_idle_j": 38223.02093109186, '
    '"energy_per_request_j": 61.706005293724594, "weighted_energy_j": 123412.01058744919}'
)
GRID_CSV = (
    "6b/6b,nominal,0.5,6.5,cs-ucb,0,2000,2000,0,6.627151838103702,6.6104419242406065,0.9975,"
    "1.2189427659894143,7.323722748791308,14.383212436735395,123412.01058744919,"
    "161.39568722797014,85027.59396912936,38223.02093109186,61.706005293724594,"
    "123412.01058744919"
)
BOUND_JSON = (
    '{"deployment": "6b/6b", "bandwidth": "nominal", "rate_rps": 13.0, "seed": 0, '
    '"requests": 2000, "met_upper_bound": 1999, "goodput_upper_bound_rps": 13.200831951845498, '
    '"energy_lower_bound_j": 53599.73180916942, "energy_floor_j": 53599.73180916942, '
    '"frontier": [[0.5, 999.998, 53599.73180916942, 0.0], '
    "[0.7, 1399.9976, 53599.73180916942, 0.0], [0.9, 1799.9972, 53599.73180916942, 0.0], "
    "[0.95, 1899.9971, 53599.73180916942, 0.0], [0.99, 1979.99702, 53599.73180916942, 0.0], "
    "[0.9995, 1998.997001, 53599.73180916942, 0.0]]}"
)
BOUND_CSV = "6b/6b,nominal,13.0,0,2000,1999,13.200831951845498,53599.73180916942,53599.73180916942"
RUN_JSON = (
    '{"family": "mixed", "cluster": 1, "servers": 2, "cloud_servers": 1, '
    '"capacity_rps": 4.273324145203479, "load": 0.7, "rate_rps": 2.991327, "seed": 0, '
    '"policy": "cs-ucb", "requests": 300, "completed": 300, "rejected": 0, "met": 282, '
    '"goodput_rps": 2.2532168339637195, "deadline_satisfaction": 0.94, '
    '"energy_j": 50205.97391079646, "weighted_energy_j": 50205.97391079646, '
    '"energy_per_met_j": 178.03536847800163, "bound_goodput_rps": NaN, '
    '"wall_s": 0.04118849000224145}'
)


def test_the_columns_keep_their_order() -> None:
    assert ROW_FIELDS == GridRow.columns() == tuple(json.loads(GRID_JSON))
    assert RUN_FIELDS == RunRow.columns() == tuple(json.loads(RUN_JSON))
    assert BoundRow.columns() == tuple(json.loads(BOUND_JSON))
    assert BoundRow.columns()[:-1] == BOUND_FIELDS  # all but the frontier
    assert RegretCurve.columns() == ("deployment", "policy", "time_s", "regret")


@pytest.mark.parametrize(
    ("kind", "text"), [(GridRow, GRID_JSON), (BoundRow, BOUND_JSON), (RunRow, RUN_JSON)]
)
def test_json_of_the_mapping_rows_reads_back_to_the_same_text(kind: type[Row], text: str) -> None:
    row = kind.from_json(json.loads(text))
    assert isinstance(row, kind)
    assert json.dumps(row.to_json()) == text


@pytest.mark.parametrize(
    ("kind", "text", "columns", "line"),
    [
        (GridRow, GRID_JSON, ROW_FIELDS, GRID_CSV),
        (BoundRow, BOUND_JSON, BOUND_FIELDS, BOUND_CSV),
    ],
)
def test_csv_of_a_row_is_the_mapping_rows_csv(
    kind: type[Row], text: str, columns: tuple[str, ...], line: str, tmp_path: Path
) -> None:
    path = tmp_path / "rows.csv"
    write_csv([kind.from_json(json.loads(text))], columns, path)
    assert path.read_bytes() == f"{','.join(columns)}\r\n{line}\r\n".encode()


@pytest.fixture(scope="module")
def fresh() -> list[Row]:
    """A grid run and a regret curve, as the worker processes return them."""
    return [
        run_task(Task("7b/13b", "constrained", 1.0, "cs-ucb", 1, 80)),
        run_regret("7b/13b", "cs-ucb", 60, 0),
    ]


def test_a_fresh_row_round_trips_through_json_and_csv(fresh: list[Row], tmp_path: Path) -> None:
    row, curve = fresh
    assert isinstance(row, GridRow) and isinstance(curve, RegretCurve)
    for each in (row, curve):
        text = json.dumps(each.to_json())
        again = type(each).from_json(json.loads(text))
        assert again == each
        assert json.dumps(again.to_json()) == text
    write_csv([row], ROW_FIELDS, tmp_path / "rows.csv")
    with (tmp_path / "rows.csv").open(newline="") as handle:
        (back,) = list(csv.DictReader(handle))
    assert tuple(back) == ROW_FIELDS
    assert back == {name: str(value) for name, value in row.to_json().items()}


def test_the_checkpoint_keeps_rows_exactly(fresh: list[Row], tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.jsonl"
    kinds: dict[str, Any] = {"run": GridRow.from_json, "regret": RegretCurve.from_json}
    header = {"grid": "small"}
    with Checkpoint(path, header, resume=False) as saved:
        saved.record(("run", 1), fresh[0])
        saved.record(("regret", "7b/13b"), fresh[1])
    written = path.read_text()
    with Checkpoint(path, header, resume=True, decode=lambda k, d: kinds[k[0]](d)) as saved:
        assert saved.results == {("run", 1): fresh[0], ("regret", "7b/13b"): fresh[1]}
    assert path.read_text() == written  # rewritten whole on resuming: the same bytes
    assert json.loads(written.splitlines()[1])["result"] == fresh[0].to_json()


@pytest.mark.slow
def test_the_written_files_of_a_small_grid_come_back_through_the_rows(tmp_path: Path) -> None:
    grid = GridConfig(("7b/13b",), ("nominal",), (1.0,), ("cs-ucb", "cloud-only"), 1, 100)
    reproduce(grid, tmp_path, ExecutorSpec("process", 2), lambda done: None, "test")
    document = json.loads((tmp_path / "results.json").read_text())
    rows = [GridRow.from_json(run) for run in document["runs"]]
    bounds = [BoundRow.from_json(bound) for bound in document["bounds"]]
    assert [row.to_json() for row in rows] == document["runs"]
    assert json.dumps([b.to_json() for b in bounds]) == json.dumps(document["bounds"])
    write_csv(rows, ROW_FIELDS, tmp_path / "again.csv")
    write_csv(bounds, BOUND_FIELDS, tmp_path / "again-bounds.csv")
    assert (tmp_path / "again.csv").read_bytes() == (tmp_path / "results.csv").read_bytes()
    assert (tmp_path / "again-bounds.csv").read_bytes() == (tmp_path / "bounds.csv").read_bytes()
