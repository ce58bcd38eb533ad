"""Request trace readers: the Azure LLM inference CSV and a JSON-lines format (BurstGPT and
Mooncake traces: :mod:`perllm.workload.public_traces`).

Every problem in a trace file raises :class:`~perllm.errors.InputError` with one line that
names the file, the line and the field, e.g.
``trace.csv:12: field 'ContextTokens': must be a non-negative integer, got 'abc'``.
"""

from __future__ import annotations

import csv
import io
import math
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from perllm.cluster.settings import validation_message
from perllm.errors import InputError, where
from perllm.workload.config import TraceConfig
from perllm.workload.data import resolve_trace_path
from perllm.workload.public_traces import parse_burstgpt_csv, parse_mooncake_jsonl
from perllm.workload.trace_rows import TraceRow, bad_field, is_blank, parse_count

if TYPE_CHECKING:
    from _csv import Reader as _CsvReader

__all__ = ["AZURE_HEADER", "TraceRow", "parse_azure_csv", "parse_jsonl", "read_trace"]

AZURE_HEADER = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
_DATETIME = re.compile(
    r"(?P<base>\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2})"
    r"(?:\.(?P<frac>\d+))?"  # any number of digits: Azure writes 7, fromisoformat takes 6
    r"(?P<tz>Z|[+-]\d{2}:?\d{2})?",
    re.ASCII,
)


class _JsonlRow(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)

    arrival_s: float = Field(ge=0)
    prompt_tokens: int = Field(ge=0)
    output_tokens: int = Field(ge=1)
    service_class: str | None = Field(default=None, min_length=1)
    deadline_s: float | None = Field(default=None, gt=0)
    request_bytes: int | None = Field(default=None, ge=0)
    response_bytes: int | None = Field(default=None, ge=0)
    model: str | None = None


def read_trace(cfg: TraceConfig) -> list[TraceRow]:
    """Read a trace file.

    Parameters
    ----------
    cfg
        The file's path (``traces:FILE`` for a trace shipped in the repository's
        ``data/traces/``: :mod:`perllm.workload.data`) and format (``azure-csv``, ``jsonl``,
        ``burstgpt-csv`` or ``mooncake-jsonl``).

    Returns
    -------
    list of TraceRow
        In file order, arrivals non-decreasing; at least one row.

    Raises
    ------
    InputError
        A missing or unreadable file, or any bad line (one line naming file, line, field).
    """
    path = resolve_trace_path(cfg.path)
    text = _read_text(path)
    if cfg.format == "azure-csv":
        return parse_azure_csv(text, path)
    if cfg.format == "jsonl":
        return parse_jsonl(text, path)
    if cfg.format == "burstgpt-csv":
        return parse_burstgpt_csv(text, path)
    return parse_mooncake_jsonl(text, path)


def _read_text(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, not a file") from None
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not UTF-8 text (bad byte at offset {err.start})") from None
    except OSError as err:
        raise InputError(f"{path}: cannot read: {err.strerror}") from None


def _parse_timestamp(value: str, source: str, line: int) -> tuple[bool, float]:
    """Parse a TIMESTAMP cell: ``(is_datetime, seconds)``; seconds since the epoch if a date."""
    text = value.strip()
    match = _DATETIME.fullmatch(text)
    if match is not None:
        try:
            moment = datetime.fromisoformat(match["base"] + (match["tz"] or ""))
        except ValueError:
            problem = f"not a valid date and time, got {value!r}"
            raise bad_field(source, line, "TIMESTAMP", problem) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        frac = float("0." + match["frac"]) if match["frac"] else 0.0
        return True, moment.timestamp() + frac
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds):
        problem = f"must be a date like '2023-11-16 18:15:46.6805900' or seconds, got {value!r}"
        raise bad_field(source, line, "TIMESTAMP", problem)
    return False, seconds


def _check_header(reader: _CsvReader, source: str) -> None:
    """Consume the header (the first non-blank row) and check it."""
    expected = ",".join(AZURE_HEADER)
    header = next((cells for cells in reader if not is_blank(cells)), None)
    if header is None:
        raise InputError(f"{where(source)}empty file, expected the header '{expected}'")
    if tuple(cell.strip() for cell in header) != AZURE_HEADER:
        got = ",".join(header)
        line = reader.line_num
        raise InputError(f"{where(source, line)}expected the header '{expected}', got '{got}'")


