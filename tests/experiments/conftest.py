"""A local Ray instance (2 CPUs), started once for every test here that asks for it."""

from __future__ import annotations

import logging
from collections.abc import Iterator
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
