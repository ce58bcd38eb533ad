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

    async def run() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            stages.append("swallowed")  # as a library mid-command may
        await asyncio.sleep(3600)
        stages.append("ran on")

    async def main() -> None:
        task = Background("t", run)
        task.start()
        await asyncio.sleep(0)
        await task.stop()
        assert not task.running

    asyncio.run(main())
    assert stages == ["swallowed"]


def test_a_task_that_never_stops_is_left_behind_and_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(background, "STOP_S", 0.3)
    stop = asyncio.Event()

    async def stubborn() -> None:
        while not stop.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(3600)

    async def main() -> None:
        task = Background("stubborn", stubborn)
        task.start()
        await asyncio.sleep(0)
        with caplog.at_level(logging.WARNING):
            await task.stop()
        stop.set()

    asyncio.run(main())
    assert "stubborn did not stop within 0.3 s (at " in caplog.text
