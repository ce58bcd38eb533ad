"""The built-in personalized service classes used by the built-in scenarios.

Every number below is an assumption chosen to span the personalization the PerLLM paper
describes (interactive assistants with tight deadlines through to batch jobs that tolerate
minutes); the paper does not publish its classes. They live in one table so they can be
retuned in one place.
"""

from __future__ import annotations

from typing import Any

from perllm.workload.config import ServiceClassConfig

__all__ = ["BUILTIN_CLASS_TABLE", "builtin_classes"]

# One entry per class, in the YAML (kebab-case) spelling of ServiceClassConfig.
BUILTIN_CLASS_TABLE: tuple[dict[str, Any], ...] = (
    {
        # Voice / inline assistant: short questions, short answers, a few seconds at most.
        "name": "realtime-assistant",
        "share": 0.35,
        "prompt": {"kind": "lognormal", "mean": 60, "median": 40},
        "output": {"kind": "lognormal", "mean": 40, "median": 28},
        "deadline": {"low-s": 3.0, "high-s": 6.0},
    },
    {
        # Chat: ShareGPT-like prompts; answers somewhat shorter than ShareGPT's, capped at
        # 1024 tokens; the user waits while reading a streamed answer.
        "name": "chat",
        "share": 0.35,
        "prompt": {"preset": "sharegpt-prompt"},
        "output": {"kind": "lognormal", "mean": 180, "median": 120, "max-tokens": 1024},
        "deadline": {"low-s": 15.0, "high-s": 30.0},
    },
    {
        # Document summary: Azure-conversation-sized prompts (capped at a 4096-token context)
        # plus an uploaded document, PDF-like: mean 2 MB, median 1 MB, capped at 100 MB.
        "name": "doc-summary",
        "share": 0.20,
        "prompt": {"preset": "azure-conv-prompt", "max-tokens": 4096},
        "output": {"kind": "lognormal", "mean": 120, "median": 90},
        "deadline": {"low-s": 30.0, "high-s": 60.0},
        "attachment-bytes": {
            "kind": "lognormal",
            "mean": 2_000_000,
            "median": 1_000_000,
            "max-tokens": 100_000_000,
        },
    },
    {
        # Batch analytics: long prompts and answers (capped at 2048), minutes of slack.
        "name": "batch-analytics",
        "share": 0.10,
        "prompt": {"kind": "lognormal", "mean": 600, "median": 400},
        "output": {"kind": "lognormal", "mean": 400, "median": 300, "max-tokens": 2048},
        "deadline": {"low-s": 120.0, "high-s": 300.0},
    },
)


def builtin_classes() -> list[ServiceClassConfig]:
    """The default personalized service classes (see :data:`BUILTIN_CLASS_TABLE`).

    Returns
    -------
    list of ServiceClassConfig
        ``realtime-assistant`` (35%), ``chat`` (35%), ``doc-summary`` (20%) and
        ``batch-analytics`` (10%).
    """
    return [ServiceClassConfig.model_validate(entry) for entry in BUILTIN_CLASS_TABLE]
