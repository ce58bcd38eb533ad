"""Request generation: shares, deadlines, bytes, determinism and trace replay."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Literal

import numpy as np
import pytest

from perllm.errors import InputError
from perllm.workload.config import (
    BYTES_PER_TOKEN,
    RESPONSE_OVERHEAD_BYTES,
    ArrivalConfig,
    TraceConfig,
    WorkloadConfig,
)
from perllm.workload.generator import class_names, generate_requests
from perllm.workload.lengths import length_dist
from perllm.workload.presets import builtin_classes

TraceFormat = Literal["azure-csv", "jsonl"]


def _builtin(rate_rps: float = 10.0) -> WorkloadConfig:
    return WorkloadConfig(arrivals=ArrivalConfig(rate_rps=rate_rps), classes=builtin_classes())


def test_class_shares_and_ids() -> None:
    cfg = _builtin()
    requests = generate_requests(cfg, 100_000, seed=5)
    assert [r.routed.id for r in requests[:3]] == [0, 1, 2]
    assert requests[-1].routed.id == 99_999
    counts = Counter(r.routed.service_class for r in requests)
    for cls in cfg.classes:
        assert counts[cls.name] / len(requests) == pytest.approx(cls.share, abs=0.02)
    assert class_names(cfg) == [c.name for c in cfg.classes]


def test_deadlines_lengths_and_bytes_follow_the_class() -> None:
    cfg = _builtin()
    by_name = {c.name: c for c in cfg.classes}
    for request in generate_requests(cfg, 20_000, seed=6):
        r = request.routed
        cls = by_name[r.service_class]
        per_token_s = cls.deadline.per_output_token_s * length_dist(cls.output).nominal_mean
        assert cls.deadline.low_s + per_token_s <= r.deadline_s <= cls.deadline.high_s + per_token_s
        assert cls.prompt.min_tokens <= r.prompt_tokens <= cls.prompt.max_tokens
        output = request.output_tokens
        assert 1 <= output <= cls.output.max_tokens
        assert request.response_bytes == output * BYTES_PER_TOKEN + RESPONSE_OVERHEAD_BYTES
        attachment = r.request_bytes - r.prompt_tokens * BYTES_PER_TOKEN
        assert (attachment > 0) == (cls.attachment_bytes is not None)
        assert r.model is None
        assert r.max_output_tokens is None and r.prefix_blocks == ()


def test_per_output_token_deadline_term() -> None:
    data = _builtin().model_dump(by_alias=True)
    data["classes"] = data["classes"][:1]
    data["classes"][0]["deadline"] = {"low-s": 2, "high-s": 2, "per-output-token-s": 0.5}
    cfg = WorkloadConfig.model_validate(data)
    nominal = length_dist(cfg.classes[0].output).nominal_mean
    requests = generate_requests(cfg, 1000, seed=1)
    # The term comes from the class's nominal output length, never the request's true one:
    # a deadline is set before anybody knows how long the answer will be.
    assert len({r.output_tokens for r in requests}) > 10
    for r in requests:
        assert r.routed.deadline_s == pytest.approx(2 + 0.5 * nominal)


def test_same_seed_same_requests_different_seed_different() -> None:
    cfg = _builtin()
    first = generate_requests(cfg, 2000, seed=42)
    assert first == generate_requests(cfg, 2000, seed=42)
    assert first != generate_requests(cfg, 2000, seed=43)


def test_arrivals_and_rate_override() -> None:
    requests = generate_requests(_builtin(rate_rps=1.0), 50_000, seed=3, rate_rps=25.0)
    arrivals = np.array([r.routed.arrival_s for r in requests])
    assert arrivals[0] == 0.0
    assert np.all(np.diff(arrivals) >= 0)
    assert (len(arrivals) - 1) / arrivals[-1] == pytest.approx(25.0, rel=0.03)


def test_zero_and_negative_counts() -> None:
    assert generate_requests(_builtin(), 0, seed=1) == []
    with pytest.raises(InputError):
        generate_requests(_builtin(), -1, seed=1)


def _trace_cfg(path: str, fmt: TraceFormat, rate_rps: float | None = None) -> WorkloadConfig:
    return WorkloadConfig(
        arrivals=ArrivalConfig(rate_rps=1.0),
        classes=builtin_classes(),
        trace=TraceConfig(path=path, format=fmt, rate_rps=rate_rps),
    )


def _azure_csv(tmp_path: Path, n: int) -> str:
    path = tmp_path / "azure.csv"
    lines = ["TIMESTAMP,ContextTokens,GeneratedTokens"]
    lines += [
        f"2023-11-16 18:{15 + i // 60:02d}:{i % 60:02d}.1234567,{100 + i},{i}" for i in range(n)
    ]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_trace_replay_fills_in_from_classes(tmp_path: Path) -> None:
    cfg = _trace_cfg(_azure_csv(tmp_path, 30), "azure-csv")
    requests = generate_requests(cfg, 10, seed=1)
    assert len(requests) == 10
    assert [r.routed.prompt_tokens for r in requests] == list(range(100, 110))
    assert requests[0].output_tokens == 1  # GeneratedTokens 0 counts as 1
    assert [r.routed.arrival_s for r in requests] == pytest.approx([float(i) for i in range(10)])
    assert all(r.routed.service_class in class_names(cfg) for r in requests)
    assert requests == generate_requests(cfg, 10, seed=1)
    assert len(generate_requests(cfg, 1000, seed=1)) == 30


def test_trace_rescaled_to_rate(tmp_path: Path) -> None:
    path = _azure_csv(tmp_path, 30)
    for requests in (
        generate_requests(_trace_cfg(path, "azure-csv", rate_rps=4.0), 30, seed=1),
        generate_requests(_trace_cfg(path, "azure-csv"), 30, seed=1, rate_rps=4.0),
    ):
        assert requests[-1].routed.arrival_s == pytest.approx(29 / 4.0)
        assert requests[1].routed.arrival_s == pytest.approx(0.25)


def test_jsonl_trace_keeps_given_fields(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    rows = [
        {"arrival_s": 1.0, "prompt_tokens": 10, "output_tokens": 5, "service_class": "chat"},
        {
            "arrival_s": 2.0,
            "prompt_tokens": 20,
            "output_tokens": 6,
            "deadline_s": 9.0,
            "request_bytes": 123,
            "response_bytes": 45,
            "model": "m",
        },
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    first, second = generate_requests(_trace_cfg(str(path), "jsonl"), 5, seed=2)
    assert first.routed.service_class == "chat"
    assert 15.0 <= first.routed.deadline_s <= 30.0
    assert first.routed.request_bytes == 10 * BYTES_PER_TOKEN
    given = (second.routed.deadline_s, second.routed.request_bytes, second.response_bytes)
    assert given == (9.0, 123, 45)
    assert second.routed.model == "m"
    assert second.routed.arrival_s == 2.0


def test_trace_with_unknown_class(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(
        json.dumps({"arrival_s": 0, "prompt_tokens": 1, "output_tokens": 1, "service_class": "vip"})
    )
    with pytest.raises(InputError, match=r"t.jsonl:1: field 'service_class': unknown service"):
        generate_requests(_trace_cfg(str(path), "jsonl"), 5, seed=2)


def test_trace_rescale_needs_distinct_times(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n5,1,1\n5,2,2\n")
    with pytest.raises(InputError, match="all arrivals are equal"):
        generate_requests(_trace_cfg(str(path), "azure-csv", rate_rps=2.0), 5, seed=2)
