"""Background tasks stop when cancelled, even when something inside swallows a cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from perllm.gateway import background
from perllm.gateway.background import Background


def test_a_task_that_swallows_one_cancellation_is_stopped() -> None:
    stages: list[str] = []
    started = asyncio.Event()

    async def run() -> None:
        started.set()
        try:
            await asyncio.Event().wait()  # never set: only a cancellation ends it
        except asyncio.CancelledError:
            stages.append("swallowed")  # as a library mid-command may
        await asyncio.Event().wait()
        stages.append("ran on")

    async def main() -> None:
        task = Background("t", run)
        task.start()
        await started.wait()
        await task.stop()
        assert not task.running

    asyncio.run(main())
    assert stages == ["swallowed"]


def test_a_task_that_never_stops_is_left_behind_and_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(background, "STOP_S", 0.3)
    stop = asyncio.Event()
    started = asyncio.Event()

    async def stubborn() -> None:
        started.set()
        while not stop.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await stop.wait()

    async def main() -> None:
        task = Background("stubborn", stubborn)
        task.start()
        await started.wait()
        with caplog.at_level(logging.WARNING):
            await task.stop()
        stop.set()

    asyncio.run(main())
    assert "stubborn did not stop within 0.3 s (at " in caplog.text
