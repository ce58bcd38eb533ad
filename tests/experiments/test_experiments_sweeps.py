"""`perllm reproduce` on either executor, interrupted and resumed: the same bytes every time."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from perllm.errors import InputError
from perllm.experiments import checkpoint as checkpoint_module
from perllm.experiments.checkpoint import FILENAME
from perllm.experiments.executors import ExecutorSpec, open_executor
from perllm.experiments.grid import GridConfig
from perllm.experiments.reproduce import reproduce, total_runs

SMALL = GridConfig(
    deployments=("7b/13b",),
    bandwidths=("nominal",),
    rate_factors=(0.5, 1.0),
    policies=("cs-ucb", "cloud-only", "round-robin"),
    seeds=1,
    requests=200,
)
# Every test here runs a grid, or resumes the reference grid: seconds each.
pytestmark = pytest.mark.slow

OUTPUTS = ("results.csv", "results.json", "regret.csv", "bounds.csv")
PROCESS = ExecutorSpec("process", 2)
RAY = ExecutorSpec("ray", 2)
RAY_PARAM = pytest.param(RAY, marks=pytest.mark.ray)


def _quiet(done: int) -> None:
    pass


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("reference")
    reproduce(SMALL, out, PROCESS, _quiet, "test")
    return out


def _same_outputs(out: Path, reference: Path) -> None:
    for name in OUTPUTS:
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name


def _stop_after(runs: int) -> Callable[[int], None]:
    def advance(done: int) -> None:
        if done >= runs:
            raise KeyboardInterrupt

    return advance


@pytest.mark.ray
def test_ray_gives_the_same_bytes_as_the_process_pool(
    local_ray: Any, reference: Path, tmp_path: Path
) -> None:
    reproduce(SMALL, tmp_path, RAY, _quiet, "test")
    _same_outputs(tmp_path, reference)


@pytest.mark.parametrize("executor", [PROCESS, RAY_PARAM], ids=lambda spec: spec.kind)
def test_an_interrupted_grid_resumes_to_the_same_bytes(
    executor: ExecutorSpec, reference: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if executor.kind == "ray":
        request.getfixturevalue("local_ray")
    with pytest.raises(KeyboardInterrupt):
        reproduce(SMALL, tmp_path, executor, _stop_after(3), "test")
    lines = (tmp_path / FILENAME).read_text().splitlines()
    assert len(lines) == 1 + 3  # the header, then each run as it finished
    assert not (tmp_path / "results.csv").exists()
    progress: list[int] = []
    reproduce(SMALL, tmp_path, executor, progress.append, "test", resume=True)
    assert progress[0] == 3 and progress[-1] == total_runs(SMALL)
    _same_outputs(tmp_path, reference)


@pytest.fixture
def submitted(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The keys of the runs the grid hands to its executor."""
    keys: list[Any] = []

    @contextmanager
    def recording(spec: ExecutorSpec) -> Iterator[Any]:
        with open_executor(spec) as pool:
            submit = pool.submit

            def record(key: Any, fn: Callable[..., Any], *args: Any) -> None:
                keys.append(key)
                submit(key, fn, *args)

            pool.submit = record  # type: ignore[method-assign]
            yield pool

    monkeypatch.setattr(checkpoint_module, "open_executor", recording)
    return keys


def test_resume_runs_only_what_the_checkpoint_lacks(
    reference: Path, tmp_path: Path, submitted: list[Any]
) -> None:
    lines = (reference / FILENAME).read_text().splitlines(keepends=True)
    kept = lines[:5]  # the header and four finished runs, one of them cut short by a crash
    (tmp_path / FILENAME).write_text("".join(kept) + lines[5][:40])
    saved = {json.dumps(json.loads(line)["key"]) for line in kept[1:]}
    reproduce(SMALL, tmp_path, PROCESS, _quiet, "test", resume=True)
    _same_outputs(tmp_path, reference)
    assert len(submitted) == total_runs(SMALL) - 4
    assert not saved & {json.dumps(key) for key in submitted}


def test_a_finished_grid_resumes_without_running_anything(
    reference: Path, tmp_path: Path, submitted: list[Any]
) -> None:
    shutil.copy(reference / FILENAME, tmp_path / FILENAME)
    reproduce(SMALL, tmp_path, PROCESS, _quiet, "test", resume=True)
    assert submitted == []
    _same_outputs(tmp_path, reference)


def test_resume_refuses_a_checkpoint_of_another_grid(reference: Path, tmp_path: Path) -> None:
    shutil.copy(reference / FILENAME, tmp_path / FILENAME)
    other = dataclasses.replace(SMALL, seeds=2)
    with pytest.raises(InputError, match="from a different sweep"):
        reproduce(other, tmp_path, PROCESS, _quiet, "test", resume=True)
