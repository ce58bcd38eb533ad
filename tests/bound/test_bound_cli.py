"""``perllm bound``: JSON and table output, same bytes for the same seed, one-line errors."""

from __future__ import annotations

import json

import pytest

from perllm.bound import compute_bound
from perllm.cli import main
from perllm.cluster import scenario
from perllm.sim.runner import run_once

BOUND = ["bound", "--scenario", "perllm-paper", "--requests", "150", "--seed", "1"]


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_json_has_the_bounds_and_the_frontier(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, *BOUND, "--json")
    assert code == 0, err
    data = json.loads(out)
    assert isinstance(data["met_upper_bound"], int) and 0 < data["met_upper_bound"] <= 150
    assert data["goodput_upper_bound_rps"] > 0 and data["energy_lower_bound_j"] > 0
    fractions = [p["met_fraction"] for p in data["frontier"]]
    assert fractions == sorted(fractions) and fractions[-1] <= 1.0
    energies = [p["energy_lower_bound_j"] for p in data["frontier"]]
    assert energies == sorted(energies) and energies[-1] == data["energy_lower_bound_j"]
    assert data["scenario"] == "perllm-paper" and data["seed"] == 1 and data["rate_rps"] == 6.0


@pytest.mark.slow
def test_same_seed_same_bytes_and_the_same_trace_as_simulate(
    capsys: pytest.CaptureFixture[str],
) -> None:
    first = _run(capsys, *BOUND, "--json", "--rate", "9")
    second = _run(capsys, *BOUND, "--json", "--rate", "9")
    assert first[0] == second[0] == 0 and first[1] == second[1]
    bound = json.loads(first[1])
    cluster = scenario.load("perllm-paper")
    summary = run_once(cluster, "cs-ucb", requests=150, rate_rps=9.0, seed=1).summary
    assert summary.met <= bound["met_upper_bound"]
    assert summary.window_s == pytest.approx(bound["window_s"])


def test_table_output(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, *BOUND)
    assert code == 0, err
    assert "deadlines met" in out and "goodput" in out and "energy" in out


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--scenario", "nope"], "--scenario"),
        (["--requests", "0"], "--requests"),
        (["--requests", "-5"], "--requests"),
        (["--rate", "0"], "--rate"),
        (["--rate=-2"], "--rate"),
        (["--rate", "nan"], "--rate"),
        (["--rate", "inf"], "--rate"),
        (["--seed", "x"], "--seed"),
    ],
)
def test_bad_flags_exit_2_with_one_line(
    extra: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(capsys, *BOUND, *extra)
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("perllm: ") and needle in lines[0], err
    assert "Traceback" not in err


def test_an_empty_trace_has_empty_bounds() -> None:
    result = compute_bound(scenario.load("tiny"), [], 0)
    assert result.met_upper_bound == 0 and result.goodput_upper_bound_rps == 0.0
    assert result.energy_lower_bound_j == 0.0 and len(result.frontier) == 1
