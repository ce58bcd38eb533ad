"""Where a finished request's :class:`~perllm.domain.Feedback` goes: one fan-out of sinks.

Both worlds build one ``Feedback`` per finished request and hand it to a :class:`FanOut`, which
hands it to each of its :class:`~perllm.domain.FeedbackSink` s once, in order. The policy
learns through a :class:`PolicySink`; the recorder (:class:`~perllm.metrics.recorder.Recorder`)
and the gateway's metrics are sinks themselves.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from perllm.domain import Feedback, FeedbackSink

__all__ = ["FanOut", "Learner", "PolicySink"]


class Learner(Protocol):
    """What learns from feedback (a :class:`~perllm.policies.base.Policy`)."""

    def observe(self, feedback: Feedback) -> None: ...


class PolicySink:
    """The sink through which a policy learns: ``on_feedback`` calls ``policy.observe``."""

    __slots__ = ("policy",)

    def __init__(self, policy: Learner) -> None:
        self.policy = policy

    def on_feedback(self, now: float, feedback: Feedback) -> None:
        self.policy.observe(feedback)


class FanOut:
    """A sink that hands each feedback to each of ``sinks`` once, in order."""

    __slots__ = ("sinks",)

    def __init__(self, sinks: Iterable[FeedbackSink]) -> None:
        self.sinks: tuple[FeedbackSink, ...] = tuple(sinks)

    def add(self, sink: FeedbackSink) -> None:
        """Hand the feedback to ``sink`` too, after the others."""
        self.sinks = (*self.sinks, sink)

    def on_feedback(self, now: float, feedback: Feedback) -> None:
        for sink in self.sinks:
            sink.on_feedback(now, feedback)
