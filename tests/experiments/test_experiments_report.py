"""``report.md`` from synthetic rows with extreme spread across seeds: every interval stays in
its quantity's range, and a capacity below the lowest load tested is written as such."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from scipy import stats

from perllm.bound.result import FrontierPoint
from perllm.experiments import analysis, yardstick
from perllm.experiments.grid import GridConfig
from perllm.experiments.report import Setup, write_report
from perllm.experiments.rows import BoundRow, GridRow

RATES = {0.5: 3.0, 1.0: 6.0, 1.25: 7.5}
REQUESTS = 1000
# per policy: goodput and deadlines met at nominal load, energy per request, and deadlines met
# at 0.5x and 1.25x load, one value per seed
POLICIES: dict[str, dict[str, list[float]]] = {
    "cs-ucb": {
        "goodput": [6.0, 5.5, 1.2],
        "met": [0.999, 0.97, 0.62],
        "energy": [150.0, 160.0, 240.0],
        "met_low": [1.0, 0.99, 0.95],
        "met_high": [0.85, 0.8, 0.5],
    },
    "edge-only": {  # goodput near 0, never 90% met
        "goodput": [0.0, 0.0005, 0.06],
        "met": [0.0, 0.001, 0.03],
        "energy": [2000.0, 2500.0, 1900.0],
        "met_low": [0.0, 0.002, 0.05],
        "met_high": [0.0, 0.0, 0.01],
    },
    "round-robin": {  # huge spread of CS-UCB's goodput ratio; 90% met in seed 0 only
        "goodput": [0.004, 2.0, 0.3],
        "met": [0.001, 0.4, 0.05],
        "energy": [900.0, 700.0, 1200.0],
        "met_low": [0.95, 0.5, 0.3],
        "met_high": [0.0, 0.2, 0.01],
    },
    "cloud-only": {  # the same in every seed, 90% met at every load
        "goodput": [4.0, 4.0, 4.0],
        "met": [0.91, 0.91, 0.91],
        "energy": [100.0, 100.0, 100.0],
        "met_low": [0.99, 0.99, 0.99],
        "met_high": [0.91, 0.91, 0.91],
    },
    "oracle": {  # goodput 0 in seed 1: CS-UCB's goodput ratio has no estimate
        "goodput": [7.0, 0.0, 1.25],
        "met": [0.99, 0.0, 0.6],
        "energy": [140.0, 150.0, 230.0],
        "met_low": [1.0, 0.95, 0.9],
        "met_high": [0.85, 0.0, 0.4],
    },
}


def _rows() -> list[GridRow]:
    blank = dict.fromkeys(GridRow.columns(), 0)
    rows = []
    for policy, spec in POLICIES.items():
        for seed in range(3):
            for factor, rate in RATES.items():
                met = {0.5: spec["met_low"], 1.0: spec["met"], 1.25: spec["met_high"]}[factor]
                energy = spec["energy"][seed]
                fields = {
                    "deployment": "7b/13b",
                    "bandwidth": "nominal",
                    "rate_factor": factor,
                    "rate_rps": rate,
                    "policy": policy,
                    "seed": seed,
                    "requests": REQUESTS,
                    "completed": REQUESTS,
                    "goodput_rps": spec["goodput"][seed] * factor,
                    "deadline_satisfaction": met[seed],
                    "energy_per_request_j": energy,
                    "energy_transmission_j": 0.1 * energy * REQUESTS,
                    "energy_inference_j": 0.6 * energy * REQUESTS,
                    "energy_idle_j": 0.3 * energy * REQUESTS,
                    "weighted_energy_j": energy * REQUESTS,
                }
                rows.append(GridRow(**{**blank, **fields}))
    return rows


def _bounds() -> list[BoundRow]:
    floor = 50.0 * REQUESTS
    bounds = []
    for seed, (met, goodput) in enumerate([(999, 8.0), (990, 7.0), (950, 5.0)]):
        frontier = [FrontierPoint(f, f * REQUESTS, floor, 0.0) for f in (0.5, 0.7, 0.9, 0.95, 0.99)]
        bounds.append(
            BoundRow(
                deployment="7b/13b",
                bandwidth="nominal",
                rate_rps=6.0,
                seed=seed,
                requests=REQUESTS,
                met_upper_bound=met,
                goodput_upper_bound_rps=goodput,
                energy_lower_bound_j=floor,
                energy_floor_j=floor,
                frontier=(
                    *(p for p in frontier if p.met < met),
                    FrontierPoint(met / REQUESTS, met, floor, 0),
                ),
            )
        )
    return bounds


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> str:
    rows, bounds = _rows(), _bounds()
    grid = GridConfig(("7b/13b",), ("nominal",), tuple(RATES), tuple(POLICIES), 3, REQUESTS)
    setup = Setup(grid, {"7b/13b": 6.0}, "test")
    path = tmp_path_factory.mktemp("report") / "report.md"
    extra = yardstick.report_lines(yardstick.against_bound(rows, bounds), [])
    tables = analysis.cell_tables(rows)
    write_report(path, setup, tables, analysis.headline(rows), [], extra)
    return path.read_text()


def _table(report: str) -> dict[str, dict[str, str]]:
    """The per-cell table: policy -> column -> cell."""
    lines = report[report.index("## Per cell") :].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| policy"))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    table = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=True))
        table[cells["policy"]] = cells
    return table


def test_the_rows_are_extreme_enough_to_break_a_plain_t_interval() -> None:
    def plain(values: list[float]) -> tuple[float, float]:
        x = np.array(values)
        low, high = stats.t.interval(0.95, x.size - 1, loc=x.mean(), scale=stats.sem(x))
        return float(low), float(high)

    assert plain(POLICIES["cs-ucb"]["met"])[1] > 1
    assert plain(POLICIES["edge-only"]["goodput"])[0] < 0
    cs, rr = POLICIES["cs-ucb"]["goodput"], POLICIES["round-robin"]["goodput"]
    assert plain([a / b for a, b in zip(cs, rr, strict=True)])[0] < 0


def test_every_interval_stays_in_its_range(
    report: str, assert_honest: Callable[[str], list[tuple[str, float, float, float]]]
) -> None:
    found = assert_honest(report)
    kinds = {what for what, *_ in found}
    assert {"goodput (req/s)", "deadlines met", "energy / req (J)", "goodput ratio"} <= kinds
    assert {"energy ratio", "goodput fraction", "energy multiple"} <= kinds
    met = [m for what, m, _, _ in found if what == "deadlines met"]
    assert max(met) > 0.85  # CS-UCB's share near 1 has an interval, inside [0, 1]
    assert len(found) >= 25


def test_the_cells_read_as_expected(report: str) -> None:
    table = _table(report)
    cs = table["cs-ucb"]
    assert cs["deadlines met"].startswith("0.863 [")
    # goodput ratios: a geometric mean over seeds; a zero denominator gives none
    assert table["round-robin"]["goodput ratio"].startswith(
        f"{np.exp(np.mean(np.log([1500, 2.75, 4.0]))):.2f}x ["
    )
    assert table["oracle"]["goodput ratio"] == "n/a"
    # every seed alike: a degenerate interval, not a made-up one
    assert table["cloud-only"]["goodput (req/s)"] == "4.00 [4.00, 4.00]"
    assert table["edge-only"]["goodput (req/s)"].startswith("0.02 [")


def test_a_capacity_below_the_lowest_load_tested_says_so(report: str) -> None:
    table = _table(report)
    assert table["edge-only"]["capacity (req/s)"] == "< 3.00"
    # 90% met in one seed of three: the mean is below the mean with the others at 3 req/s
    rr = 3.0 + (0.95 - 0.9) / (0.95 - 0.001) * 3.0
    assert table["round-robin"]["capacity (req/s)"] == f"< {(rr + 6.0) / 3:.2f}"
    assert table["cloud-only"]["capacity (req/s)"] == "≥ 7.50"
    assert "0.00 [0.00, 0.00]" not in report
    note = next(line for line in report.splitlines() if line.startswith("`<` capacity"))
    assert "(edge-only, round-robin)" in note
    assert "below the lowest load tested (3 req/s)" in note
    # a capacity ratio against a capacity outside the loads tested is a bound
    assert table["edge-only"]["capacity ratio"].startswith("≥ ")
    assert table["cloud-only"]["capacity ratio"].startswith("≤ ")
    assert "[" in table["oracle"]["capacity ratio"]


def test_capacity_outside_the_loads_tested() -> None:
    assert analysis.capacity([3.0, 6.0], [0.5, 0.3]) == (3.0, "<")
    assert analysis.capacity([3.0, 6.0], [0.99, 0.97]) == (6.0, ">=")
    below = analysis.capacity_estimate([(3.0, "<"), (3.0, "<")])
    assert (below["bound"], below["mean"], below["note"]) == ("<", 3.0, analysis.BELOW)
    both = analysis.capacity_estimate([(3.0, "<"), (7.5, ">=")])
    assert np.isnan(both["mean"])
    exact = analysis.capacity_estimate([(4.0, "="), (5.0, "=")])
    assert exact["bound"] == "" and 0 < exact["ci_low"] < 4.5 < exact["ci_high"]


@pytest.mark.parametrize(
    ("column", "cell"),
    [
        ("deadlines met", "0.866 [0.573, 1.159]"),
        ("goodput (req/s)", "0.02 [-0.01, 0.04]"),
        ("goodput ratio", "954.67x [-899.12, 2808.46]"),
        ("capacity ratio", "0.00x [0.00, 0.00]"),
        ("energy / req (J)", "240.0 [250.0, 260.0]"),
    ],
)
def test_the_checker_rejects_intervals_out_of_range(
    column: str,
    cell: str,
    assert_honest: Callable[[str], list[tuple[str, float, float, float]]],
) -> None:
    text = f"| policy | {column} |\n|---|---|\n| x | {cell} |\n"
    with pytest.raises(AssertionError):
        assert_honest(text)
