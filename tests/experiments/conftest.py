"""A local Ray instance (2 CPUs), started once for every test here that asks for it; the
report checker (:func:`assert_honest`)."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest


@pytest.fixture(scope="session")
def local_ray() -> Iterator[Any]:
    ray = pytest.importorskip("ray", reason="Ray is the optional extra perllm[ray]")
    quiet = {"logging_level": logging.ERROR, "log_to_driver": False}
    # "local": a new instance, even where `ray start` left the address of a cluster behind.
    ray.init(address="local", num_cpus=2, include_dashboard=False, **quiet)
    yield ray
    ray.shutdown()


# `mean [low, high]` as `perllm.experiments.intervals.fmt` writes it (optional `x` after the mean).
_NUMBER = r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?"
_INTERVAL = re.compile(rf"(?P<mean>{_NUMBER})x? \[(?P<low>{_NUMBER}), (?P<high>{_NUMBER})\]")
_SHARES = ("deadlines met", "goodput fraction", "of requests met")
_RATIOS = ("ratio", "energy multiple")


def _intervals(text: str) -> list[tuple[str, float, float, float]]:
    """Every interval of a report as (what it measures, mean, low, high): the column's name in
    a table, the words after it elsewhere."""
    found = []
    header: list[str] = []
    previous = ""
    for line in text.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not previous.startswith("|"):
                header = cells
            for name, cell in zip(header, cells, strict=False):
                for m in _INTERVAL.finditer(cell):
                    found.append((name, float(m["mean"]), float(m["low"]), float(m["high"])))
        else:
            for m in _INTERVAL.finditer(line):
                context = line[m.end() : m.end() + 30]
                found.append((context, float(m["mean"]), float(m["low"]), float(m["high"])))
        previous = line
    return found


def _assert_honest(text: str) -> list[tuple[str, float, float, float]]:
    """Assert that every interval of a report contains its estimate and stays inside its
    quantity's range: shares in [0, 1], ratios above 0 (energy multiples at least 1), every
    other quantity at least 0. Return the intervals."""
    found = _intervals(text)
    # every bracket that holds two numbers was parsed
    assert len(found) == len(re.findall(rf"\[\s*{_NUMBER}\s*,\s*{_NUMBER}\s*\]", text)), text
    for what, mean, low, high in found:
        where = f"{what!r}: {mean} [{low}, {high}]"
        assert low <= mean <= high, where
        assert low >= 0, where
        if any(name in what for name in _SHARES):
            assert high <= 1, where
        if any(name in what for name in _RATIOS):
            assert low > 0, where
        if "energy multiple" in what:
            assert low >= 1, where
    return found


@pytest.fixture
def assert_honest() -> Callable[[str], list[tuple[str, float, float, float]]]:
    """The report checker: every interval inside its quantity's range, around its estimate."""
    return _assert_honest
