"""Fixtures for policy unit tests: a view whose load the test sets (no simulator involved)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from perllm.domain import EnergyParts, Feedback, RouterRequest
from perllm.testing import StaticView
from perllm.testing import paper_view as make_paper_view


@pytest.fixture
def paper_view() -> StaticView:
    return make_paper_view()


def make_request(
    i: int = 0,
    *,
    deadline_s: float = 1000.0,
    cls: str = "chat",
    prompt: int = 100,
) -> RouterRequest:
    return RouterRequest(
        id=i,
        arrival_s=float(i),
        service_class=cls,
        prompt_tokens=prompt,
        request_bytes=prompt * 4,
        deadline_s=deadline_s,
    )


def make_feedback(
    request: RouterRequest,
    decision,
    *,
    energy_j: float,
    met: bool = True,  # type: ignore[no-untyped-def]
    processing_s: float = 1.0,
    output_tokens: int = 50,
) -> Feedback:
    return Feedback(
        request=request,
        decision=decision,
        processing_s=processing_s,
        transfer_s=0.01,
        queue_s=0.0,
        prefill_s=0.1,
        decode_s=processing_s - 0.11,
        output_tokens=output_tokens,
        energy=EnergyParts(0.0, energy_j, 0.0),
        met=met,
    )


@pytest.fixture
def request_factory() -> Callable[..., RouterRequest]:
    return make_request


@pytest.fixture
def feedback_factory() -> Callable[..., Feedback]:
    return make_feedback
