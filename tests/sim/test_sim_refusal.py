"""Requests too long for the servers: refused one by one with a recorded reason, counted as
missed, never a crash or a silent drop."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from perllm.cluster import scenario
from perllm.domain import Decision, RouterRequest
from perllm.metrics.export import REASON_COLUMN, write_records_csv
from perllm.policies.simple import RoundRobinConfig, RoundRobinPolicy
from perllm.sim.runner import run_once
from perllm.workload.config import TraceConfig

# tiny: edge-0, edge-1 (RTX 3090, Llama-2-7B q4: KV 35,027 tokens) and cloud (A100, Llama-2-13B
# fp16: KV 58,974 tokens); both models have a 4,096-token context window.
LENGTHS = [(200, 50), (40_000, 100), (40_000, 100), (70_000, 10), (3_000, 2_000), (200, 50)]


class _Spy(RoundRobinPolicy):
    def __init__(self) -> None:
        super().__init__(RoundRobinConfig(), 0)
        self.seen: list[int] = []
        self.forgotten: list[int] = []

    def decide(self, request: RouterRequest, view: object) -> Decision:
        self.seen.append(request.id)
        return super().decide(request, view)  # type: ignore[arg-type]

    def forget(self, request: RouterRequest, decision: Decision) -> None:
        self.forgotten.append(request.id)


def _cluster(tmp_path: Path, enforce: bool) -> scenario.Cluster:
    path = tmp_path / "trace.jsonl"
    rows = [
        {"arrival_s": float(i), "prompt_tokens": p, "output_tokens": o}
        for i, (p, o) in enumerate(LENGTHS)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    config = scenario.load("tiny").config
    workload = config.workload.model_copy(
        update={"trace": TraceConfig(path=str(path), format="jsonl")}
    )
    changes = {"workload": workload, "enforce_context_window": enforce}
    return scenario.build(config.model_copy(update=changes))


def test_kv_cache_limits_refuse_per_request(tmp_path: Path) -> None:
    spy = _Spy()
    result = run_once(_cluster(tmp_path, enforce=False), spy, requests=len(LENGTHS), seed=0)
    rec = result.recorder
    assert len(rec) == len(LENGTHS)  # every request has a record
    assert rec.reasons == {
        1: "does not fit edge-1: 40100 tokens (40000 prompt + 100 output) > 35027, its KV cache",
        3: "fits no server: 70010 tokens (70000 prompt + 10 output) > 58974, the largest KV cache",
    }
    # 3 fits no server: the policy never sees it; of the two alike, 1 went to edge-1 (round
    # robin) and is forgotten there, 2 went to the cloud and is served.
    assert 3 not in spy.seen and spy.forgotten == [1]
    by_id = dict(zip(rec.columns["id"], rec.columns["rejected"], strict=True))
    assert by_id == {0: False, 1: True, 2: False, 3: True, 4: False, 5: False}
    assert rec.columns["server"][rec.columns["id"].index(2)] == "cloud"
    summary = result.summary
    assert summary.rejected == 2 and summary.completed == 4
    assert summary.met <= 4
    assert summary.deadline_satisfaction == pytest.approx(summary.met / 6)


def test_context_windows_refuse_when_the_scenario_enforces_them(tmp_path: Path) -> None:
    result = run_once(_cluster(tmp_path, enforce=True), "round-robin", requests=6, seed=0)
    reasons = result.recorder.reasons
    assert sorted(reasons) == [1, 2, 3, 4]
    assert reasons[4] == (
        "fits no server: 5000 tokens (3000 prompt + 2000 output) > 4096, the largest context window"
    )
    assert result.summary.rejected == 4 and result.summary.completed == 2


def test_records_csv_says_why(tmp_path: Path) -> None:
    result = run_once(_cluster(tmp_path, enforce=True), "round-robin", requests=6, seed=0)
    write_records_csv(result.recorder, tmp_path / "records.csv")
    with (tmp_path / "records.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row[REASON_COLUMN] != "" for row in rows] == [False, True, True, True, True, False]
    assert all(
        row["rejected"] == "True" and row["met"] == "False" for row in rows if row[REASON_COLUMN]
    )
    plain = run_once(scenario.load("tiny"), "round-robin", requests=20, seed=0)
    write_records_csv(plain.recorder, tmp_path / "plain.csv")
    header = (tmp_path / "plain.csv").read_text().splitlines()[0]
    assert REASON_COLUMN not in header


def test_the_trace_replays_refuse_what_no_model_can_hold() -> None:
    cluster = scenario.load("azure-code-paper")
    result = run_once(cluster, "least-loaded", requests=300, seed=0)
    reasons = result.recorder.reasons
    assert reasons and all("> 4096, the largest context window" in r for r in reasons.values())
    assert len(result.recorder) == 300
    assert result.summary.rejected == len(reasons)


@pytest.mark.parametrize("policy", ["least-loaded", "cs-ucb", "feasible-energy", "greedy-latency"])
def test_a_server_whose_context_cannot_hold_the_prompt_is_out_for_the_policy(
    tmp_path: Path, policy: str
) -> None:
    # As in the gateway: with the context window enforced, a policy sees the servers whose
    # window cannot hold a request's prompt as unhealthy for that request, so a prompt too long
    # for the edge's Llama 2 (4,096 tokens) goes to the cloud's Llama 3.1 (131,072) every time.
    path = tmp_path / "trace.jsonl"
    rows = [
        {"arrival_s": 0.5 * i, "prompt_tokens": 5_000 if i % 2 else 300, "output_tokens": 20}
        for i in range(20)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    config = scenario.load("tiny").config
    cloud = config.servers[-1].model_copy(update={"model": "llama-3.1-8b"})
    workload = config.workload.model_copy(
        update={"trace": TraceConfig(path=str(path), format="jsonl")}
    )
    changes = {
        "workload": workload,
        "enforce_context_window": True,
        "servers": [*config.servers[:-1], cloud],
    }
    cluster = scenario.build(config.model_copy(update=changes))
    assert [s.context_tokens for s in cluster.servers] == [4096, 4096, 131072]
    result = run_once(cluster, policy, requests=len(rows), seed=0)
    assert result.recorder.reasons == {}
    servers = result.recorder.columns["server"]
    prompts = result.recorder.columns["prompt_tokens"]
    assert {s for s, p in zip(servers, prompts, strict=True) if p == 5_000} == {"cloud"}
