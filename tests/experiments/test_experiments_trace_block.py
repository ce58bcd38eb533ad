"""The real-trace block of ``perllm reproduce``: replays, their rows, table and figure."""

from __future__ import annotations

import math
from pathlib import Path

from perllm.experiments import trace_block
from perllm.experiments.grid import GridConfig
from perllm.experiments.trace_block import TraceRow, TraceTask, run_trace


def test_a_replay_of_mooncake_counts_its_prefix_hits_and_round_trips() -> None:
    row = run_trace(TraceTask("mooncake-cloud", "prefix-affinity", 300))
    assert row.requests == 300
    assert 0 < row.met <= 300
    assert 0.0 < row.prefill_saved < 1.0
    assert row.j_per_met == row.weighted_energy_j / row.met
    assert TraceRow.from_json(row.to_json()) == row


def test_an_azure_replay_has_no_prefix_to_reuse() -> None:
    row = run_trace(TraceTask("azure-code-gpu-edge", "least-loaded", 200))
    assert row.prefill_saved == 0.0
    assert row.refused == 0


def _row(scenario: str, policy: str, met: int) -> TraceRow:
    energy = 1000.0 * met
    per_met = energy / met if met else math.inf
    return TraceRow(scenario, policy, 0, 100, met, met / 100, met / 50, energy, per_met, 2, 0.1)


def test_the_report_has_a_table_per_trace_and_the_figure(tmp_path: Path) -> None:
    rows = [_row("a", "cs-ucb", 90), _row("a", "least-loaded", 0), _row("b", "cs-ucb", 50)]
    lines = trace_block.report_lines(rows, "traces.png")
    text = "\n".join(lines)
    assert "### a (100 requests)" in text and "### b (100 requests)" in text
    assert "| cs-ucb | 90.0 | 1.80 | 1000 | 2 | 10.0% |" in text
    assert "| least-loaded | 0.0 | 0.00 | inf | 2 | 10.0% |" in text
    assert "![traces.png](traces.png)" in text
    trace_block.plot(rows, tmp_path / "traces.png")
    assert (tmp_path / "traces.png").stat().st_size > 0
    trace_block.write_rows(rows, tmp_path / "traces.csv")
    header = (tmp_path / "traces.csv").read_text().splitlines()[0]
    assert header == ",".join(TraceRow.columns())


def test_the_presets_replay_every_shipped_trace_whole_or_quick() -> None:
    quick, full = GridConfig.preset(True), GridConfig.preset(False)
    assert quick.traces == full.traces == trace_block.SCENARIOS
    assert quick.trace_requests == trace_block.QUICK_REQUESTS
    assert full.trace_requests is None
    tasks = quick.trace_tasks()
    assert len(tasks) == len(trace_block.SCENARIOS) * len(trace_block.POLICIES)
    assert len({t.key for t in tasks}) == len(tasks)
