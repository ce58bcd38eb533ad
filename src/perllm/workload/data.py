"""Where the trace files shipped with the repository are: its ``data/traces/`` folder.

The traces are not part of the wheel (they are data, with licences of their own: see ``NOTICE``).
A scenario names one as ``traces:FILE`` (e.g. ``traces:AzureLLMInferenceTrace_conv.csv``); the
folder is ``$PERLLM_TRACES_DIR`` when that is set, else ``data/traces/`` of the source checkout
this package runs from (an editable install, or ``src/`` on the path).
"""

from __future__ import annotations

import os
from pathlib import Path

from perllm.errors import InputError

__all__ = ["TRACES_ENV", "TRACES_PREFIX", "resolve_trace_path", "traces_dir"]

TRACES_PREFIX = "traces:"
TRACES_ENV = "PERLLM_TRACES_DIR"
# src/perllm/workload/data.py -> the repository root is three folders up from this one.
_CHECKOUT_TRACES = Path(__file__).resolve().parents[3] / "data" / "traces"


def traces_dir() -> Path:
    """The folder holding the shipped traces.

    Raises
    ------
    InputError
        ``$PERLLM_TRACES_DIR`` names no folder, or it is unset and this package does not run
        from a source checkout with ``data/traces/``.
    """
    configured = os.environ.get(TRACES_ENV)
    if configured:
        folder = Path(configured)
        if not folder.is_dir():
            raise InputError(f"{TRACES_ENV}: not a folder: {configured}")
        return folder
    if _CHECKOUT_TRACES.is_dir():
        return _CHECKOUT_TRACES
    raise InputError(
        f"the shipped traces are not here ({_CHECKOUT_TRACES} is missing): run from a source "
        f"checkout, or set {TRACES_ENV} to a folder holding them"
    )


def resolve_trace_path(path: str) -> str:
    """``traces:FILE`` as a path in :func:`traces_dir`; any other path unchanged."""
    if not path.startswith(TRACES_PREFIX):
        return path
    name = path.removeprefix(TRACES_PREFIX)
    if not name or Path(name).name != name:
        raise InputError(f"{path}: expected '{TRACES_PREFIX}FILE', a file name without folders")
    return str(traces_dir() / name)
