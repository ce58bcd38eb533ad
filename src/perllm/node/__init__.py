"""Real LLM servers on this machine (llama.cpp); their CPU energy is read with
:mod:`perllm.perf.energy` (RAPL or estimated)."""

from __future__ import annotations

from perllm.node.llamacpp import INSTALL_HINT, LlamaCppNode, NodeError, default_model

__all__ = [
    "INSTALL_HINT",
    "LlamaCppNode",
    "NodeError",
    "default_model",
]
