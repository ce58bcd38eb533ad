"""benchmarks/robustness.py interrupted after a few runs, then resumed: the same rows (trace
cells' too)."""

from __future__ import annotations

import csv
import importlib.util
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "robustness.py"
FLAGS = [
    "--clusters", "2", "--seeds", "1", "--loads", "1.0", "--requests", "60",
    "--max-requests", "60", "--steady-multiple", "0", "--policies", "least-loaded,round-robin",
    "--no-bound", "--workers", "2", "--set", "servers=[2,3]", "--set", "capacity-requests=60",
    "--traces", "azure-code",
]  # fmt: skip


@pytest.fixture(scope="module")
def benchmark() -> ModuleType:
    spec = importlib.util.spec_from_file_location("robustness_benchmark", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(benchmark: ModuleType, monkeypatch: pytest.MonkeyPatch, out: Path, *extra: str) -> None:
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), *FLAGS, "--out", str(out), *extra])
    benchmark.main()


def _rows(out: Path) -> list[dict[str, str]]:
    with (out / "robustness.csv").open() as handle:
        return [{k: v for k, v in row.items() if k != "wall_s"} for row in csv.DictReader(handle)]


@pytest.mark.slow
def test_an_interrupted_benchmark_resumes_to_the_same_rows(
    benchmark: ModuleType,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _run(benchmark, monkeypatch, tmp_path / "whole")

    @contextmanager
    def stop_after_three(total: int, label: str) -> Iterator[Callable[[int], None]]:
        def advance(done: int) -> None:
            if done >= 3:
                raise KeyboardInterrupt

        yield advance

    with monkeypatch.context() as patch:
        patch.setattr(benchmark, "progress_bar", stop_after_three)
        with pytest.raises(SystemExit) as stopped:
            _run(benchmark, patch, tmp_path / "resumed")
    assert stopped.value.code == 130
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith("robustness: interrupted; 3 of 12 runs saved in ")
    assert err.endswith(" --resume")
    _run(benchmark, monkeypatch, tmp_path / "resumed", "--resume")
    assert _rows(tmp_path / "resumed") == _rows(tmp_path / "whole")
    clusters = [(tmp_path / run / "clusters.csv").read_bytes() for run in ("resumed", "whole")]
    assert clusters[0] == clusters[1]
    rows = _rows(tmp_path / "whole")
    assert [row["family"] for row in rows] == ["mixed"] * 4 + ["mixed/azure-code"] * 4
