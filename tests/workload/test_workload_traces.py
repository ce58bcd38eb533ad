"""Trace readers: Azure CSV and JSONL, and one-line errors for every bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from perllm.errors import InputError
from perllm.workload.config import TraceConfig
from perllm.workload.traces import TraceRow, read_trace

AZURE_ROWS = [
    "TIMESTAMP,ContextTokens,GeneratedTokens",
    "2023-11-16 18:15:46.6805900,374,44",
    "2023-11-16 18:15:50.9951690,396,109",
    "2023-11-16 18:15:51.2000000,879,0",
    "",
    "2023-11-16 18:16:06.0000001,91,12",
]


def _write(tmp_path: Path, name: str, lines: list[str]) -> str:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def _csv_error(tmp_path: Path, lines: list[str]) -> str:
    path = _write(tmp_path, "trace.csv", lines)
    with pytest.raises(InputError) as info:
        read_trace(TraceConfig(path=path, format="azure-csv"))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(path + ":")
    return message


def _jsonl_error(tmp_path: Path, lines: list[str]) -> str:
    path = _write(tmp_path, "trace.jsonl", lines)
    with pytest.raises(InputError) as info:
        read_trace(TraceConfig(path=path, format="jsonl"))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(path + ":")
    return message


def test_azure_csv_round_trip(tmp_path: Path) -> None:
    path = _write(tmp_path, "trace.csv", AZURE_ROWS)
    rows = read_trace(TraceConfig(path=path, format="azure-csv"))
    assert [r.prompt_tokens for r in rows] == [374, 396, 879, 91]
    assert [r.output_tokens for r in rows] == [44, 109, 0, 12]
    arrivals = [r.arrival_s for r in rows]
    assert arrivals[0] == 0.0
    assert arrivals[1] == pytest.approx(4.314579, abs=1e-6)
    assert arrivals[2] == pytest.approx(4.51941, abs=1e-6)
    assert arrivals[3] == pytest.approx(19.3194101, abs=1e-6)
    assert [r.line for r in rows] == [2, 3, 4, 6]
    assert all(r.service_class is None and r.deadline_s is None for r in rows)


def test_azure_csv_plain_seconds_and_bom(tmp_path: Path) -> None:
    path = tmp_path / "trace.csv"
    path.write_text("\ufeffTIMESTAMP,ContextTokens,GeneratedTokens\n10.5,1,2\n12,3,4\n")
    rows = read_trace(TraceConfig(path=str(path), format="azure-csv"))
    assert [r.arrival_s for r in rows] == [0.0, 1.5]


def test_wrong_header_names_expected(tmp_path: Path) -> None:
    message = _csv_error(tmp_path, ["time,prompt,output", "1,2,3"])
    assert ":1: expected the header 'TIMESTAMP,ContextTokens,GeneratedTokens'" in message


def test_non_integer_token_field(tmp_path: Path) -> None:
    message = _csv_error(tmp_path, [*AZURE_ROWS[:3], "2023-11-16 18:15:52.0,abc,3"])
    assert message.endswith(":4: field 'ContextTokens': must be a non-negative integer, got 'abc'")


def test_negative_token_field(tmp_path: Path) -> None:
    message = _csv_error(tmp_path, [*AZURE_ROWS[:2], "2023-11-16 18:15:52.0,5,-3"])
    assert ":3: field 'GeneratedTokens': must be a non-negative integer, got '-3'" in message


def test_unsorted_timestamps(tmp_path: Path) -> None:
    message = _csv_error(tmp_path, [*AZURE_ROWS[:3], "2023-11-16 18:15:40.0,5,3"])
    assert ":4: field 'TIMESTAMP': timestamps must be non-decreasing" in message


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ("yesterday,5,3", "field 'TIMESTAMP': must be a date like"),
        ("2023-13-16 18:15:52.0,5,3", "not a valid date and time"),
        ("20.0,5,3", "must be a date and time like the first row"),
        ("2023-11-16 18:15:52.0,5", "expected 3 fields, got 2"),
    ],
)
def test_bad_csv_rows(tmp_path: Path, row: str, expected: str) -> None:
    assert expected in _csv_error(tmp_path, [*AZURE_ROWS[:2], row])


def test_empty_csv(tmp_path: Path) -> None:
    assert "empty file" in _csv_error(tmp_path, [])
    assert "empty file" in _csv_error(tmp_path, ["", "  "])
    assert "no requests" in _csv_error(tmp_path, AZURE_ROWS[:1])


def test_missing_file(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.csv")
    with pytest.raises(InputError, match=r"nope\.csv: file not found$"):
        read_trace(TraceConfig(path=path, format="azure-csv"))


def test_jsonl_with_optional_fields(tmp_path: Path) -> None:
    lines = [
        json.dumps({"arrival_s": 0.5, "prompt_tokens": 10, "output_tokens": 5}),
        "",
        json.dumps(
            {
                "arrival_s": 2,
                "prompt_tokens": 0,
                "output_tokens": 1,
                "service_class": "chat",
                "deadline_s": 7.5,
                "request_bytes": 1000,
                "response_bytes": 20,
                "model": "llama-2-7b",
            }
        ),
    ]
    rows = read_trace(TraceConfig(path=_write(tmp_path, "t.jsonl", lines), format="jsonl"))
    assert rows[0] == TraceRow(arrival_s=0.5, prompt_tokens=10, output_tokens=5, line=1)
    assert rows[1] == TraceRow(2.0, 0, 1, "chat", 7.5, 1000, 20, "llama-2-7b", line=3)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('{"arrival_s": 1, "prompt_tokens": 3', ":2: Invalid JSON"),
        ('{"arrival_s": 1, "output_tokens": 3}', ":2: field 'prompt_tokens': Field required"),
        ('{"arrival_s": 1, "prompt_tokens": "3", "output_tokens": 3}', "field 'prompt_tokens'"),
        ('{"arrival_s": 1, "prompt_tokens": 3, "output_tokens": 0}', "field 'output_tokens'"),
        ('{"arrival_s": -1, "prompt_tokens": 3, "output_tokens": 3}', "field 'arrival_s'"),
        ('{"arrival_s": 1, "prompt_tokens": 3, "output_tokens": 3, "x": 1}', "field 'x'"),
        ('{"arrival_s": 1, "prompt_tokens": 3, "output_tokens": 3, "deadline_s": 0}', "deadline_s"),
        ("[1, 2]", ":2: Input should be an object"),
        ('{"arrival_s": 0.1, "prompt_tokens": 3, "output_tokens": 3}', "must be non-decreasing"),
    ],
)
def test_bad_jsonl_lines(tmp_path: Path, line: str, expected: str) -> None:
    first = json.dumps({"arrival_s": 0.5, "prompt_tokens": 1, "output_tokens": 1})
    assert expected in _jsonl_error(tmp_path, [first, line])
