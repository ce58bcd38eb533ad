"""The traces shipped in data/traces/: found from the checkout, read whole, hash ids kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from perllm.errors import InputError
from perllm.workload.config import TraceConfig
from perllm.workload.data import TRACES_ENV, resolve_trace_path, traces_dir
from perllm.workload.traces import read_trace

ROOT = Path(__file__).resolve().parents[2]


def test_the_traces_folder_is_the_checkouts_data_folder() -> None:
    assert traces_dir() == ROOT / "data" / "traces"
    for name in ("LICENSE-Azure-CC-BY-4.0.txt", "LICENSE-Mooncake-Apache-2.0.txt", "README.md"):
        assert (traces_dir() / name).is_file()
    notice = (ROOT / "NOTICE").read_text()
    assert "Splitwise" in notice and "ISCA 2024" in notice and "CC BY 4.0" in notice
    assert "Mooncake" in notice and "FAST 2025" in notice and "Apache License 2.0" in notice


@pytest.mark.parametrize(
    ("name", "fmt", "count"),
    [
        ("AzureLLMInferenceTrace_code.csv", "azure-csv", 8819),
        ("AzureLLMInferenceTrace_conv.csv", "azure-csv", 19366),
        ("mooncake_conversation_trace.jsonl", "mooncake-jsonl", 12031),
    ],
)
def test_shipped_traces_read_whole(name: str, fmt: str, count: int) -> None:
    rows = read_trace(TraceConfig(path=f"traces:{name}", format=fmt))  # type: ignore[arg-type]
    assert len(rows) == count
    assert rows[0].arrival_s == 0.0
    arrivals = [row.arrival_s for row in rows]
    assert arrivals == sorted(arrivals)
    assert 3000 < arrivals[-1] < 3700  # each covers about one hour
    if fmt == "mooncake-jsonl":
        # Block ids of 512-token blocks: one per started block, the first one shared widely.
        assert all(len(r.prefix_blocks) == -(-r.prompt_tokens // 512) for r in rows)
        assert rows[0].prefix_blocks[:3] == (0, 1, 2)
        assert sum(1 for r in rows if r.prefix_blocks and r.prefix_blocks[0] == 0) > 100
    else:
        assert all(r.prefix_blocks == () for r in rows)


def test_mooncake_hash_ids_reach_the_routed_requests() -> None:
    from perllm.cluster import scenario
    from perllm.workload.generator import generate_requests

    config = scenario.load("tiny").config
    trace = TraceConfig(path="traces:mooncake_conversation_trace.jsonl", format="mooncake-jsonl")
    workload = config.workload.model_copy(update={"trace": trace})
    requests = generate_requests(workload, 5, seed=0)
    assert requests[1].routed.prefix_blocks[:2] == (0, 14)
    assert requests[1].routed.prompt_tokens == 7322


def test_the_env_variable_moves_the_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "t.csv").write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n0,5,6\n")
    monkeypatch.setenv(TRACES_ENV, str(tmp_path))
    assert resolve_trace_path("traces:t.csv") == str(tmp_path / "t.csv")
    rows = read_trace(TraceConfig(path="traces:t.csv", format="azure-csv"))
    assert (rows[0].prompt_tokens, rows[0].output_tokens) == (5, 6)
    monkeypatch.setenv(TRACES_ENV, str(tmp_path / "none"))
    with pytest.raises(InputError, match=f"^{TRACES_ENV}: not a folder"):
        traces_dir()


@pytest.mark.parametrize("path", ["traces:", "traces:../NOTICE", "traces:a/b.csv"])
def test_a_shipped_trace_is_a_plain_file_name(path: str) -> None:
    with pytest.raises(InputError, match="a file name without folders"):
        resolve_trace_path(path)


def test_other_paths_are_unchanged() -> None:
    assert resolve_trace_path("some/trace.csv") == "some/trace.csv"
