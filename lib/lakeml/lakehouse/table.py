"""DeltaTableRef: one table API over two engines (delta-rs and the native delta-spark connector).

Shared rules live here (schema checks, predicate checks, merge-source checks, protected versions,
incremental reads from the log); the engines do the reading, writing and committing.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pyarrow import fs as pafs
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lakeml.config import LakehouseConfig
from lakeml.errors import ConcurrentModificationError, TableError
from lakeml.lakehouse import predicates
from lakeml.lakehouse.delta_rs import CommitOutcome, DeltaRsEngine
from lakeml.lakehouse.files import FileEntry, entry_from_log_add, scan_files
from lakeml.lakehouse.log import read_commits
from lakeml.lakehouse.schema import conform, duplicate_key_error

Txn = tuple[str, int]
WhenMatched = Literal["update", "ignore", "delete"]
WhenNotMatched = Literal["insert", "ignore"]
PROTECTION_DIR = "_lakeml/protected"


class DeltaTableRef:
    """A Delta table at ``uri`` and the operations jobs may run on it."""

    def __init__(
        self, spark: SparkSession, uri: str, settings: LakehouseConfig, engine: str = "delta-rs"
    ) -> None:
        self.spark = spark
        self.uri = uri.rstrip("/")
        self.settings = settings
        self.engine_name = engine
        if engine == "delta-rs":
            self._engine: Any = DeltaRsEngine(spark, self.uri, settings)
        elif engine == "delta-spark":
            from lakeml.lakehouse.delta_spark import DeltaSparkEngine

            self._engine = DeltaSparkEngine(spark, self.uri, settings)
        else:
            raise TableError(f"unknown table engine '{engine}' (delta-rs or delta-spark)")

    def __repr__(self) -> str:
        return f"DeltaTableRef({self.uri!r}, engine={self.engine_name!r})"

    # ------------------------------------------------------------------ lifecycle
    def exists(self) -> bool:
        return self._engine.exists()

    def create(
        self,
        schema: T.StructType,
        partition_by: Sequence[str] = (),
        properties: Mapping[str, str] | None = None,
        exist_ok: bool = True,
    ) -> DeltaTableRef:
        """Create the table; an existing table must have the same schema and partitioning."""
        unknown = [c for c in partition_by if c not in schema.fieldNames()]
        if unknown:
            raise TableError(f"partition columns {unknown} are not in the schema of {self.uri}")
        if self.exists():
            if not exist_ok:
                raise TableError(f"a Delta table already exists at {self.uri}")
            have, parts = self.schema(), self.partition_columns()
            if _strip_metadata(have) != _strip_metadata(schema) or list(parts) != list(partition_by):
                raise TableError(
                    f"table {self.uri} exists with schema {have.simpleString()} partitioned by {parts}, "
                    f"not {schema.simpleString()} partitioned by {list(partition_by)}"
                )
            return self
        self._engine.create(schema, list(partition_by), dict(properties or {}))
        return self

    def version(self) -> int:
        return self._engine.version()

    def schema(self) -> T.StructType:
        return self._engine.schema()

    def partition_columns(self) -> list[str]:
        return self._engine.partition_columns()

    def history(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Newest first: version, timestamp, operation and its parameters per commit."""
        return self._engine.history(limit)

    # ------------------------------------------------------------------ reads
    def read(
        self,
        version: int | None = None,
        timestamp: dt.datetime | None = None,
        where: predicates.Filters = (),
    ) -> DataFrame:
        """The table (at ``version`` or ``timestamp``), pruned by partition values and file statistics."""
        if version is not None and timestamp is not None:
            raise TableError("read() takes version or timestamp, not both")
        filters = predicates.validate(where, self.schema())
        return self._engine.read(version=version, timestamp=timestamp, filters=filters)

    def files(self, where: predicates.Filters = (), version: int | None = None) -> list[FileEntry]:
        """The data files a read with ``where`` scans, after partition and statistics pruning (from the log)."""
        filters = predicates.validate(where, self.schema())
        return DeltaRsEngine(self.spark, self.uri, self.settings).files_for(filters, version)

    def appended_files(self, version: int, until: int | None = None) -> list[FileEntry]:
        """Data files added after ``version`` up to ``until`` (default: now); the range must be append-only."""
        _check_plain_parquet(self.uri)
        latest = self.version() if until is None else until
        if version > latest:
            raise TableError(
                f"changes since version {version} requested, but {self.uri} is at version {latest}"
            )
        schema, partition_by = self.schema(), self.partition_columns()
        adds = []
        for commit in read_commits(self.uri, version + 1, latest):
            if any(r.get("dataChange", True) for r in commit.removes):
                raise TableError(
                    f"version {commit.version} of {self.uri} deleted or rewrote rows; changes_since reads "
                    "append-only history (use read(version=...) and compare instead)"
                )
            adds += [a for a in commit.adds if a.get("dataChange", True)]
        return [entry_from_log_add(a, schema, partition_by) for a in adds]

    def changes_since(self, version: int, until: int | None = None) -> DataFrame:
        """Rows appended after ``version`` up to ``until`` (default: now); the table must be append-only there."""
        entries = self.appended_files(version, until)
        return scan_files(self.spark, self.uri, entries, self.schema(), self.partition_columns())

    def transaction_version(self, app_id: str) -> int | None:
        """The last txn version committed by ``app_id`` (e.g. the source version a job processed up to)."""
        return self._engine.transaction_version(app_id)

    # ------------------------------------------------------------------ writes
    def append(self, df: DataFrame, txn: Txn | None = None, merge_schema: bool = False) -> CommitOutcome:
        """Add rows; with ``txn=(app_id, version)`` a second commit of the same pair is a no-op."""
        _check_txn(txn)
        conformed, added = conform(df, self.schema(), self.partition_columns(), merge_schema)
        return self._engine.append(conformed, txn, added)

    def append_rows(self, rows: Sequence[Sequence[Any]], txn: Txn | None = None) -> CommitOutcome:
        """Add a few rows built on the driver, in the table's column order; ``txn`` as for append.

        For per-batch records (run accounting, check results): the delta-rs engine writes them in
        this process, without a Spark job.
        """
        _check_txn(txn)
        return self._engine.append_rows(rows, txn)

    def overwrite_where(
        self, df: DataFrame, where: predicates.Filters, txn: Txn | None = None
    ) -> CommitOutcome:
        """Atomically replace the rows matching a partition predicate with ``df`` (e.g. rerun one date)."""
        _check_txn(txn)
        partition_by = self.partition_columns()
        filters = predicates.validate(where, self.schema())
        if not filters:
            raise TableError("overwrite_where needs a predicate; refusing to replace the whole table")
        outside = [c for c, _, _ in filters if c not in partition_by]
        if outside:
            raise TableError(
                f"overwrite_where predicates may use partition columns {partition_by} only, not {outside}"
            )
        conformed, _ = conform(df, self.schema(), partition_by, merge_schema=False)
        stray = conformed.where(~F.coalesce(predicates.to_column(filters), F.lit(False))).limit(1).count()
        if stray:
            raise TableError(
                f"overwrite_where: data has rows outside {predicates.to_sql(filters)}; nothing was written"
            )
        return self._retrying(
            "overwrite_where", lambda: self._engine.overwrite_where(conformed, filters, txn)
        )

    def merge(
        self,
        source: DataFrame,
        keys: Sequence[str],
        when_matched: WhenMatched = "update",
        when_not_matched: WhenNotMatched = "insert",
        txn: Txn | None = None,
        deduplicate_by: Sequence[str] | None = None,
    ) -> CommitOutcome:
        """Upsert ``source`` by ``keys`` (copy-on-write: only files that can hold a key are rewritten).

        Duplicate keys in the source are an error, unless ``deduplicate_by`` names columns whose
        greatest value wins (ties broken by every other column, so the choice is deterministic).
        """
        _check_txn(txn)
        if when_matched not in ("update", "ignore", "delete") or when_not_matched not in ("insert", "ignore"):
            raise TableError(
                f"merge: unsupported clauses when_matched={when_matched!r} when_not_matched={when_not_matched!r}"
            )
        keys = list(keys)
        schema = self.schema()
        missing = [k for k in keys if k not in schema.fieldNames() or k not in source.columns]
        if not keys or missing:
            raise TableError(f"merge keys {missing or keys} must be columns of both the table and the source")
        absent = [c for c in schema.fieldNames() if c not in source.columns]
        if absent:
            raise TableError(f"merge source lacks table columns {absent} (a merge replaces whole rows)")
        source, _ = conform(source, schema, self.partition_columns(), merge_schema=False)
        source = deduplicate(source, keys, deduplicate_by) if deduplicate_by else source
        # The delta-rs engine finds duplicates in the same pass that scopes the merge.
        if not getattr(self._engine, "checks_duplicate_keys", False):
            error = duplicate_key_error(source, keys)
            if error is not None:
                raise error
        return self._retrying(
            "merge", lambda: self._engine.merge(source, keys, when_matched, when_not_matched, txn)
        )

    def optimize(
        self, target_file_size_mb: int | None = None, where: predicates.Filters = ()
    ) -> CommitOutcome:
        """Compact small files (per partition) into files of about the target size; data is unchanged."""
        filters = predicates.validate(where, self.schema())
        outside = [c for c, _, _ in filters if c not in self.partition_columns()]
        if outside:
            raise TableError(f"optimize predicates may use partition columns only, not {outside}")
        return self._engine.optimize(target_file_size_mb or self.settings.target_file_size_mb, filters)

    def vacuum(
        self, retention_hours: int | None = None, dry_run: bool = False, enforce_retention: bool = True
    ) -> list[str]:
        """Delete files no version within the retention (nor any protected version) needs; returns them."""
        hours = self.settings.vacuum_retention_hours if retention_hours is None else retention_hours
        return self._engine.vacuum(hours, dry_run, enforce_retention, sorted(self.protected_versions()))

    # ------------------------------------------------------------------ protection
    def protect(self, version: int, reason: str) -> None:
        """Keep every file of ``version`` through vacuums (e.g. a registered model's training data)."""
        if version < 0 or version > self.version():
            raise TableError(f"cannot protect version {version} of {self.uri}: latest is {self.version()}")
        filesystem, root = pafs.FileSystem.from_uri(self.uri)
        folder = f"{root}/{PROTECTION_DIR}"
        filesystem.create_dir(folder, recursive=True)
        with filesystem.open_output_stream(f"{folder}/{version:020d}--{_slug(reason)}.json") as out:
            out.write(json.dumps({"version": version, "reason": reason, "at": time.time()}).encode())

    def unprotect(self, version: int, reason: str) -> None:
        filesystem, root = pafs.FileSystem.from_uri(self.uri)
        with contextlib.suppress(FileNotFoundError):
            filesystem.delete_file(f"{root}/{PROTECTION_DIR}/{version:020d}--{_slug(reason)}.json")

    def protected_versions(self) -> dict[int, list[str]]:
        filesystem, root = pafs.FileSystem.from_uri(self.uri)
        out: dict[int, list[str]] = {}
        selector = pafs.FileSelector(f"{root}/{PROTECTION_DIR}", allow_not_found=True)
        for info in filesystem.get_file_info(selector):
            if info.is_file and info.base_name.endswith(".json"):
                version, _, reason = info.base_name[: -len(".json")].partition("--")
                out.setdefault(int(version), []).append(reason)
        return out

    # ------------------------------------------------------------------ internals
    def _retrying(self, operation: str, attempt: Any) -> CommitOutcome:
        """Re-run a whole read-modify-write operation after a conflict, a bounded number of times."""
        for tries in range(self.settings.max_operation_retries + 1):
            try:
                return attempt()
            except ConcurrentModificationError:
                if tries == self.settings.max_operation_retries:
                    raise
        raise AssertionError("unreachable")


