"""Structured log lines: one JSON object (or key=value text) per event on stderr."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

_LOGGER = logging.getLogger("lakeml")
_FORMAT = {"value": "json"}


def configure(log_format: str = "json") -> None:
    """Send lakeml's lines to stderr in ``log_format`` (json | text); safe to call repeatedly."""
    _FORMAT["value"] = log_format
    if not any(getattr(h, "_lakeml", False) for h in _LOGGER.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._lakeml = True  # type: ignore[attr-defined]
        _LOGGER.addHandler(handler)
    _LOGGER.setLevel(logging.INFO)
    _LOGGER.propagate = False


def event(name: str, **fields: Any) -> dict[str, Any]:
    """Log one structured line ``{"event": name, "ts": ..., **fields}`` and return it."""
    record = {"event": name, "ts": datetime.now(UTC).isoformat(timespec="milliseconds"), **fields}
    if _FORMAT["value"] == "json":
        line = json.dumps(record, default=str, sort_keys=False)
    else:
        line = " ".join(f"{k}={v}" for k, v in record.items())
    _LOGGER.info(line)
    return record