def _field_count(cells: list[str], source: str, line: int) -> InputError:
    """A row with too few fields names the first missing one; too many, the last expected."""
    got = len(cells)
    if got < len(AZURE_HEADER):
        field, problem = AZURE_HEADER[got], "missing"
    else:
        field, problem = AZURE_HEADER[-1], f"followed by {got - len(AZURE_HEADER)} extra value(s)"
    return bad_field(source, line, field, f"{problem} (expected 3 fields, got {got})")


def parse_azure_csv(text: str, source: str) -> list[TraceRow]:
    """Parse an Azure LLM inference trace (``TIMESTAMP,ContextTokens,GeneratedTokens``).

    TIMESTAMP is a date and time such as ``2023-11-16 18:15:46.6805900`` (any number of
    fractional digits, naive times read as UTC) or a plain number of seconds; every row
    must use the same form. Arrivals are made relative to the first row.

    Parameters
    ----------
    text
        The file's contents.
    source
        The file name, for error messages.

    Returns
    -------
    list of TraceRow

    Raises
    ------
    InputError
        Wrong header, wrong field count, a bad or decreasing timestamp, a bad token count.
    """
    reader = csv.reader(io.StringIO(text))
    _check_header(reader, source)
    rows: list[TraceRow] = []
    first_kind: bool | None = None
    first_s = previous_s = 0.0
    for cells in reader:
        line = reader.line_num
        if is_blank(cells):
            continue
        if len(cells) != len(AZURE_HEADER):
            raise _field_count(cells, source, line)
        is_date, seconds = _parse_timestamp(cells[0], source, line)
        if first_kind is None:
            first_kind, first_s, previous_s = is_date, seconds, seconds
        elif is_date != first_kind:
            form = "a date and time" if first_kind else "a number of seconds"
            raise bad_field(source, line, "TIMESTAMP", f"must be {form} like the first row")
        if seconds < previous_s:
            problem = f"timestamps must be non-decreasing, {cells[0]!r} is before the row above"
            raise bad_field(source, line, "TIMESTAMP", problem)
        previous_s = seconds
        prompt = parse_count(cells[1], "ContextTokens", source, line)
        output = parse_count(cells[2], "GeneratedTokens", source, line)
        rows.append(TraceRow(seconds - first_s, prompt, output, line=line))
    if not rows:
        raise InputError(f"{where(source)}no requests in the trace")
    return rows


def parse_jsonl(text: str, source: str) -> list[TraceRow]:
    """Parse a JSON-lines trace: one object per line, blank lines skipped.

    Keys: ``arrival_s`` (seconds, ``>= 0``, non-decreasing), ``prompt_tokens`` (``>= 0``),
    ``output_tokens`` (``>= 1``), and optionally ``service_class``, ``deadline_s`` (``> 0``),
    ``request_bytes``, ``response_bytes`` (``>= 0``) and ``model``. Unknown keys are errors.

    Parameters
    ----------
    text
        The file's contents.
    source
        The file name, for error messages.

    Returns
    -------
    list of TraceRow

    Raises
    ------
    InputError
        Bad JSON, a missing or invalid key, or a decreasing ``arrival_s``.
    """
    rows: list[TraceRow] = []
    previous_s = 0.0
    for line, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        try:
            item = _JsonlRow.model_validate_json(raw)
        except ValidationError as err:
            raise InputError(validation_message(err, source, line, kebab=False)) from None
        if rows and item.arrival_s < previous_s:
            problem = f"must be non-decreasing, {item.arrival_s} is before the line above"
            raise bad_field(source, line, "arrival_s", problem)
        previous_s = item.arrival_s
        rows.append(TraceRow(line=line, **item.model_dump()))
    if not rows:
        raise InputError(f"{where(source)}no requests in the trace")
    return rows


# Shared with the readers of other published traces (perllm.workload.public_traces).
