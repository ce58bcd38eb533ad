"""Persistence of the policy's learned state: JSON written on shutdown, read on start.

The file holds ``{"format": STATE_FORMAT, "policy": NAME, "saved-at": UNIX_TIME, "state":
policy.state()}``; a learning policy's state is its statistics' additive totals by name
(:class:`~perllm.policies.base.StatisticsPolicy`). It is written atomically (a temporary file
renamed over the old one), so a crash while saving never leaves a truncated file. A state saved
by a different policy is ignored with a warning; a file of another format, or whose state the
policy refuses, is refused with one line.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

from perllm.errors import InputError
from perllm.policies.base import Policy, PolicyBase

__all__ = ["json_ready", "load_state", "save_state"]

log = logging.getLogger(__name__)


def json_ready(value: Any) -> Any:
    """Replace non-finite floats (not valid JSON) by ``None``, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    return value


STATE_FORMAT = 2
"""The version of the state file's layout (2: statistics as named totals); a file of another
version is refused at load."""


def save_state(policy: Policy, path: str | Path) -> None:
    """Write ``policy.state()`` to ``path`` atomically."""
    file = Path(path)
    document = {
        "format": STATE_FORMAT,
        "policy": policy.name,
        "saved-at": time.time(),
        "state": json_ready(policy.state()),
    }
    tmp = file.with_name(f"{file.name}.{os.getpid()}.tmp")  # workers may save at once
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text(json.dumps(document, allow_nan=False))
    os.replace(tmp, file)
    log.info("policy state saved to %s", file)


def load_state(policy: Policy, path: str | Path, n_servers: int | None = None) -> bool:
    """Restore ``policy`` from ``path`` if the file exists; returns whether it did. With
    ``n_servers`` (the cluster's backends), a :class:`~perllm.policies.base.PolicyBase` applies
    the state now, for that many servers, rather than at its first decision.

    Raises
    ------
    InputError
        If the file exists but is not a state file (unreadable or not JSON), was written in
        another format, or holds a state the policy refuses (of another shape, or with
        ``n_servers``, sized for another cluster).
    """
    file = Path(path)
    if not file.exists():
        return False
    try:
        document = json.loads(file.read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"state-file {str(file)!r}: cannot read policy state: {err}") from None
    if not isinstance(document, dict) or not isinstance(document.get("state"), dict):
        raise InputError(f"state-file {str(file)!r}: not a perllm policy state file")
    if document.get("format") != STATE_FORMAT:
        raise InputError(
            f"state-file {str(file)!r}: format {document.get('format')!r}, this perllm reads "
            f"format {STATE_FORMAT}: delete the file to start learning afresh"
        )
    if document.get("policy") != policy.name:
        log.warning(
            "state file %s was saved by policy %r, not %r: ignored",
            file,
            document.get("policy"),
            policy.name,
        )
        return False
    try:
        policy.restore(document["state"])
        if n_servers is not None and isinstance(policy, PolicyBase):
            policy.begin(n_servers)
    except ValueError as err:
        raise InputError(f"state-file {str(file)!r}: {err}") from None
    log.info("policy state restored from %s", file)
    return True
