"""The built-in trace replays: their classes and SLO deadlines, the window, the rate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from perllm.cli import main
from perllm.cluster import scenario
from perllm.errors import InputError
from perllm.workload.config import TraceConfig, WorkloadConfig
from perllm.workload.generator import generate_requests
from perllm.workload.traces import read_trace

BUSIEST = ["--scenario", "azure-code-paper", "--trace-window", "busiest-hour"]
TRACE_SCENARIOS = {
    "azure-conv-paper": ("chat", 19366, 0.25, 0.1),
    "azure-code-paper": ("code", 8819, 0.125, 0.2),
    "azure-conv-gpu-edge": ("chat", 19366, 0.25, 0.1),
    "azure-code-gpu-edge": ("code", 8819, 0.125, 0.2),
    "mooncake-gpu-edge": ("chat", 12031, 0.25, 0.1),
}


def _with_trace(workload: WorkloadConfig, **changes: object) -> WorkloadConfig:
    assert workload.trace is not None
    return workload.model_copy(update={"trace": workload.trace.model_copy(update=changes)})


@pytest.mark.parametrize("name", sorted(TRACE_SCENARIOS))
def test_trace_scenarios_replay_the_whole_trace_with_slo_deadlines(name: str) -> None:
    service_class, count, ttft_s, tpot_s = TRACE_SCENARIOS[name]
    cluster = scenario.load(name)
    assert name in scenario.builtin_names()
    assert cluster.requests == count
    requests = generate_requests(cluster.workload, 400, seed=0)
    assert len(requests) == 400 and requests[0].routed.arrival_s == 0.0
    assert {r.routed.service_class for r in requests} == {service_class}
    # Deadline = TTFT SLO + TPOT SLO x the request's own output tokens.
    for r in requests:
        assert r.routed.deadline_s == pytest.approx(ttft_s + tpot_s * r.output_tokens)
    tiers = {s.tier for s in cluster.servers}
    assert tiers == {"edge", "cloud"}


def test_gpu_edge_is_consumer_gpus_and_jetson_at_the_edge_datacenter_gpus_in_the_cloud() -> None:
    cluster = scenario.load("azure-conv-gpu-edge")
    edge = {s.hardware for s in cluster.servers if s.tier == "edge"}
    cloud = {s.hardware for s in cluster.servers if s.tier == "cloud"}
    assert edge == {"rtx-4090", "rtx-3090", "jetson-agx-orin-64gb"}
    assert cloud == {"a100-80gb", "h100-sxm"}
    paper = scenario.load("azure-conv-paper")
    assert [s.hardware for s in paper.servers] == [
        s.hardware for s in scenario.load("perllm-paper").servers
    ]


def test_the_trace_window_start_and_busiest_hour() -> None:
    workload = scenario.load("azure-conv-paper").workload
    assert workload.trace is not None
    rows = read_trace(workload.trace)
    arrivals = np.array([row.arrival_s for row in rows])
    start = int(np.searchsorted(arrivals, 600.0))
    later = generate_requests(_with_trace(workload, start_s=600.0), 50, seed=0)
    assert later[0].routed.arrival_s == 0.0
    prompts = [r.routed.prompt_tokens for r in later]
    assert prompts == [row.prompt_tokens for row in rows[start:][:50]]
    assert later[-1].routed.arrival_s == pytest.approx(arrivals[start + 49] - arrivals[start])
    busiest = generate_requests(_with_trace(workload, window="busiest-hour"), 10**6, seed=0)
    counts = np.searchsorted(arrivals, arrivals + 3600.0) - np.arange(arrivals.size)
    assert len(busiest) == counts.max() == len(rows) - int(np.argmax(counts))
    with pytest.raises(InputError, match="start-s 99999 is past the trace's last arrival"):
        generate_requests(_with_trace(workload, start_s=99999.0), 10, seed=0)
    with pytest.raises(ValueError, match="busiest-hour chooses its own start"):
        TraceConfig(path="x", format="azure-csv", window="busiest-hour", start_s=5.0)


def test_the_rate_compresses_the_trace() -> None:
    workload = scenario.load("azure-code-paper").workload
    requests = generate_requests(workload, 1000, seed=0, rate_rps=20.0)
    span = requests[-1].routed.arrival_s - requests[0].routed.arrival_s
    assert 999 / span == pytest.approx(20.0)


def test_simulate_takes_the_window_on_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["simulate", "--scenario", "azure-code-gpu-edge", "--policy", "least-loaded"]
    window = ["--requests", "200", "--trace-start", "1200", "--rate", "5"]
    code = main([*argv, *window, "--out", str(tmp_path), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    summary = json.loads(out)
    assert summary["requests"] == 200 and summary["rate_rps"] == 5.0
    records = (tmp_path / "records.csv").read_text().splitlines()
    assert len(records) == 201
    code = main([*argv, "--requests", "50", "--trace-window", "busiest-hour", "--json"])
    assert code == 0
    capsys.readouterr()


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--scenario", "tiny", "--trace-start", "5"], "--trace-start: scenario 'tiny' replays"),
        (["--scenario", "tiny", "--trace-window", "first"], "--trace-window: scenario 'tiny'"),
        (
            [*BUSIEST, "--trace-start", "5"],
            "--trace-start: --trace-window busiest-hour chooses its own start",
        ),
        (["--scenario", "azure-code-paper", "--trace-start", "-1"], "--trace-start"),
        (["--scenario", "azure-code-paper", "--trace-window", "last"], "--trace-window"),
    ],
)
def test_bad_window_flags_are_one_line(
    capsys: pytest.CaptureFixture[str], extra: list[str], needle: str
) -> None:
    code = main(["simulate", "--policy", "least-loaded", "--requests", "10", *extra])
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert err.count("\n") == 1 and needle in err, err
