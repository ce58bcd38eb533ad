"""User-facing errors: one clear line naming the source, the field and the problem."""

from __future__ import annotations


class PerllmError(Exception):
    """Base class for errors that are shown to the user as one line (CLI exit code 2)."""


class InputError(PerllmError):
    """Bad user input: a config, a flag, a trace line or a request body.

    The message names where (file and line, or flag), which field, and what is wrong, e.g.
    ``trace.csv:12: field 'ContextTokens': must be a non-negative integer, got 'abc'``.
    """


def where(source: str | None, line: int | None = None) -> str:
    """Format a location prefix such as ``file.yaml: `` or ``trace.csv:12: ``."""
    if source is None:
        return ""
    return f"{source}:{line}: " if line is not None else f"{source}: "
