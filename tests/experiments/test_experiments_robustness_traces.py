"""Trace cells of the robustness benchmark: a generated cluster replaying a production trace.

Its workload is the trace's, its capacity is measured on it, its family label keeps it apart,
a cell whose requests mostly fit no server is skipped, and the benchmark keys, reads back and
reports trace cells apart from the synthetic ones.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from perllm.cluster import scenario
from perllm.clustergen.capacity import Capacity, measure_capacity
from perllm.experiments import robustness_traces
from perllm.experiments.robustness_plan import (
    Chosen,
    cell_policies,
    collect,
    decode,
    key_kind,
    result_key,
)
from perllm.experiments.robustness_runs import RunTask, cluster_of, generate_task, run_task
from perllm.experiments.robustness_traces import (
    TRACES,
    TraceCluster,
    largest_fit,
    trace_cluster_task,
    trace_data,
    unfit_requests,
)
from perllm.experiments.rows import GeneratedCluster, RunRow
from perllm.sim.runner import run_once
from perllm.workload.generator import generate_requests

SETTINGS = {"servers": [2, 3], "capacity-requests": 60, "requests": 80, "steady-multiple": 0}
SCRIPT = Path(__file__).parents[2] / "benchmarks" / "robustness.py"


@pytest.fixture(scope="module")
def generated() -> GeneratedCluster:
    # Cluster 5: an RTX 4090 with Llama-2-7B and an RTX 3090 with ChatGLM-6B, short contexts.
    return generate_task(5, SETTINGS)


@dataclass(frozen=True)
class Measured:
    """A trace cell cluster, and the clusters its capacity was measured on."""

    cell: TraceCluster
    on: list[scenario.Cluster]


@pytest.fixture(scope="module")
def code(generated: GeneratedCluster) -> Measured:
    on: list[scenario.Cluster] = []

    def spy(cluster: scenario.Cluster, requests: int, seed: int) -> Capacity:
        on.append(cluster)
        return measure_capacity(cluster, requests, seed)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(robustness_traces, "measure_capacity", spy)
        return Measured(trace_cluster_task(generated, "azure-code", SETTINGS), on)


def _scenario(name: str) -> scenario.Cluster:
    return scenario.load(name)


def _build(data: Any) -> scenario.Cluster:
    return scenario.build(scenario.parse(json.loads(json.dumps(data)), "test"), "test")


def test_a_trace_cell_replays_the_traces_workload(
    generated: GeneratedCluster, code: Measured
) -> None:
    conv = code.cell
    assert conv.cluster is not None and not conv.skipped
    data = conv.cluster.data
    replay = _scenario(TRACES["azure-code"].scenario)
    cell = _build(data)
    assert cell.workload.trace is not None and replay.workload.trace is not None
    assert cell.workload.trace.path == replay.workload.trace.path
    assert cell.workload.classes == replay.workload.classes  # the class and its SLO deadline
    assert cell.enforce_context_window
    assert data["servers"] == generated.data["servers"]  # the same hardware and links
    assert data["links"] == generated.data["links"]
    assert data["requests"] == conv.window == 80
    # The replay's requests: the trace's first ones, arrivals stretched to the rate asked for.
    ours = generate_requests(cell.workload, 80, 0, rate_rps=2.0)
    assert ours == generate_requests(replay.workload, 80, 0, rate_rps=2.0)
    assert ours != generate_requests(replay.workload, 80, 0, rate_rps=4.0)


def test_its_capacity_is_measured_on_the_trace(generated: GeneratedCluster, code: Measured) -> None:
    conv = code.cell
    assert conv.cluster is not None and len(code.on) == 1
    measured, replay = code.on[0], _build(trace_data(generated.data, "azure-code"))
    assert measured.workload == replay.workload  # the trace's workload, its rate as the replay's
    assert measured.workload.trace is not None and measured.enforce_context_window
    assert measured.servers == _build(generated.data).servers
    assert conv.cluster.capacity != generated.capacity
    # The recorded rate is that capacity (x the settings' load of 1).
    rate = conv.cluster.data["workload"]["trace"]["rate-rps"]
    assert rate == pytest.approx(conv.cluster.capacity.rate_rps, rel=1e-3)


def test_its_family_label_and_cluster_key_keep_it_apart(
    generated: GeneratedCluster, code: Measured
) -> None:
    conv = code.cell
    assert conv.cluster is not None
    assert conv.cluster.family == "mixed/azure-code" and conv.family == "mixed"
    assert conv.cluster.seed == generated.seed
    # One process holds both clusters of seed 5: the synthetic one and the trace cell's.
    own = cluster_of(generated.seed, generated.data)
    cell = cluster_of(generated.seed, conv.cluster.data, "azure-code")
    assert own.workload.trace is None and cell.workload.trace is not None
    capacity = conv.cluster.capacity.rate_rps
    row = run_task(
        RunTask(
            5, conv.cluster.data, capacity, 1.0, 0, "least-loaded", "least-loaded", {},
            conv.cluster.family, "azure-code",
        )
    )  # fmt: skip
    assert row.family == "mixed/azure-code" and row.requests == 80
    assert row.rate_rps == pytest.approx(capacity, rel=1e-5)


def test_a_cell_mostly_too_long_for_every_server_is_skipped(
    generated: GeneratedCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    capacity = Capacity(2.0, 2.0, 1.0, 0.9, 60, 10)
    monkeypatch.setattr(robustness_traces, "measure_capacity", lambda *args: capacity)
    # Mooncake's 12k-token prompts against a 4,096- and a 2,048-token context.
    cell = trace_cluster_task(generated, "mooncake", SETTINGS)
    assert cell.skipped and cell.cluster is None
    assert cell.window == 80 and cell.unfit > 40
    again = TraceCluster.from_json(json.loads(json.dumps(cell.to_json())))
    assert again == cell


def test_the_skip_rule_is_more_than_half(
    generated: GeneratedCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    capacity = Capacity(2.0, 2.0, 1.0, 0.9, 60, 10)
    monkeypatch.setattr(robustness_traces, "measure_capacity", lambda *args: capacity)
    for unfit, skipped in ((40, False), (41, True)):
        monkeypatch.setattr(robustness_traces, "unfit_requests", lambda c, n, k=unfit: k)
        cell = trace_cluster_task(generated, "azure-code", SETTINGS)
        assert (cell.unfit, cell.skipped) == (unfit, skipped)


def test_degradations_keep_their_place_in_the_run(
    generated: GeneratedCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = json.loads(json.dumps(generated.data))
    data["servers"][0]["degrade"] = {"at-s": 10.0, "speed-factor": 0.5}
    degrading = GeneratedCluster("mixed", 5, data, generated.capacity)
    capacity = Capacity(generated.capacity.rate_rps / 4, 2.0, 1.0, 0.9, 60, 10)
    monkeypatch.setattr(robustness_traces, "measure_capacity", lambda *args: capacity)
    cell = trace_cluster_task(degrading, "azure-code", SETTINGS)
    assert cell.cluster is not None
    # 80 requests in both runs, at a quarter of the rate: four times later.
    assert cell.cluster.data["servers"][0]["degrade"] == {"at-s": 40.0, "speed-factor": 0.5}


def test_unfit_requests_are_those_the_simulator_refuses_on_arrival(
    generated: GeneratedCluster,
) -> None:
    cluster = _build(trace_data(generated.data, "mooncake"))
    assert largest_fit(cluster) == 4096
    recorder = run_once(cluster, "least-loaded", requests=80, rate_rps=1.0).recorder
    refused = sum(reason.startswith("fits no server") for reason in recorder.reasons.values())
    assert refused == unfit_requests(cluster, 80) > 40


def test_prefix_affinity_runs_where_prompts_share_prefixes() -> None:
    chosen: Chosen = {
        "cs-ucb": ("cs-ucb", {}),
        "prefix-affinity": ("prefix-affinity", {}),
        "pa-half": ("prefix-affinity", {"min-match": 0.5}),
    }
    assert list(cell_policies(chosen)) == ["cs-ucb", "pa-half"]
    assert list(cell_policies(chosen, "azure-conv")) == ["cs-ucb", "pa-half"]
    assert list(cell_policies(chosen, "mooncake")) == list(chosen)
    assert list(cell_policies(chosen, named=True)) == list(chosen)


def _row(policy: str, trace: str = "") -> dict[str, Any]:
    family = f"mixed/{trace}" if trace else "mixed"
    values: dict[str, Any] = {"family": family, "cluster": 5, "load": 1.0, "seed": 0}
    values |= {"policy": policy, "bound_goodput_rps": math.nan}
    return {name: values.get(name, 1) for name in RunRow.columns()}


def test_checkpoint_keys_and_rows_keep_trace_cells_apart(
    generated: GeneratedCluster, code: Measured
) -> None:
    conv = code.cell
    assert result_key("run", "", 5, 1.0, 0, "cs-ucb") == ("run", 5, 1.0, 0, "cs-ucb")
    key = result_key("run", "mooncake", 5, 1.0, 0, "cs-ucb")
    assert key == ("trace-run", "mooncake", 5, 1.0, 0, "cs-ucb")
    assert key_kind(key) == ("run", "mooncake")
    chosen: Chosen = {"cs-ucb": ("cs-ucb", {}), "prefix-affinity": ("prefix-affinity", {})}
    saved = {
        ("cluster", 5): generated.to_json(),
        result_key("cluster", "azure-code", 5): conv.to_json(),
        ("run", 5, 1.0, 0, "cs-ucb"): _row("cs-ucb"),
        ("run", 5, 1.0, 0, "prefix-affinity"): _row("prefix-affinity"),
        ("bound", 5, 1.0, 0): [[5, 1.0, 0], 3.0],
        result_key("run", "azure-code", 5, 1.0, 0, "cs-ucb"): _row("cs-ucb", "azure-code"),
        result_key("bound", "azure-code", 5, 1.0, 0): [[5, 1.0, 0], 2.0],
        result_key("run", "mooncake", 5, 1.0, 0, "cs-ucb"): _row("cs-ucb", "mooncake"),
    }  # fmt: skip
    results = {key: decode(key, json.loads(json.dumps(data))) for key, data in saved.items()}
    assert results[result_key("cluster", "azure-code", 5)] == conv
    got = collect(results, chosen, ["azure-code"])
    assert [(r.family, r.policy, r.bound_goodput_rps) for r in got.rows] == [
        ("mixed", "cs-ucb", 3.0),  # prefix-affinity's synthetic run left out
        ("mixed/azure-code", "cs-ucb", 2.0),  # its own bound; mooncake not asked for
    ]
    assert got.clusters == [generated] and got.cells == [conv]


@pytest.fixture(scope="module")
def benchmark() -> ModuleType:
    spec = importlib.util.spec_from_file_location("robustness_traces_benchmark", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _main(benchmark: ModuleType, monkeypatch: pytest.MonkeyPatch, *argv: str) -> None:
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), *argv])
    benchmark.main()


@pytest.mark.parametrize(
    ("traces", "expected"),
    [
        ("azure-chat", "--traces: unknown azure-chat; known: azure-conv, azure-code, mooncake"),
        ("mooncake,mooncake", "--traces: a trace repeats in 'mooncake,mooncake'"),
        ("", "--traces: expected TRACE,TRACE,... or none, got ''"),
        ("mooncake,", "--traces: expected TRACE,TRACE,... or none, got 'mooncake,'"),
    ],
)
def test_bad_traces_fail_with_one_line_and_exit_2(
    benchmark: ModuleType,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    traces: str,
    expected: str,
) -> None:
    with pytest.raises(SystemExit) as stopped:
        _main(benchmark, monkeypatch, "--out", str(tmp_path), "--traces", traces)
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("robustness: ") and expected in err[0]


@pytest.mark.slow
def test_the_benchmark_reports_trace_cells_as_their_own_family(
    benchmark: ModuleType,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    small = [
        "--clusters", "1", "--seeds", "1", "--loads", "1.0", "--requests", "60",
        "--max-requests", "60", "--steady-multiple", "0", "--no-bound", "--workers", "1",
        "--set", "servers=[2,3]", "--set", "capacity-requests=60", "--first-cluster", "5",
        "--policies", "least-loaded,cloud-only,cs-ucb", "--traces", "azure-code,mooncake",
    ]  # fmt: skip
    _main(benchmark, monkeypatch, *small, "--out", str(tmp_path))
    out = capsys.readouterr().out
    synthetic, _, traces = out.partition("Trace cells, reported apart from the synthetic cells")
    assert "family mixed:" in synthetic and "mixed/" not in synthetic
    assert "trace azure-code: 1 of 1 clusters run" in traces
    assert "trace mooncake: 0 of 1 clusters run; 1 skipped" in traces
    assert "family mixed/azure-code:" in traces and "family mixed/mooncake" not in traces
    with (tmp_path / "robustness.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["family"] for row in rows] == ["mixed"] * 3 + ["mixed/azure-code"] * 3
    with (tmp_path / "scores.csv").open() as handle:
        assert {row["family"] for row in csv.DictReader(handle)} == {"mixed", "mixed/azure-code"}
    with (tmp_path / "clusters.csv").open() as handle:
        clusters = list(csv.DictReader(handle))
    assert [c["family"] for c in clusters] == ["mixed", "mixed/azure-code"]
    assert clusters[1]["arrivals"] == "trace traces:AzureLLMInferenceTrace_code.csv"
    assert clusters[1]["classes"] == "code"
    for name in ("robustness.png", "robustness-mixed-azure-code.png"):
        assert (tmp_path / name).stat().st_size > 0
