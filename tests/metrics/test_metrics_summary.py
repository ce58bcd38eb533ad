"""Summaries and exports: required keys, one CSV row per request, hand-computed figures."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from perllm.cluster import scenario
from perllm.cluster.scenario import Cluster
from perllm.domain import (
    Decision,
    EnergyParts,
    EnergyWeights,
    Feedback,
    PowerSpec,
    Request,
    ServerPerf,
    ServerSpec,
    Tier,
)
from perllm.experiments.grid import ROW_FIELDS
from perllm.metrics.export import write_json, write_records_csv
from perllm.metrics.recorder import COLUMNS, Recorder
from perllm.metrics.summary import EnergyTotals, Summary, regret_curve, summarize
from perllm.sim.runner import run_once

REQUIRED = (
    "policy",
    "scenario",
    "requests",
    "completed",
    "throughput_rps",
    "goodput_rps",
    "deadline_satisfaction",
    "latency_p50_s",
    "latency_p95_s",
    "latency_p99_s",
    "energy_j",
    "energy_per_request_j",
    "per_class",
    "per_server",
)
TinyRun = tuple[Summary, Recorder, Cluster]
GROUP_KEYS = (
    "requests",
    "completed",
    "throughput_rps",
    "goodput_rps",
    "deadline_satisfaction",
    "energy_j",
    "energy_per_request_j",
    "latency_p50_s",
    "latency_p95_s",
    "latency_p99_s",
)


@pytest.fixture(scope="module")
def tiny_run() -> TinyRun:
    cluster = scenario.load("tiny")
    result = run_once(cluster, "least-loaded", requests=150, seed=2, track_oracle=True)
    return result.summary, result.recorder, cluster


def test_summary_has_the_required_keys(tiny_run: TinyRun) -> None:
    typed, _, cluster = tiny_run
    summary = typed.to_json()
    for key in REQUIRED:
        assert key in summary, key
    assert summary["policy"] == "least-loaded" and summary["scenario"] == "tiny"
    assert set(summary["energy_j"]) >= {"total", "transmission", "inference", "idle"}
    assert set(summary["per_server"]) == {s.name for s in cluster.servers}
    assert set(summary["per_class"]) == {c.name for c in cluster.workload.classes}
    for group in [*summary["per_class"].values(), *summary["per_server"].values()]:
        for key in GROUP_KEYS:
            assert key in group, key
    assert {g["tier"] for g in summary["per_server"].values()} == {"edge", "cloud"}
    assert sum(g["requests"] for g in summary["per_class"].values()) == 150
    # JSON-ready, with no NaN once something has completed.
    text = json.dumps(summary, allow_nan=False)
    assert json.loads(text)["requests"] == 150


def test_csv_export_has_a_header_and_one_row_per_request(
    tmp_path: Path,
    tiny_run: TinyRun,
) -> None:
    _, recorder, _ = tiny_run
    path = tmp_path / "records.csv"
    write_records_csv(recorder, path)
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert tuple(rows[0]) == COLUMNS
    assert len(rows) == 1 + len(recorder) == 151
    ids = sorted(int(row[0]) for row in rows[1:])
    assert ids == list(range(150))
    # Floats survive the round trip exactly.
    col = COLUMNS.index("processing_s")
    assert [float(row[col]) for row in rows[1:]] == recorder.columns["processing_s"]


def test_summary_round_trips_through_json(tmp_path: Path, tiny_run: TinyRun) -> None:
    summary, _, _ = tiny_run
    write_json(summary.to_json(), tmp_path / "summary.json")
    text = (tmp_path / "summary.json").read_text()
    again = Summary.from_json(json.loads(text))
    assert again == summary
    assert again.seed == 2 and again.regret_vs_oracle is None
    assert json.dumps(again.to_json(), indent=2) + "\n" == text
    # Keys in the order of the fields; a run key not set (the regret) is left out.
    keys = list(json.loads(text))
    assert keys[:3] == ["policy", "scenario", "requests"]
    assert keys[-4:] == ["per_class", "per_server", "seed", "rate_rps"]
    assert "tier" not in json.loads(text)["per_class"]["chat"]
    assert json.loads(text)["per_server"]["edge-0"]["tier"] == "edge"


def test_summary_round_trips_through_a_csv_row(tmp_path: Path, tiny_run: TinyRun) -> None:
    summary, _, _ = tiny_run
    row = summary.row()
    assert "per_class" not in row and "energy_j" not in row
    assert row["energy_total_j"] == summary.energy_j.total
    assert row["energy_idle_j"] == summary.energy_j.idle
    # Every summary column of the grid's results rows comes from the row.
    point = {"deployment", "bandwidth", "rate_factor"}
    assert set(ROW_FIELDS) - point <= set(row)
    path = tmp_path / "rows.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(row))
        writer.writeheader()
        writer.writerow(row)
    with path.open(newline="") as handle:
        (back,) = list(csv.DictReader(handle))
    assert list(back) == list(row)
    for key, value in row.items():
        if isinstance(value, str):
            assert back[key] == value, key
        else:  # numbers survive the round trip exactly
            assert type(value)(back[key]) == value, key
    energy = EnergyTotals(
        *(
            float(back[f"energy_{part}_j"])
            for part in ("total", "transmission", "inference", "idle")
        )
    )
    assert energy == summary.energy_j


def test_json_export_round_trips(tmp_path: Path) -> None:
    data = {"a": 1, "b": {"c": [1.5, "x"]}}
    write_json(data, tmp_path / "s.json")
    assert json.loads((tmp_path / "s.json").read_text()) == data


def test_regret_curve_is_cumulative_in_arrival_order(
    tiny_run: TinyRun,
) -> None:
    _, recorder, cluster = tiny_run
    times, regret = regret_curve(recorder, cluster.weights)
    assert len(times) == len(regret) == 150
    assert np.all(np.diff(times) >= 0)
    assert np.all(np.isfinite(regret))


# -- a hand-made recorder ---------------------------------------------------------------------


def _spec(name: str, tier: Tier) -> ServerSpec:
    perf = ServerPerf(0.01, 1e-4, 1e-3, 0.01, 1e-6, 1e-3)
    return ServerSpec(name, tier, "hw", "m", 8, 10_000, perf, PowerSpec(10, 100), "l")


SERVERS = (_spec("a", "edge"), _spec("b", "cloud"))


def _request(i: int, arrival: float, cls: str, deadline: float) -> Request:
    return Request.of(i, arrival, cls, 10 * (i + 1), 5 * (i + 1), 40, 60, deadline)


def _feedback(
    request: Request, server: int, processing: float, energy: tuple[float, float, float]
) -> Feedback:
    return Feedback(
        request=request.routed,
        decision=Decision(server=server),
        processing_s=processing,
        transfer_s=0.1,
        queue_s=0.2,
        prefill_s=0.3,
        decode_s=processing - 0.6,
        output_tokens=request.output_tokens,
        energy=EnergyParts(*energy),
        met=processing <= request.routed.deadline_s,
    )


def _hand_made() -> Recorder:
    """Five requests over the arrival window [0, 4] s:

    ====  =======  =====  ======  ==========  ========  ====  =============
    id    arrival  class  server  processing  finish    met   energy t/i/i
    ====  =======  =====  ======  ==========  ========  ====  =============
    0     0        x      a       1.0         1.0       yes   1 / 10 / 2
    1     1        x      b       3.0         4.0       no    2 / 20 / 0
    2     2        y      a       0.5         2.5       yes   1 / 5 / 0
    3     3        x      -       rejected    3.0       no    0
    4     4        y      b       2.0         6.0       yes   1 / 15 / 1
    ====  =======  =====  ======  ==========  ========  ====  =============

    Unattributed idle energy: 4 J on a, 0 on b. Horizon 6 s.
    """
    rec = Recorder(SERVERS)
    r = [
        _request(0, 0.0, "x", 2.0),
        _request(1, 1.0, "x", 2.0),
        _request(2, 2.0, "y", 1.0),
        _request(3, 3.0, "x", 9.0),
        _request(4, 4.0, "y", 5.0),
    ]
    rec.on_feedback(1.0, _feedback(r[0], 0, 1.0, (1, 10, 2)))
    rec.on_feedback(2.5, _feedback(r[2], 0, 0.5, (1, 5, 0)))
    rec.on_reject(3.0, r[3].routed)
    rec.on_feedback(4.0, _feedback(r[1], 1, 3.0, (2, 20, 0)))
    rec.on_feedback(6.0, _feedback(r[4], 1, 2.0, (1, 15, 1)))
    rec.on_end(6.0, {"a": 4.0, "b": 0.0})
    return rec


def test_hand_computed_summary() -> None:
    summary = summarize(
        _hand_made(), policy="p", scenario="s", weights=EnergyWeights(2.0, 1.0, 0.5)
    )
    assert summary.requests == 5
    assert summary.completed == 4
    assert summary.rejected == 1
    assert summary.met == 3
    assert summary.window_s == 4.0
    assert summary.duration_s == 6.0
    # Completions inside the window [0, 4]: ids 0, 2, 1 (id 4 ends at 6); met among them: 0, 2.
    assert summary.throughput_rps == pytest.approx(3 / 4)
    assert summary.goodput_rps == pytest.approx(2 / 4)
    # Met over all requests, the rejected one counting as missed.
    assert summary.deadline_satisfaction == pytest.approx(3 / 5)
    # Latencies of the completed: 0.5, 1, 2, 3 (linear interpolation between ranks).
    assert summary.latency_p50_s == pytest.approx(1.5)
    assert summary.latency_p95_s == pytest.approx(2.85)
    assert summary.latency_p99_s == pytest.approx(2.97)
    assert summary.latency_mean_s == pytest.approx(6.5 / 4)
    energy = summary.energy_j
    assert energy.to_json() == pytest.approx(
        {"total": 62.0, "transmission": 5.0, "inference": 50.0, "idle": 7.0}
    )
    assert summary.weighted_energy_j == pytest.approx(2 * 5 + 50 + 0.5 * 7)
    assert summary.energy_per_request_j == pytest.approx(62 / 4)


def test_hand_computed_groups() -> None:
    summary = summarize(_hand_made(), policy="p", scenario="s")
    x, y = summary.per_class["x"], summary.per_class["y"]
    assert (x.requests, x.completed, y.requests, y.completed) == (3, 2, 2, 2)
    assert x.deadline_satisfaction == pytest.approx(1 / 3)
    assert y.deadline_satisfaction == pytest.approx(1.0)
    assert x.throughput_rps == pytest.approx(2 / 4) and x.goodput_rps == pytest.approx(1 / 4)
    assert y.throughput_rps == pytest.approx(1 / 4) and y.goodput_rps == pytest.approx(1 / 4)
    assert x.energy_j == pytest.approx(13 + 22)
    assert x.latency_p50_s == pytest.approx(2.0)
    a, b = summary.per_server["a"], summary.per_server["b"]
    assert (a.tier, b.tier) == ("edge", "cloud")
    assert (a.requests, b.requests) == (2, 2)
    assert a.energy_j == pytest.approx(13 + 6 + 4)  # its requests + its unattributed idle
    assert b.energy_j == pytest.approx(22 + 17)
    # As for the whole run: the server's energy, its unattributed idle included, per completion.
    assert a.energy_per_request_j == pytest.approx(23 / 2)
    assert b.energy_per_request_j == pytest.approx(39 / 2)
    assert x.energy_per_request_j == pytest.approx(35 / 2)  # classes: requests' energy only
    assert a.deadline_satisfaction == 1.0 and b.deadline_satisfaction == 0.5


def test_records_keep_each_request_as_given() -> None:
    rec = _hand_made()
    cols = rec.columns
    assert cols["id"] == [0, 2, 3, 1, 4]  # completion order
    assert cols["server"] == ["a", "a", "", "b", "b"]
    assert cols["tier"] == ["edge", "edge", "", "cloud", "cloud"]
    assert cols["rejected"] == [False, False, True, False, False]
    assert math.isnan(cols["processing_s"][2])  # type: ignore[arg-type]
    assert cols["output_tokens"][2] == 0


def test_empty_recorder_summarises_without_errors() -> None:
    rec = Recorder(SERVERS)
    rec.on_end(0.0, {"a": 0.0, "b": 0.0})
    summary = summarize(rec, policy="p", scenario="s")
    assert summary.requests == 0 and summary.completed == 0
    assert summary.throughput_rps == 0.0 and summary.deadline_satisfaction == 0.0
    assert math.isnan(summary.latency_p50_s)
    assert summary.energy_j.total == 0.0
    assert set(summary.per_server) == {"a", "b"}
