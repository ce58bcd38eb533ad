"""Export records to CSV and summaries to JSON."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from perllm.metrics.recorder import COLUMNS, Recorder


def write_records_csv(rec: Recorder, path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        writer.writerows(zip(*(rec.columns[name] for name in COLUMNS), strict=True))


def write_json(data: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
