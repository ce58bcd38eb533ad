"""The sweep flags of `perllm reproduce`: one line and exit 2 on bad values, a resume hint on
Ctrl-C, and a recorded command that does not depend on where the runs executed."""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import Any

import pytest

from perllm.cli import main
from perllm.experiments import reproduce as reproduce_module
from perllm.experiments.sweep_args import recorded_command, resume_command


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    return err


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port  # nothing listens there once the probe is closed


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--ray-address", "127.0.0.1:6379"], "--ray-address: only with --executor ray"),
        (["--executor", "dask"], "argument --executor: invalid choice: 'dask'"),
        (["--executor", "ray", "--ray-address", "nowhere"], "expected HOST:PORT or auto"),
        (["--executor", "ray", "--ray-address", "h:99999"], "expected HOST:PORT or auto"),
    ],
)
def test_bad_executor_flags_fail_with_one_line(
    flags: list[str], expected: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["reproduce", "--quick", "--out", str(tmp_path), *flags]) == 2
    assert expected in _one_line_error(capsys)


@pytest.mark.ray
def test_an_unreachable_ray_cluster_fails_at_once(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    address = f"127.0.0.1:{_free_port()}"
    argv = ["reproduce", "--quick", "--out", str(tmp_path), "--executor", "ray"]
    assert main([*argv, "--ray-address", address]) == 2
    err = _one_line_error(capsys)
    assert err.startswith(f"perllm: --ray-address: cannot reach a Ray cluster at {address}")
    assert list(tmp_path.iterdir()) == []  # checked before any output


def test_ray_missing_names_the_extra_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    assert main(["reproduce", "--quick", "--out", str(tmp_path), "--executor", "ray"]) == 2
    assert "pip install 'perllm[ray]'" in _one_line_error(capsys)


def test_ctrl_c_says_how_many_runs_are_saved_and_how_to_resume(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    def interrupted(grid: Any, out: Path, *args: Any, **kwargs: Any) -> Path:
        (out / "checkpoint.jsonl").write_text('{"header": {}}\n{"key": 1}\n{"key": 2}\n{"ke')
        raise KeyboardInterrupt

    monkeypatch.setattr(reproduce_module, "reproduce", interrupted)
    argv = ["reproduce", "--quick", "--out", str(tmp_path), "--jobs", "2"]
    monkeypatch.setattr(sys, "argv", ["perllm", *argv])
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err
    err = err.splitlines()[-1]  # after the progress bar
    assert err.startswith("perllm: interrupted; 2 of ")
    assert err.rstrip().endswith(f"resume with: perllm {' '.join(argv)} --resume")


def test_the_recorded_command_leaves_out_where_the_runs_executed() -> None:
    argv = ["reproduce", "--quick", "--jobs", "8", "--executor=ray", "--ray-address", "h:1"]
    assert recorded_command("perllm", [*argv, "--resume", "--out", "r"], {"--jobs": 1}) == (
        "perllm reproduce --quick --out r"
    )
    assert resume_command("perllm", ["reproduce", "--out", "a b"]) == (
        "perllm reproduce --out 'a b' --resume"
    )
    assert resume_command("perllm", ["reproduce", "--resume"]) == "perllm reproduce --resume"
