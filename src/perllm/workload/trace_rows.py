"""What every trace reader makes: a :class:`TraceRow` per request, and the checks the readers
share (:mod:`perllm.workload.traces`, :mod:`perllm.workload.public_traces`)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from perllm.errors import InputError, where

__all__ = ["TraceRow", "bad_field", "is_blank", "parse_count"]

_COUNT = re.compile(r"[0-9]+")


@dataclass(frozen=True, slots=True)
class TraceRow:
    """One request of a trace; ``None`` means "not in the trace, fill in from the class".

    ``arrival_s`` is relative to the first row for Azure CSV traces and as written for JSONL.
    ``line`` is the row's line number in the file (for error messages). ``prefix_blocks`` are
    the ids of the prompt's blocks where the trace gives them (Mooncake's ``hash_ids``:
    512-token blocks, equal ids for equal prefixes), else empty; they become the request's
    :attr:`perllm.domain.RouterRequest.prefix_blocks`.
    """

    arrival_s: float
    prompt_tokens: int
    output_tokens: int
    service_class: str | None = None
    deadline_s: float | None = None
    request_bytes: int | None = None
    response_bytes: int | None = None
    model: str | None = None
    line: int = 0
    prefix_blocks: tuple[int, ...] = ()


def bad_field(source: str, line: int, field: str, problem: str) -> InputError:
    return InputError(f"{where(source, line)}field '{field}': {problem}")


def parse_count(value: str, field: str, source: str, line: int) -> int:
    text = value.strip()
    if _COUNT.fullmatch(text) is None:
        raise bad_field(source, line, field, f"must be a non-negative integer, got {value!r}")
    return int(text)


def is_blank(cells: list[str]) -> bool:
    return all(not cell.strip() for cell in cells)
