"""An OpenAI-compatible emulated LLM server driven by :mod:`perllm.perf` (for tests, demos and
benchmarks of the gateway without GPUs)."""

from __future__ import annotations

from perllm.emulator.app import INSTANT, create_emulator_app, parse_profile
from perllm.emulator.engine import BatchEngine

__all__ = ["INSTANT", "BatchEngine", "create_emulator_app", "parse_profile"]
