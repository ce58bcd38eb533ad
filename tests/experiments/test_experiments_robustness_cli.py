"""benchmarks/robustness.py: --family and --sweep, their bad input (one line, exit 2) and a
small swept run on one family."""

from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from perllm.policies.registry import lookup

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "robustness.py"
SMALL = [
    "--clusters", "1", "--seeds", "1", "--loads", "1.0", "--requests", "60",
    "--max-requests", "60", "--steady-multiple", "0", "--no-bound", "--workers", "1",
    "--set", "servers=[2,4]", "--set", "capacity-requests=60", "--traces", "none",
]  # fmt: skip
# The dial the sweep is for, or a parameter CS-UCB has had all along; 0.9 and 0.99 suit both.
_FIELDS = {field.alias for field in lookup("cs-ucb").config.model_fields.values()}
KEY = "target-satisfaction" if "target-satisfaction" in _FIELDS else "confidence"


@pytest.fixture(scope="module")
def benchmark() -> ModuleType:
    spec = importlib.util.spec_from_file_location("robustness_cli_benchmark", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _main(benchmark: ModuleType, monkeypatch: pytest.MonkeyPatch, *argv: str) -> None:
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), *argv])
    benchmark.main()


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--family", "cpu-only"], "--family: unknown family 'cpu-only'; known: mixed, gpu-edge"),
        (["--sweep", "confidence=1,2,3,4,5,6"], "--sweep: at most 5 values, got 6"),
        (["--sweep", "no-such-key=1,2"], "--sweep: cs-ucb has no parameter 'no-such-key'"),
        (["--sweep", "confidence"], "--sweep: expected KEY=V1,V2,..."),
        (["--sweep", "confidence=1,,2"], "--sweep: expected KEY=V1,V2,..."),
        (["--sweep", "confidence=1,1"], "--sweep: a value repeats"),
        (["--sweep", "confidence=abc"], "cs-ucb[confidence=abc]: policy cs-ucb"),
        (["--family", "gpu-only", "--set", "cloud-servers=[5,1]"], "cloud-servers"),
        (["--policies", "nobody"], "--policies: unknown nobody"),
    ],
)
def test_bad_input_fails_with_one_line_and_exit_2(
    benchmark: ModuleType,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    flags: list[str],
    expected: str,
) -> None:
    with pytest.raises(SystemExit) as stopped:
        _main(benchmark, monkeypatch, "--out", str(tmp_path), *flags)
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("robustness: ") and expected in err[0]


def test_a_sweep_on_one_family_writes_its_table_plot_and_csvs(
    benchmark: ModuleType,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    flags = ["--family", "gpu-edge", "--policies", "least-loaded,cloud-only"]
    sweep = ["--sweep", f"{KEY}=0.9,0.99"]
    _main(benchmark, monkeypatch, *SMALL, *flags, *sweep, "--out", str(tmp_path))
    out = capsys.readouterr().out
    assert "family gpu-edge" in out and f"CS-UCB swept over {KEY}" in out
    assert "cloud-only check" in out and "(cell, baseline) pairs" in out
    for name in ("robustness.png", "sweep-gpu-edge.png", "scores.csv", "sweep.csv"):
        assert (tmp_path / name).stat().st_size > 0
    with (tmp_path / "robustness.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert {row["family"] for row in rows} == {"gpu-edge"}
    assert {row["cluster"] for row in rows} == {"100000"}  # gpu-edge's first cluster seed
    assert {row["policy"] for row in rows} == {
        f"cs-ucb[{KEY}=0.9]",
        f"cs-ucb[{KEY}=0.99]",
        "least-loaded",
        "cloud-only",
    }
    with (tmp_path / "sweep.csv").open() as handle:
        swept = list(csv.DictReader(handle))
    assert [row["value"] for row in swept] == ["0.9", "0.99", "", ""]
