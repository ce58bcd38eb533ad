"""`perllm reproduce` on a tiny grid: outputs, recomputed ratios, plots, determinism, bad flags."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image

from perllm.cli import main
from perllm.experiments.analysis import SATISFACTION_TARGET, capacity
from perllm.experiments.executors import ExecutorSpec
from perllm.experiments.grid import ROW_FIELDS, GridConfig
from perllm.experiments.reproduce import reproduce

TINY = GridConfig(
    deployments=("7b/13b",),
    bandwidths=("nominal", "constrained"),
    rate_factors=(0.5, 1.0),
    policies=("cs-ucb", "cloud-only", "round-robin"),
    seeds=2,
    requests=120,
    traces=("mooncake-cloud",),
    trace_policies=("cs-ucb", "prefix-affinity"),
    trace_requests=100,
)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny")
    reproduce(TINY, out, ExecutorSpec(workers=2), lambda done: None, "test")
    return out


def _rows(out: Path) -> list[dict[str, str]]:
    with (out / "results.csv").open() as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_csv_has_one_row_per_run_and_the_documented_columns(tiny_run: Path) -> None:
    rows = _rows(tiny_run)
    runs = 1 * 2 * 2 * 3 * 2
    assert len(rows) == runs
    assert tuple(rows[0]) == ROW_FIELDS
    keys = {(r["bandwidth"], r["rate_factor"], r["policy"], r["seed"]) for r in rows}
    assert len(keys) == runs
    assert all(int(r["requests"]) == 120 for r in rows)


@pytest.mark.slow
def test_headline_ratios_are_computed_from_the_rows(tiny_run: Path) -> None:
    document = json.loads((tiny_run / "results.json").read_text())
    assert len(document["runs"]) == 24
    rows = _rows(tiny_run)

    def goodput(policy: str, seed: int) -> float:
        (row,) = [
            r
            for r in rows
            if (r["bandwidth"], r["rate_factor"], r["policy"], r["seed"])
            == ("nominal", "1.0", policy, str(seed))
        ]
        return float(row["goodput_rps"])

    by_hand = np.log([goodput("cs-ucb", s) / goodput("round-robin", s) for s in (0, 1)])
    reported = document["headline"]["7b/13b|nominal"]["versus"]["round-robin"]["goodput_ratio"]
    assert reported["estimator"] == "geometric mean"
    assert reported["mean"] == pytest.approx(math.exp(np.mean(by_hand)), rel=1e-12)
    half = math.log(reported["ci_high"]) - math.log(reported["mean"])
    assert half == pytest.approx(12.706 * np.std(by_hand, ddof=1) / math.sqrt(2), rel=1e-3)
    assert math.log(reported["mean"]) - math.log(reported["ci_low"]) == pytest.approx(half)
    assert set(document["headline"]) == {"7b/13b|nominal", "7b/13b|constrained"}


@pytest.mark.slow
def test_plots_are_valid_pngs_and_the_report_links_them(tiny_run: Path) -> None:
    report = (tiny_run / "report.md").read_text()
    pngs = sorted(tiny_run.glob("*.png"))
    assert {p.name for p in pngs} >= {
        "goodput_energy_nominal.png",
        "satisfaction_vs_rate_nominal.png",
        "energy_split.png",
        "regret.png",
    }
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        height, width, _ = image.imread(png).shape
        assert height > 200 and width > 200
        assert f"]({png.name})" in report
    assert "2.2x, 2.1x and 1.6x" in report
    assert "## Real traces" in report and "### mooncake-cloud (100 requests)" in report
    assert (tiny_run / "regret.csv").read_text().startswith("deployment,policy,time_s")


@pytest.mark.slow
def test_same_seeds_give_identical_csv(tiny_run: Path, tmp_path: Path) -> None:
    reproduce(TINY, tmp_path, ExecutorSpec(workers=1), lambda done: None, "test")
    assert (tmp_path / "results.csv").read_bytes() == (tiny_run / "results.csv").read_bytes()


@pytest.mark.slow
def test_every_interval_of_the_report_stays_in_its_range(
    tiny_run: Path, assert_honest: Callable[[str], list[tuple[str, float, float, float]]]
) -> None:
    found = assert_honest((tiny_run / "report.md").read_text())
    assert {"deadlines met", "goodput ratio", "goodput fraction"} <= {what for what, *_ in found}


def test_capacity_interpolates_between_sweep_points() -> None:
    rate, known = capacity([1.0, 2.0, 3.0], [1.0, 0.95, 0.85])
    assert rate == pytest.approx(2.0 + (0.95 - SATISFACTION_TARGET) / 0.10)
    assert known == "="
    assert capacity([1.0, 2.0], [0.99, 0.97]) == (2.0, ">=")
    assert capacity([1.0, 2.0], [0.5, 0.3]) == (1.0, "<")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["reproduce", "--quick", "--seeds", "0", "--out", "x"],
            "argument --seeds: must be >= 1, got 0",
        ),
        (
            ["reproduce", "--quick", "--jobs", "zero", "--out", "x"],
            "argument --jobs: expected an integer",
        ),
    ],
)
def test_bad_flags_fail_at_once_with_one_line(argv, expected, capsys, tmp_path) -> None:
    argv = [a if a != "x" else str(tmp_path / "out") for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert expected in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_unwritable_out_fails_at_once(capsys, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["reproduce", "--quick", "--out", str(blocker / "sub")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("perllm: --out: cannot write to") and err.count("\n") == 1


@pytest.mark.slow
def test_the_trace_block_writes_one_row_per_replay(tiny_run: Path) -> None:
    with (tiny_run / "traces.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["scenario"], r["policy"]) for r in rows] == [
        ("mooncake-cloud", "cs-ucb"),
        ("mooncake-cloud", "prefix-affinity"),
    ]
    document = json.loads((tiny_run / "results.json").read_text())
    assert [r["requests"] for r in document["traces"]] == [100, 100]
    assert document["setup"]["traces"] == ["mooncake-cloud"]
