"""The table engine contract: what ``DeltaTableRef`` asks of the engine that reads, writes and commits.

Two engines implement it: ``delta_rs`` (Spark tasks write Parquet, the ``deltalake`` package commits)
and ``delta_spark`` (the native io.delta connector). The table layer applies the shared rules
(schema, predicate and merge-source checks, retries, fault points) before it calls an engine.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pyspark.sql import DataFrame
from pyspark.sql import types as T

from lakeml.lakehouse import predicates
from lakeml.lakehouse.files import FileEntry

Txn = tuple[str, int]
WhenMatched = Literal["update", "ignore", "delete"]
WhenNotMatched = Literal["insert", "ignore"]


def committed(recorded: int | None, version: int) -> bool:
    """Whether a txn version recorded in the log covers ``version`` (None: the app never committed)."""
    return recorded is not None and recorded >= version


@dataclass(frozen=True)
class CommitOutcome:
    """What a write did: the version it committed (None for an idempotent no-op) and file counts."""

    version: int | None
    files_added: int = 0
    files_removed: int = 0
    rows_added: int = 0

    @property
    def noop(self) -> bool:
        return self.version is None


@dataclass(frozen=True)
class StagedWrite:
    """Rows an engine wrote for one table and has not committed: ``commit(txn)`` or ``discard()``."""

    rows: int
    commit: Callable[[Txn | None], CommitOutcome]
    discard: Callable[[], None]


class TableEngine(Protocol):
    """One Delta table at a URI, as an engine reads, writes and commits it."""

    @property
    def name(self) -> str: ...

    @property
    def checks_duplicate_keys(self) -> bool:
        """Whether ``merge`` finds duplicate source keys itself (else the table layer checks first)."""
        ...

    def exists(self) -> bool: ...

    def create(
        self, schema: T.StructType, partition_by: Sequence[str], properties: dict[str, str]
    ) -> None: ...

    def version(self) -> int: ...

    def schema(self) -> T.StructType: ...

    def partition_columns(self) -> list[str]: ...

    def history(self, limit: int | None = None) -> list[dict[str, Any]]: ...

    def transaction_version(self, app_id: str) -> int | None: ...

    def read(
        self,
        version: int | None = None,
        timestamp: dt.datetime | None = None,
        filters: predicates.Filters = (),
    ) -> DataFrame: ...

    def files(self, filters: predicates.Filters = (), version: int | None = None) -> list[FileEntry]:
        """The data files a read with ``filters`` scans, after partition and statistics pruning."""
        ...

    def append(self, df: DataFrame, txn: Txn | None, added: Sequence[T.StructField]) -> CommitOutcome: ...

    def append_rows(self, rows: Sequence[Sequence[Any]], txn: Txn | None) -> CommitOutcome: ...

    def overwrite_where(
        self, df: DataFrame, filters: predicates.Filters, txn: Txn | None, open_files: int | None = None
    ) -> CommitOutcome: ...

    def merge(
        self,
        source: DataFrame,
        keys: Sequence[str],
        when_matched: WhenMatched,
        when_not_matched: WhenNotMatched,
        txn: Txn | None,
    ) -> CommitOutcome: ...

    def optimize(self, target_file_size_mb: int, filters: predicates.Filters) -> CommitOutcome: ...

    def vacuum(
        self, retention_hours: int, dry_run: bool, enforce_retention: bool, keep_versions: list[int]
    ) -> list[str]: ...

    def stage_split(
        self, split: DataFrame, route: str, targets: Mapping[str, TableEngine]
    ) -> dict[str, StagedWrite] | None:
        """Write each target's share of ``split`` (column ``route`` names the target, one struct column
        per target holds its row) in one pass, uncommitted; None: this engine has no such writer."""
        ...
