"""Export records to CSV and summaries to JSON."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from perllm.metrics.recorder import COLUMNS, Recorder

REASON_COLUMN = "refused_reason"


def write_records_csv(rec: Recorder, path: Path) -> None:
    """One row per request in :data:`COLUMNS`, plus ``refused_reason`` (empty for a request
    that was not refused) when the run refused a request for a reason, e.g. its length."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        columns = [rec.columns[name] for name in COLUMNS]
        if not rec.reasons:
            writer.writerow(COLUMNS)
            writer.writerows(zip(*columns, strict=True))
            return
        reasons = [rec.reasons.get(int(i), "") for i in rec.columns["id"]]
        writer.writerow((*COLUMNS, REASON_COLUMN))
        writer.writerows(zip(*columns, reasons, strict=True))


def write_json(data: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_regret_csv(
    times: npt.NDArray[np.float64], regret: npt.NDArray[np.float64], path: Path
) -> None:
    """Cumulative regret against the oracle, one row per decision, in arrival order."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(("arrival_s", "cumulative_regret"))
        writer.writerows(zip(times.tolist(), regret.tolist(), strict=True))
