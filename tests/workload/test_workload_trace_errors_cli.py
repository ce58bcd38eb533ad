"""A bad trace stops ``perllm simulate`` with one line naming the file, the line and the field,
and exit 2: a malformed line, unsorted timestamps, a negative length, a wrong header."""

from __future__ import annotations

from pathlib import Path

import pytest

from perllm.cli import main

AZURE_HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens"
AZURE_FIRST = "2023-11-16 18:15:46.6805900,374,44"


def _moon(ms: int, prompt: object = 300, output: object = 20) -> str:
    return f'{{"timestamp": {ms}, "input_length": {prompt}, "output_length": {output}}}'


CASES = {
    "azure-malformed": (
        "azure-csv",
        [AZURE_HEADER, AZURE_FIRST, "2023-11-16 18:15:47.0,374"],
        ":3: field 'GeneratedTokens': missing (expected 3 fields, got 2)",
    ),
    "azure-unsorted": (
        "azure-csv",
        [AZURE_HEADER, AZURE_FIRST, "2023-11-16 18:15:40.0,374,44"],
        ":3: field 'TIMESTAMP': timestamps must be non-decreasing",
    ),
    "azure-negative": (
        "azure-csv",
        [AZURE_HEADER, AZURE_FIRST, "2023-11-16 18:15:47.0,-374,44"],
        ":3: field 'ContextTokens': must be a non-negative integer, got '-374'",
    ),
    "azure-header": (
        "azure-csv",
        ["TIMESTAMP,ContextTokens,OutputTokens", AZURE_FIRST],
        ":1: expected the header 'TIMESTAMP,ContextTokens,GeneratedTokens'",
    ),
    "mooncake-malformed": (
        "mooncake-jsonl",
        [_moon(0), '{"timestamp": 5, "input_length": 3'],
        ":2: Invalid JSON",
    ),
    "mooncake-unsorted": (
        "mooncake-jsonl",
        [_moon(10), _moon(5)],
        ":2: field 'timestamp': must be non-decreasing",
    ),
    "mooncake-negative": (
        "mooncake-jsonl",
        [_moon(0), _moon(5, output=-2)],
        ":2: field 'output_length'",
    ),
    "mooncake-wrong-key": (
        "mooncake-jsonl",
        [_moon(0), '{"timestamp": 5, "prompt_length": 3, "output_length": 1}'],
        ":2: field 'input_length'",
    ),
}

SCENARIO = """\
name: bad-trace
links: [{{name: wan, bandwidth-mbps: 100, tx-power-w: 1}}]
servers: [{{name: cloud, tier: cloud, hardware: a100-80gb, model: llama-2-13b, link: wan}}]
workload:
  arrivals: {{rate-rps: 1}}
  classes: personalized
  trace: {{path: {path}, format: {fmt}}}
"""


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("requests", ["10", "5000"])
def test_a_bad_trace_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str, requests: str
) -> None:
    fmt, lines, expected = CASES[case]
    trace = tmp_path / ("trace.csv" if fmt == "azure-csv" else "trace.jsonl")
    trace.write_text("\n".join(lines) + "\n")
    path = tmp_path / "scenario.yaml"
    path.write_text(SCENARIO.format(path=trace, fmt=fmt))
    argv = ["simulate", "--scenario", str(path), "--policy", "round-robin"]
    code = main([*argv, "--requests", requests])
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert "Traceback" not in out + err
    assert err.count("\n") == 1, err
    assert err.startswith(f"perllm: {trace}{expected}"), err
