"""Which run wrote a table version: job, run id and run date carried in every commit's commitInfo.

Both engines write it as the commit's ``userMetadata`` (a JSON object), the one commitInfo field
delta-spark lets a writer set and delta-rs copies from ``CommitProperties.custom_metadata``; so
``history()`` answers "which run wrote this version" the same way whichever engine committed.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
from collections.abc import Iterator
from datetime import date
from typing import Any

# Set by the job runner for the length of one job; commits outside a job carry no lineage.
_CURRENT: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "lakeml_lineage", default=None
)


@contextlib.contextmanager
def commit_lineage(job: str, run_id: str, run_date: date) -> Iterator[dict[str, str]]:
    """Every commit made inside the block records ``job``, ``run_id`` and ``run_date``."""
    lineage = {"job": job, "run_id": run_id, "run_date": run_date.isoformat()}
    token = _CURRENT.set(lineage)
    try:
        yield lineage
    finally:
        _CURRENT.reset(token)


def current() -> dict[str, str]:
    """The lineage of the running job ({} outside a job)."""
    return dict(_CURRENT.get() or {})


def user_metadata(tag: str | None = None) -> str | None:
    """The ``userMetadata`` of a commit: the running job's lineage plus the engine's own ``tag``."""
    content: dict[str, str] = current()
    if tag is not None:
        content["tag"] = tag
    return json.dumps(content, sort_keys=True) if content else None


def _metadata(info: dict[str, Any]) -> dict[str, Any]:
    text = info.get("userMetadata")
    if not isinstance(text, str) or not text.startswith("{"):
        return {}
    try:
        parsed = json.loads(text)
    except ValueError:  # a user's own userMetadata that is not ours
        return {}
    return parsed if isinstance(parsed, dict) else {}


def parse(info: dict[str, Any]) -> dict[str, str]:
    """Job, run id and run date of a commitInfo or history entry ({} for a commit made outside a job)."""
    meta = _metadata(info)
    return {k: str(meta[k]) for k in ("job", "run_id", "run_date") if k in meta}
