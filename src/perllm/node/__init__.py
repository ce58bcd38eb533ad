"""Real LLM servers on this machine (llama.cpp) and their CPU energy (RAPL or estimated)."""

from __future__ import annotations

from perllm.node.energy import EnergyReading, RaplMeter
from perllm.node.llamacpp import INSTALL_HINT, LlamaCppNode, NodeError, default_model

__all__ = [
    "INSTALL_HINT",
    "EnergyReading",
    "LlamaCppNode",
    "NodeError",
    "RaplMeter",
    "default_model",
]
