"""The ``perllm reproduce`` subcommand."""

from __future__ import annotations

import argparse


def add_reproduce(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    pass
