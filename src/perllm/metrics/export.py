"""Export records to CSV and summaries to JSON."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import numpy.typing as npt

from perllm.metrics.recorder import COLUMNS, Recorder

REASON_COLUMN = "refused_reason"
CACHED_COLUMN = "cached_tokens"


def write_records_csv(rec: Recorder, path: Path) -> None:
    """One row per request in :data:`COLUMNS`, plus ``refused_reason`` (empty for a request
    that was not refused) when the run refused a request for a reason, e.g. its length, and
    ``cached_tokens`` (the prompt tokens its server took from its prefix cache) when a server
    took any."""
    header = list(COLUMNS)
    columns = [rec.columns[name] for name in COLUMNS]
    ids = [int(i) for i in rec.columns["id"]]
    if rec.reasons:
        header.append(REASON_COLUMN)
        columns.append([rec.reasons.get(i, "") for i in ids])
    if rec.cached_tokens:
        header.append(CACHED_COLUMN)
        columns.append([rec.cached_tokens.get(i, 0) for i in ids])
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(zip(*columns, strict=True))


def write_json(data: dict[str, object], path: Path) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_regret_csv(
    times: npt.NDArray[np.float64], regret: npt.NDArray[np.float64], path: Path
) -> None:
    """Cumulative regret against the oracle, one row per decision, in arrival order."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(("arrival_s", "cumulative_regret"))
        writer.writerows(zip(times.tolist(), regret.tolist(), strict=True))
