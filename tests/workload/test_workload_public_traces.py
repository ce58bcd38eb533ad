"""BurstGPT and Mooncake trace readers: the shipped samples, replay, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from perllm.cluster import scenario
from perllm.errors import InputError
from perllm.sim.runner import run_once
from perllm.workload.config import TraceConfig
from perllm.workload.generator import generate_requests
from perllm.workload.traces import read_trace

DATA = Path(__file__).parent / "data"
BURSTGPT = str(DATA / "burstgpt-sample.csv")
MOONCAKE = str(DATA / "mooncake-sample.jsonl")
HEADER = "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type"


def _error(tmp_path: Path, name: str, fmt: str, lines: list[str]) -> str:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(InputError) as info:
        read_trace(TraceConfig(path=str(path), format=fmt))  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}:")
    return message


def test_burstgpt_sample_reads() -> None:
    rows = read_trace(TraceConfig(path=BURSTGPT, format="burstgpt-csv"))
    assert len(rows) == 40
    assert rows[0].arrival_s == 0.0
    arrivals = [r.arrival_s for r in rows]
    assert arrivals == sorted(arrivals)
    assert rows[0].prompt_tokens == 74 and rows[0].output_tokens == 353
    assert rows[0].line == 2
    assert any(r.output_tokens == 0 for r in rows)  # failed requests are kept
    assert all(r.service_class is None and r.model is None for r in rows)


def test_burstgpt_columns_in_any_order(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text(
        "Log Type,Timestamp,Request tokens,Response tokens,Total tokens,Model\n"
        "API log,5,10,20,30,GPT-4\nConversation log,7.5,1,2,3,ChatGPT\n"
    )
    rows = read_trace(TraceConfig(path=str(path), format="burstgpt-csv"))
    assert [(r.arrival_s, r.prompt_tokens, r.output_tokens) for r in rows] == [
        (0.0, 10, 20),
        (2.5, 1, 2),
    ]


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ("x,ChatGPT,1,2,3,API log", ":3: field 'Timestamp': must be a non-negative number"),
        ("1,ChatGPT,1,2,3,API log", ":3: field 'Timestamp': must be non-decreasing"),
        ("9,ChatGPT,-1,2,3,API log", ":3: field 'Request tokens': must be a non-negative integer"),
        ("9,ChatGPT,1,2.5,3,API log", ":3: field 'Response tokens'"),
        ("9,ChatGPT,1,2,,API log", ":3: field 'Total tokens'"),
        ("9, ,1,2,3,API log", ":3: field 'Model': must not be empty"),
        ("9,GPT-4,1,2,3,", ":3: field 'Log Type': must not be empty"),
        ("9,GPT-4,1,2,3", ":3: expected 6 fields, got 5"),
    ],
)
def test_bad_burstgpt_rows(tmp_path: Path, row: str, expected: str) -> None:
    lines = [HEADER, "5,ChatGPT,472,18,490,Conversation log", row]
    assert expected in _error(tmp_path, "t.csv", "burstgpt-csv", lines)


def test_bad_burstgpt_header_and_empty(tmp_path: Path) -> None:
    message = _error(tmp_path, "t.csv", "burstgpt-csv", ["TIMESTAMP,ContextTokens,GeneratedTokens"])
    assert f":1: expected the header '{HEADER}'" in message
    assert "empty file" in _error(tmp_path, "t.csv", "burstgpt-csv", [""])
    assert "no requests" in _error(tmp_path, "t.csv", "burstgpt-csv", [HEADER])


def test_mooncake_sample_reads() -> None:
    rows = read_trace(TraceConfig(path=MOONCAKE, format="mooncake-jsonl"))
    assert len(rows) == 40
    assert rows[0].arrival_s == 0.0
    assert rows[1].arrival_s == pytest.approx((574 - 467) / 1000)
    assert rows[1].prompt_tokens == 16276 and rows[1].output_tokens == 144
    assert [r.line for r in rows] == list(range(1, 41))


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('{"timestamp": 5, "input_length": 3', ":2: Invalid JSON"),
        ('{"timestamp": 5, "output_length": 3}', ":2: field 'input_length': Field required"),
        ('{"timestamp": 5, "input_length": "3", "output_length": 3}', ":2: field 'input_length'"),
        ('{"timestamp": 5, "input_length": 3, "output_length": -1}', ":2: field 'output_length'"),
        ('{"timestamp": 5, "input_length": 3, "output_length": 1, "hash_ids": ["a"]}', "hash_ids"),
        ('{"timestamp": 5, "input_length": 3, "output_length": 1, "x": 1}', ":2: field 'x'"),
        ('{"timestamp": 1, "input_length": 3, "output_length": 1}', "field 'timestamp': must be"),
    ],
)
def test_bad_mooncake_lines(tmp_path: Path, line: str, expected: str) -> None:
    first = json.dumps({"timestamp": 2, "input_length": 1, "output_length": 1, "hash_ids": [0]})
    assert expected in _error(tmp_path, "t.jsonl", "mooncake-jsonl", [first, line])


@pytest.mark.parametrize(
    ("path", "fmt"), [(BURSTGPT, "burstgpt-csv"), (MOONCAKE, "mooncake-jsonl")]
)
def test_replay_through_a_scenario(path: str, fmt: str) -> None:
    config = scenario.load("tiny").config
    workload = config.workload.model_copy(
        update={"trace": TraceConfig(path=path, format=fmt, rate_rps=2.0)}  # type: ignore[arg-type]
    )
    cluster = scenario.build(config.model_copy(update={"workload": workload}))
    requests = generate_requests(cluster.workload, 100, seed=1)
    assert len(requests) == 40
    span_s = requests[-1].routed.arrival_s - requests[0].routed.arrival_s
    assert span_s == pytest.approx(39 / 2.0)
    result = run_once(cluster, "least-loaded", requests=40, seed=1)
    summary, reasons = result.summary, result.recorder.reasons
    # Two Mooncake prompts outgrow an edge's KV cache (35,027 tokens): refused if sent there.
    assert summary.completed == 40 - len(reasons) >= 38
    assert summary.rejected == len(reasons)
    assert all(reason.startswith("does not fit edge-") for reason in reasons.values())
