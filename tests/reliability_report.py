"""Fault-test outcomes for scripts/bench_reliability.py: one JSON line per fault when asked.

A test calls ``record(...)`` after its assertions; with ``LAKEML_RELIABILITY_REPORT=<file>`` set (the
benchmark sets it) the line is appended there, otherwise nothing happens.
"""

from __future__ import annotations

import json
import os

REPORT_ENV = "LAKEML_RELIABILITY_REPORT"


def record(fault: str, runs: int, rows_lost: int, rows_duplicated: int, outcome: str) -> None:
    path = os.environ.get(REPORT_ENV)
    if not path:
        return
    line = {
        "fault": fault,
        "runs": runs,
        "rows_lost": rows_lost,
        "rows_duplicated": rows_duplicated,
        "outcome": outcome,
    }
    with open(path, "a") as out:
        out.write(json.dumps(line) + "\n")
