"""YAML-facing pydantic models: their common base, and the one-line messages users see when
validation fails.

Every YAML-facing model uses kebab-case aliases (:func:`to_kebab`), so a field path is
reported the way the user wrote it, e.g.
``scenario.yaml: field 'classes.0.share': Input should be greater than 0, got 0``.
"""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import ErrorDetails

from perllm.errors import where

__all__ = ["KebabModel", "to_kebab", "validation_message", "yaml_message"]

_MAX_GOT_CHARS = 60
_VALUE_ERROR_PREFIXES = ("Value error, ", "Assertion failed, ")


def to_kebab(name: str) -> str:
    """Kebab-case alias of a snake_case field name (``rate_rps`` -> ``rate-rps``).

    Parameters
    ----------
    name
        A Python field name.

    Returns
    -------
    str
        The name with underscores replaced by hyphens.
    """
    return name.replace("_", "-")


class KebabModel(BaseModel):
    """Base of every YAML-facing settings model: frozen, no unknown keys, kebab-case keys."""

    model_config = ConfigDict(
        extra="forbid", populate_by_name=True, alias_generator=to_kebab, frozen=True
    )


def _field_path(error: ErrorDetails, kebab: bool) -> str:
    loc = error["loc"]
    # An unknown key is shown as the user wrote it; known fields in their YAML spelling.
    keep_last = error["type"] == "extra_forbidden"
    parts = []
    for index, part in enumerate(loc):
        as_written = not kebab or (keep_last and index == len(loc) - 1)
        if isinstance(part, int) or as_written:
            parts.append(str(part))
        else:
            parts.append(to_kebab(part))
    return ".".join(parts)


def _got(value: Any) -> str:
    if isinstance(value, dict | list | tuple | set) or value is None:
        return ""
    text = repr(value)
    if len(text) > _MAX_GOT_CHARS:
        text = text[: _MAX_GOT_CHARS - 3] + "..."
    return f", got {text}"


def _problem(error: ErrorDetails) -> str:
    message = error["msg"]
    for prefix in _VALUE_ERROR_PREFIXES:
        if message.startswith(prefix):
            message = message[len(prefix) :]
    if error["type"] not in ("missing", "json_invalid", "model_type", "dict_type"):
        message += _got(error.get("input"))
    return message


def validation_message(
    err: ValidationError, source: str | None, line: int | None = None, *, kebab: bool = True
) -> str:
    """Format a pydantic :class:`~pydantic.ValidationError` as one line.

    Only the first error is described; the count of the others is appended.

    Parameters
    ----------
    err
        The error raised by ``model_validate`` / ``model_validate_json``.
    source
        Where the input came from (a file name, ``--flag``), or ``None``.
    line
        Line number within ``source``, if the input is one line of a file.
    kebab
        Show field names in kebab-case (YAML models); ``False`` keeps them as they are
        (e.g. the snake_case keys of a JSON-lines trace).

    Returns
    -------
    str
        E.g. ``scenario.yaml: field 'classes.0.share': Input should be greater than 0, got 0``.
    """
    errors = err.errors(include_url=False)
    if not errors:
        return f"{where(source, line)}invalid input".strip()
    first = errors[0]
    path = _field_path(first, kebab)
    head = f"field '{path}': " if path else ""
    text = f"{where(source, line)}{head}{_problem(first)}"
    if len(errors) > 1:
        more = len(errors) - 1
        text += f" (and {more} more error{'s' if more > 1 else ''})"
    return " ".join(text.splitlines())


def yaml_message(err: yaml.YAMLError, source: str) -> str:
    """A YAML syntax error as one line: ``source[:line]: invalid YAML: problem``.

    Parameters
    ----------
    err
        The error raised by ``yaml.safe_load``.
    source
        Where the text came from (a file name).

    Returns
    -------
    str
        One line, whatever the kind of error (a marked parser error, or a reader error on a
        character YAML does not allow).
    """
    mark = getattr(err, "problem_mark", None)
    line = f":{mark.line + 1}" if mark is not None else ""
    problem = getattr(err, "problem", None) or str(err).strip()
    first = problem.splitlines()[0] if problem else type(err).__name__
    return f"{source}{line}: invalid YAML: {first}"
