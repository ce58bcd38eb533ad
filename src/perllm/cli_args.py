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


def integer(low: int) -> Callable[[str], int]:
    """An integer ``>= low``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    return parse


def positive_float(text: str) -> float:
    """A finite number ``> 0``."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


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
