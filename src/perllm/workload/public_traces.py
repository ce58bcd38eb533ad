"""Readers for two published LLM serving traces, beside the Azure CSV of :mod:`.traces`.

- **BurstGPT** (Wang et al. 2024, github.com/HPMLL/BurstGPT): a CSV with the header
  ``Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type`` (columns in any
  order), ``Timestamp`` in seconds since the trace's start, ``Model`` e.g. ``ChatGPT`` or
  ``GPT-4``, ``Log Type`` e.g. ``Conversation log`` or ``API log``. Failed requests have
  ``Response tokens`` 0; they are kept (they still arrive and are prefilled) and, like every
  output length below 1, count as 1 token.
- **Mooncake** (Qin et al., FAST'25, github.com/kvcache-ai/Mooncake): JSON lines
  ``{"timestamp": ms, "input_length": n, "output_length": m, "hash_ids": [...]}`` with
  ``timestamp`` the arrival in milliseconds since the first request. ``hash_ids`` (the ids of
  the prompt's 512-token blocks, equal for equal prefixes) become the request's prefix blocks
  (:attr:`perllm.domain.RouterRequest.prefix_blocks`): the simulated servers cache them, and a
  router records which it sent where (:mod:`perllm.prefix`).

Arrivals are made relative to the first row. ``Model`` and ``Log Type`` are checked (non-empty)
and not used: they name OpenAI's models, not this cluster's, and a request's service class is
drawn by share (see :func:`perllm.workload.generator.generate_requests`). Every problem raises
:class:`~perllm.errors.InputError` naming the file, the line and the field.
"""

from __future__ import annotations

import csv
import io
import math

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from perllm.cluster.settings import validation_message
from perllm.errors import InputError, where
from perllm.workload.trace_rows import TraceRow, bad_field, is_blank, parse_count

__all__ = ["BURSTGPT_HEADER", "parse_burstgpt_csv", "parse_mooncake_jsonl"]

BURSTGPT_HEADER = (
    "Timestamp",
    "Model",
    "Request tokens",
    "Response tokens",
    "Total tokens",
    "Log Type",
)


def _burstgpt_columns(header: list[str], source: str, line: int) -> dict[str, int]:
    names = [cell.strip() for cell in header]
    expected = ",".join(BURSTGPT_HEADER)
    if sorted(names) != sorted(BURSTGPT_HEADER):
        got = ",".join(header)
        raise InputError(f"{where(source, line)}expected the header '{expected}', got '{got}'")
    return {name: index for index, name in enumerate(names)}


def _seconds(value: str, source: str, line: int) -> float:
    try:
        seconds = float(value.strip())
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds >= 0):
        problem = f"must be a non-negative number of seconds, got {value!r}"
        raise bad_field(source, line, "Timestamp", problem)
    return seconds


def _text(value: str, field: str, source: str, line: int) -> None:
    if not value.strip():
        raise bad_field(source, line, field, "must not be empty")


def parse_burstgpt_csv(text: str, source: str) -> list[TraceRow]:
    """Parse a BurstGPT trace (see the module docstring).

    Parameters
    ----------
    text
        The file's contents.
    source
        The file name, for error messages.

    Returns
    -------
    list of TraceRow
        In file order, the first arrival at 0.

    Raises
    ------
    InputError
        Wrong header or field count, a bad or decreasing timestamp, a bad token count, an
        empty ``Model`` or ``Log Type``.
    """
    reader = csv.reader(io.StringIO(text))
    header = next((cells for cells in reader if not is_blank(cells)), None)
    if header is None:
        expected = ",".join(BURSTGPT_HEADER)
        raise InputError(f"{where(source)}empty file, expected the header '{expected}'")
    column = _burstgpt_columns(header, source, reader.line_num)
    rows: list[TraceRow] = []
    first_s = previous_s = 0.0
    for cells in reader:
        line = reader.line_num
        if is_blank(cells):
            continue
        if len(cells) != len(BURSTGPT_HEADER):
            raise InputError(f"{where(source, line)}expected 6 fields, got {len(cells)}")
        seconds = _seconds(cells[column["Timestamp"]], source, line)
        if not rows:
            first_s = previous_s = seconds
        if seconds < previous_s:
            problem = f"must be non-decreasing, {seconds:g} is before the row above"
            raise bad_field(source, line, "Timestamp", problem)
        previous_s = seconds
        counts = {
            name: parse_count(cells[column[name]], name, source, line)
            for name in ("Request tokens", "Response tokens", "Total tokens")
        }
        _text(cells[column["Model"]], "Model", source, line)
        _text(cells[column["Log Type"]], "Log Type", source, line)
        rows.append(
            TraceRow(
                seconds - first_s, counts["Request tokens"], counts["Response tokens"], line=line
            )
        )
    if not rows:
        raise InputError(f"{where(source)}no requests in the trace")
    return rows


class _MooncakeRow(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)

    timestamp: int | float = Field(ge=0)
    input_length: int = Field(ge=0)
    output_length: int = Field(ge=0)
    hash_ids: list[int] = Field(default=[])


def parse_mooncake_jsonl(text: str, source: str) -> list[TraceRow]:
    """Parse a Mooncake trace (see the module docstring); blank lines are skipped.

    Parameters
    ----------
    text
        The file's contents.
    source
        The file name, for error messages.

    Returns
    -------
    list of TraceRow
        In file order, the first arrival at 0.

    Raises
    ------
    InputError
        Bad JSON, a missing, unknown or invalid key, or a decreasing ``timestamp``.
    """
    rows: list[TraceRow] = []
    first_ms = previous_ms = 0.0
    for line, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        try:
            item = _MooncakeRow.model_validate_json(raw)
        except ValidationError as err:
            raise InputError(validation_message(err, source, line, kebab=False)) from None
        if not rows:
            first_ms = previous_ms = float(item.timestamp)
        if item.timestamp < previous_ms:
            problem = f"must be non-decreasing, {item.timestamp} is before the line above"
            raise bad_field(source, line, "timestamp", problem)
        previous_ms = float(item.timestamp)
        arrival_s = (item.timestamp - first_ms) / 1000.0
        rows.append(
            TraceRow(
                arrival_s,
                item.input_length,
                item.output_length,
                line=line,
                prefix_blocks=tuple(item.hash_ids),
            )
        )
    if not rows:
        raise InputError(f"{where(source)}no requests in the trace")
    return rows