def deduplicate(df: DataFrame, keys: Sequence[str], order_by: Sequence[str]) -> DataFrame:
    """One row per key: the greatest ``order_by`` wins, ties broken by all remaining columns."""
    from pyspark.sql import Window

    tie_breakers = [c for c in df.columns if c not in keys and c not in order_by]
    order = [F.col(f"`{c}`").desc_nulls_last() for c in order_by] + [
        F.col(f"`{c}`").asc_nulls_last() for c in tie_breakers
    ]
    window = Window.partitionBy(*[F.col(f"`{k}`") for k in keys]).orderBy(*order)
    return df.withColumn("__rank", F.row_number().over(window)).where("__rank = 1").drop("__rank")


def _check_plain_parquet(uri: str) -> None:
    """Refuse tables whose data files a plain Parquet scan would misread."""
    from deltalake import DeltaTable

    features = set(DeltaTable(uri, without_files=True).protocol().reader_features or [])
    blocked = features & {"deletionVectors", "columnMapping"}
    if blocked:
        raise TableError(f"changes_since cannot read {uri}: it uses {', '.join(sorted(blocked))}")


def _check_txn(txn: Txn | None) -> None:
    if txn is None:
        return
    if not (isinstance(txn, tuple) and len(txn) == 2 and isinstance(txn[0], str) and isinstance(txn[1], int)):
        raise TableError(f"txn must be (app_id: str, version: int), got {txn!r}")


def _strip_metadata(schema: T.StructType) -> list[tuple[str, str]]:
    # Names and types only: engines differ in how they report nullability of a read-back schema.
    return [(f.name, f.dataType.simpleString()) for f in schema.fields]


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:100] or "protected"
