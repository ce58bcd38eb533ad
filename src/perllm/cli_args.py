"""Argument types and checks shared by every ``perllm`` subcommand.

argparse prefixes a type's message with ``argument --flag:``, so the messages here name only
the problem.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from perllm.errors import InputError

MAX_REQUESTS = 100_000_000
"""Most requests one run may simulate (about an hour at the simulator's speed)."""
MAX_RATE_RPS = 1e6
"""Highest arrival rate a flag or a scenario may ask for, requests per second."""
MAX_SEED = 2**63 - 1
MAX_PORT = 65535


def integer(low: int, high: int = MAX_SEED) -> Callable[[str], int]:
    """An integer in ``[low, high]``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {text}")
        if value > high:
            raise argparse.ArgumentTypeError(f"must be <= {high:,}, got {text}")
        return value

    return parse


def positive_number(high: float = math.inf) -> Callable[[str], float]:
    """A finite number in ``(0, high]``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not (value > 0 and math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
        if value > high:
            raise argparse.ArgumentTypeError(f"must be at most {high:g}, got {text}")
        return value

    return parse


positive_float = positive_number()
"""A finite number ``> 0``."""
rate_rps = positive_number(MAX_RATE_RPS)
"""An arrival rate: a finite number in ``(0, MAX_RATE_RPS]``."""
port = integer(1, MAX_PORT)
requests = integer(1, MAX_REQUESTS)


def at_least(minimum: float) -> Callable[[str], float]:
    """A finite number ``>= minimum``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value) or value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum:g}, got {text}")
        return value

    return parse


def key_value(text: str) -> dict[str, Any]:
    """``KEY=VALUE`` with the value read as a YAML scalar or list."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return {key.strip(): yaml.safe_load(value)}
    except yaml.YAMLError:
        raise argparse.ArgumentTypeError(f"cannot parse the value of {key!r}: {value!r}") from None


def writable_dir(flag: str, path: Path) -> Path:
    """Create ``path`` if needed and check it is a writable directory (one-line error if not)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".perllm-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise InputError(f"{flag}: cannot write to {str(path)!r}: {err.strerror}") from None
    return path
