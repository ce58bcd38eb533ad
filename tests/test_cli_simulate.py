"""The ``perllm`` command line: simulate, scenarios, policies, and one-line errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from perllm.cli import main
from perllm.cluster import scenario
from perllm.policies.registry import REGISTRY

SIMULATE = ["simulate", "--scenario", "perllm-paper", "--policy", "round-robin"]
KEYS = (
    "policy",
    "scenario",
    "requests",
    "completed",
    "throughput_rps",
    "goodput_rps",
    "deadline_satisfaction",
    "latency_p50_s",
    "latency_p95_s",
    "latency_p99_s",
    "energy_j",
    "energy_per_request_j",
    "per_class",
    "per_server",
)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_simulate_json_prints_the_summary(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, *SIMULATE, "--requests", "300", "--seed", "1", "--json")
    assert code == 0, err
    summary = json.loads(out)
    for key in KEYS:
        assert key in summary, key
    assert set(summary["energy_j"]) >= {"total", "transmission", "inference", "idle"}
    assert summary["policy"] == "round-robin" and summary["scenario"] == "perllm-paper"
    assert summary["requests"] == 300 and summary["seed"] == 1
    assert len(summary["per_server"]) == 6


def test_simulate_twice_prints_the_same_bytes(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [*SIMULATE, "--requests", "300", "--seed", "1", "--json"]
    first = _run(capsys, *argv)
    second = _run(capsys, *argv)
    assert first[0] == second[0] == 0
    assert first[1] == second[1]
    other = _run(capsys, *SIMULATE, "--requests", "300", "--seed", "2", "--json")
    assert other[1] != first[1]


def test_simulate_rate_and_params_are_applied(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(
        capsys,
        "simulate", "--scenario", "tiny", "--policy", "cs-ucb", "--param", "exploration=0.5",
        "--requests", "50", "--rate", "2.5", "--json",
    )  # fmt: skip
    assert code == 0, err
    summary = json.loads(out)
    assert summary["rate_rps"] == 2.5 and summary["policy"] == "cs-ucb"


def test_simulate_out_writes_records_and_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "run" / "nested"
    code, out, err = _run(
        capsys, *SIMULATE, "--requests", "120", "--seed", "3", "--out", str(out_dir), "--json"
    )
    assert code == 0, err
    with (out_dir / "records.csv").open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert len(rows) == 121 and rows[0][0] == "id"
    written = json.loads((out_dir / "summary.json").read_text())
    assert written == json.loads(out)
    assert not list(out_dir.glob(".perllm-write-test*"))


def test_simulate_table_output_mentions_the_out_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(capsys, *SIMULATE, "--requests", "50", "--out", str(tmp_path / "o"))
    assert code == 0, err
    assert "round-robin" in out and str(tmp_path / "o") in out


def _bad_scenario(tmp_path: Path) -> str:
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\nlinks: []\nservers: []\n")
    return str(path)


def _file_in_the_way(tmp_path: Path) -> str:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    return str(blocker / "sub")


BAD_ARGS = {
    "requests-zero": (["--requests", "0"], "--requests"),
    "requests-text": (["--requests", "abc"], "--requests"),
    "rate-negative": (["--rate", "-1"], "--rate"),
    "rate-zero": (["--rate", "0"], "--rate"),
    "rate-nan": (["--rate", "nan"], "--rate"),
    "rate-absurd": (["--rate", "1e308"], "--rate: must be at most"),
    "requests-overflow": (["--requests", "99999999999999999999"], "--requests: must be <="),
    "seed-negative": (["--seed", "-3"], "--seed"),
    "policy-unknown": (["--policy", "nope"], "--policy"),
    "scenario-unknown": (["--scenario", "nope"], "--scenario"),
    "param-no-equals": (["--param", "exploration"], "--param"),
    "param-unknown": (["--param", "nope=1"], "nope"),
}


@pytest.mark.parametrize("case", list(BAD_ARGS))
def test_bad_flags_exit_2_with_one_line(case: str, capsys: pytest.CaptureFixture[str]) -> None:
    extra, needle = BAD_ARGS[case]
    code, out, err = _run(capsys, *SIMULATE, "--requests", "20", *extra)
    _assert_one_line_error(code, out, err, needle)


def test_bad_param_value_for_cs_ucb(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(
        capsys,
        "simulate", "--scenario", "tiny", "--policy", "cs-ucb", "--param", "exploration=-1",
        "--requests", "20",
    )  # fmt: skip
    _assert_one_line_error(code, out, err, "exploration")


def test_bad_scenario_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _bad_scenario(tmp_path)
    code, out, err = _run(capsys, "simulate", "--scenario", path, "--policy", "round-robin")
    _assert_one_line_error(code, out, err, path)


def test_out_under_a_regular_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = _file_in_the_way(tmp_path)
    code, out, err = _run(capsys, *SIMULATE, "--requests", "20", "--out", target)
    _assert_one_line_error(code, out, err, "--out")
    assert target in err


@pytest.mark.parametrize(
    "argv",
    [[], ["nope"], ["simulate"], ["simulate", "--scenario", "tiny"], ["simulate", "--bogus"]],
    ids=["no-command", "unknown-command", "no-flags", "no-policy", "unknown-flag"],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, *argv)
    _assert_one_line_error(code, out, err, "")


def _assert_one_line_error(code: int, out: str, err: str, needle: str) -> None:
    assert code == 2, (out, err)
    assert "Traceback" not in err and "Traceback" not in out
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("perllm: ")
    assert needle in lines[0], lines[0]


def test_scenarios_lists_the_builtins(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "scenarios")
    assert code == 0, err
    for name in scenario.builtin_names():
        assert name in out


def test_policies_lists_every_policy(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "policies")
    assert code == 0, err
    for name in REGISTRY:
        assert name in out, name
    assert "exploration" in out


def test_policies_states_what_every_parameter_means(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "policies")
    assert code == 0, err
    lines = " ".join(out.split())  # the console folds long lines
    for name, entry in REGISTRY.items():
        for field_name, field in entry.config.model_fields.items():
            key = field_name.replace("_", "-")
            assert field.description, f"{name} {key} has no description"
            assert f"{name} {key}: {' '.join(field.description.split())[:40]}" in lines, key
