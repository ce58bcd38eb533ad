"""A sweep's finished runs on disk, one JSON line each, so that an interrupted sweep can resume.

The first line is the sweep's *header* (its settings: a resumed sweep must have the same); each
further line is ``{"key": KEY, "result": RESULT}``, appended and flushed as a run finishes. A
result that is a row (:class:`~perllm.experiments.rows.Row`) is written as its JSON object and
read back by the sweep's ``decode``; JSON keeps every float exactly (shortest round-trip repr), so
rows read back from the checkpoint equal the rows the runs returned and a resumed sweep writes
the same bytes as an uninterrupted one. Keys are nested tuples of JSON scalars (lists on disk).
A last line cut short by a crash is dropped on reading.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, Any

from perllm.errors import InputError
from perllm.experiments.executors import ExecutorSpec, open_executor
from perllm.experiments.rows import Row

Call = tuple[Any, Callable[..., Any], tuple[Any, ...]]
"""A run of a sweep: ``(key, function, arguments)``."""

__all__ = ["FILENAME", "Checkpoint", "saved_runs"]

FILENAME = "checkpoint.jsonl"


Decode = Callable[[Any, Any], Any]
"""How a sweep reads a result back from its JSON: ``decode(key, data)``."""


def _freeze(value: Any) -> Any:
    """JSON lists back to the tuples they were written from."""
    if isinstance(value, list):
        return tuple(_freeze(item) for item in value)
    return value


def _as_written(key: Any, data: Any) -> Any:
    return data


class Checkpoint:
    """The finished runs of one sweep in ``path``; :attr:`results` holds those already there,
    each read back by ``decode`` (by default, the JSON data as it is)."""

    def __init__(
        self,
        path: Path,
        header: Mapping[str, object],
        *,
        resume: bool,
        decode: Decode = _as_written,
    ) -> None:
        self.path = path
        self.header = json.loads(json.dumps(header))
        self._decode = decode
        self.results: dict[Any, Any] = self._read() if resume and path.exists() else {}
        self.resumed = len(self.results)
        self._handle: IO[str] | None = None
        # (Re)written whole, so that a torn last line is gone before lines are appended.
        temporary = path.with_name(path.name + ".tmp")
        with temporary.open("w") as handle:
            handle.write(json.dumps({"header": self.header}) + "\n")
            for key, result in self.results.items():
                handle.write(_line(key, result))
        os.replace(temporary, path)

    def _read(self) -> dict[Any, Any]:
        lines = self.path.read_text().split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        entries = []
        for number, line in enumerate(lines, 1):
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                if number == len(lines):
                    break  # the line being written when the sweep was killed
                message = f"{self.path}:{number}: not a JSON line; delete the file to start over"
                raise InputError(message) from None
        if not entries or entries[0].get("header") != self.header:
            raise InputError(
                f"--resume: {self.path} is from a different sweep (other settings); "
                "run without --resume to start over, or choose another --out"
            )
        results = {}
        for entry in entries[1:]:
            key = _freeze(entry["key"])
            results[key] = self._decode(key, entry["result"])
        return results

    def record(self, key: Any, result: Any) -> None:
        """Append one finished run and flush it to the file."""
        if self._handle is None:
            self._handle = self.path.open("a")
        self._handle.write(_line(key, result))
        self._handle.flush()
        self.results[key] = result

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _json_of(value: object) -> object:
    """A row as its JSON object (``json.dumps``'s hook for what it cannot write itself)."""
    if isinstance(value, Row):
        return value.to_json()
    raise TypeError(f"a sweep's result must be JSON data or a row, not {type(value).__name__}")


def _line(key: Any, result: Any) -> str:
    return json.dumps({"key": key, "result": result}, default=_json_of) + "\n"


def saved_runs(path: Path) -> int:
    """How many finished runs the checkpoint at ``path`` holds (complete lines after the header)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return 0
    return max(text.count("\n") - 1, 0)


def run_saving(
    spec: ExecutorSpec,
    todo: Iterable[Call],
    saved: Checkpoint,
    advance: Callable[[int], None],
    follow: Callable[[Any, Any], Iterable[Call]] | None = None,
) -> None:
    """Run ``todo`` on the executor of ``spec``, recording each result in ``saved`` as it
    finishes and calling ``advance(runs saved so far)``; ``follow(key, result)`` may add runs
    that a finished one makes possible."""
    advance(len(saved.results))
    todo = list(todo)
    if not todo:
        return
    with open_executor(spec) as pool:
        for key, function, arguments in todo:
            pool.submit(key, function, *arguments)
        for key, result in pool.completed():
            saved.record(key, result)
            advance(len(saved.results))
            for more, function, arguments in follow(key, result) if follow else ():
                pool.submit(more, function, *arguments)
