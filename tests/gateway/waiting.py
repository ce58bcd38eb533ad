"""Waiting for a condition that lives in another thread or process (a server's counters, a
store's contents), where no event can be handed over: poll it, bounded against a hang only."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    """Return as soon as ``condition()`` holds; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)
