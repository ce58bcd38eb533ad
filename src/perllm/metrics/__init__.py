"""Metrics: one recorder shared by the simulator and the gateway, the feedback fan-out that
feeds it (:mod:`perllm.metrics.sinks`), summaries and exports."""

from perllm.metrics.recorder import COLUMNS, Recorder
from perllm.metrics.summary import Summary, regret_curve, summarize

__all__ = ["COLUMNS", "Recorder", "Summary", "regret_curve", "summarize"]
