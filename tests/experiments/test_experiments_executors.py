"""Executors: keyed results as calls complete, calls queued while reading, failures, Ray retries."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from perllm.experiments.executors import ExecutorSpec, map_in_order, open_executor

SPECS = [ExecutorSpec("process", 2), pytest.param(ExecutorSpec("ray", 2), marks=pytest.mark.ray)]


def square(x: int) -> int:
    return x * x


def fail(x: int) -> int:
    raise ValueError(f"bad input {x}")


def die_once(marker: str) -> str:
    """Kill its worker process the first time (no exception: the process is gone), then succeed."""
    path = Path(marker)
    if not path.exists():
        path.write_text("died once")
        os._exit(1)
    return "survived"


@pytest.fixture(params=SPECS, ids=lambda spec: spec.kind)
def spec(request: pytest.FixtureRequest) -> ExecutorSpec:
    if request.param.kind == "ray":
        ray = request.getfixturevalue("local_ray")
        # This module is not importable from Ray's workers: its functions travel by value.
        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    return request.param


def test_results_come_back_under_their_keys_and_more_can_be_queued(spec: ExecutorSpec) -> None:
    seen: dict[Any, int] = {}
    with open_executor(spec) as pool:
        for x in range(5):
            pool.submit(("first", x), square, x)
        for key, result in pool.completed():
            seen[key] = result
            if key[0] == "first" and key[1] % 2 == 0:
                pool.submit(("second", key[1]), square, result)
    assert seen == {
        **{("first", x): x * x for x in range(5)},
        **{("second", x): x**4 for x in (0, 2, 4)},
    }


def test_map_in_order_keeps_the_order_of_the_items(spec: ExecutorSpec) -> None:
    assert map_in_order(spec, square, [3, 1, 2, 0]) == [9, 1, 4, 0]


def test_a_failed_call_raises_and_the_rest_is_abandoned(spec: ExecutorSpec) -> None:
    with pytest.raises(ValueError, match="bad input 3"), open_executor(spec) as pool:
        pool.submit("ok", square, 2)
        pool.submit("bad", fail, 3)
        for _ in pool.completed():
            pass


@pytest.mark.ray
def test_ray_retries_a_task_whose_worker_died(local_ray: Any, tmp_path: Path) -> None:
    local_ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    marker = tmp_path / "marker"
    with open_executor(ExecutorSpec("ray", 2)) as pool:
        pool.submit("task", die_once, str(marker))
        assert list(pool.completed()) == [("task", "survived")]
    assert marker.read_text() == "died once"


def test_describe_names_the_executor() -> None:
    assert ExecutorSpec("process", 3).describe() == "3 processes"
    assert ExecutorSpec("ray", 2).describe() == "local Ray, 2 CPUs"
    assert ExecutorSpec("ray", 2, "10.0.0.1:6379").describe() == "Ray at 10.0.0.1:6379"


# A call that holds its worker: it prints the worker's PID, then waits for a signal (the
# pool's terminate, or the sweep's SIGKILL in the test's clean-up).
_HOLD = """
import os
import signal


def hold():
    print(os.getpid(), flush=True)
    while True:
        signal.pause()
"""
_HOLD_A_WORKER = """
from perllm.experiments.executors import ExecutorSpec, open_executor
from tests_helper_hold import hold
with open_executor(ExecutorSpec("process", 2)) as pool:
    pool.submit("held", hold)
    for _ in pool.completed():
        pass
"""


def test_a_sigterm_stops_the_workers_with_the_sweep(tmp_path: Path) -> None:
    """A sweep ended by SIGTERM (a job scheduler, ``kill``) takes its workers with it: each
    running call's process is gone once the sweep's process has exited."""
    (tmp_path / "tests_helper_hold.py").write_text(_HOLD)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    command = [sys.executable, "-c", _HOLD_A_WORKER]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env) as sweep:
        try:
            assert sweep.stdout is not None
            worker = int(sweep.stdout.readline())  # the worker runs its call
            sweep.send_signal(signal.SIGTERM)
            assert sweep.wait(timeout=60) == 128 + signal.SIGTERM
        finally:
            sweep.kill()
    try:
        os.kill(worker, signal.SIGKILL)  # still there: the sweep left it behind
    except ProcessLookupError:
        return
    pytest.fail(f"worker {worker} outlived its sweep")
