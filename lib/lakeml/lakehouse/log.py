"""Reading the Delta transaction log's commit files (for conflict checks and incremental reads).

Only per-commit metadata is read here: add/remove/metaData/protocol/txn actions, never data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from pyarrow import fs as pafs

from lakeml.errors import TableError


@dataclass
class Commit:
    """The actions of one committed version."""

    version: int
    adds: list[dict[str, Any]] = field(default_factory=list)
    removes: list[dict[str, Any]] = field(default_factory=list)
    metadata_changed: bool = False
    protocol_changed: bool = False
    txns: dict[str, int] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


def read_commit(root_uri: str, version: int) -> Commit:
    """Parse ``_delta_log/<version>.json``; a missing file is a TableError naming the version."""
    filesystem, root = pafs.FileSystem.from_uri(root_uri)
    path = f"{root.rstrip('/')}/_delta_log/{version:020d}.json"
    try:
        with filesystem.open_input_stream(path) as stream:
            text = stream.read().decode("utf-8")
    except (FileNotFoundError, OSError) as exc:
        raise TableError(
            f"commit {version} of {root_uri} is no longer in the log (cleaned up?); cannot read changes from "
            "it"
        ) from exc
    commit = Commit(version)
    for line in text.splitlines():
        if not line.strip():
            continue
        action = json.loads(line)
        if "add" in action:
            add = action["add"]
            add["path"] = unquote(add["path"])
            commit.adds.append(add)
        elif "remove" in action:
            remove = action["remove"]
            remove["path"] = unquote(remove["path"])
            commit.removes.append(remove)
        elif "metaData" in action:
            commit.metadata_changed = True
        elif "protocol" in action:
            commit.protocol_changed = True
        elif "txn" in action:
            commit.txns[action["txn"]["appId"]] = int(action["txn"]["version"])
        elif "commitInfo" in action:
            commit.info = action["commitInfo"]
    return commit


def read_commits(root_uri: str, first: int, last: int) -> list[Commit]:
    """Commits ``first..last`` inclusive (empty when first > last)."""
    return [read_commit(root_uri, v) for v in range(first, last + 1)]


def parse_stats(stats: str | None) -> dict[str, Any]:
    if not stats:
        return {}
    try:
        return json.loads(stats)
    except json.JSONDecodeError:
        return {}
