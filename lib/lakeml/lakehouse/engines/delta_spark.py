"""The delta-spark engine: the native io.delta connector (Databricks, EMR, or $LAKEML_DELTA_JARS).

Same operations and semantics as the delta-rs engine; Delta's own optimistic concurrency decides
conflicts, and its exceptions are translated to ConcurrentModificationError.

On a local path, Delta's log store (HDFSLogStore) writes a commit as "exists? -> write a temp file ->
rename", and the local file system's rename replaces an existing file: two processes committing the
same version at once can both "succeed", one commit silently overwriting the other (Delta makes the
sequence atomic within one JVM only). So every write to a local table takes an exclusive lock
file (flock) per table for its whole operation: writers in other processes on this machine wait,
then commit against the newer version. Object stores and HDFS keep Delta's own concurrency.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import functools
import hashlib
import os
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import unquote, urlparse

from deltalake import DeltaTable as RsTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

from lakeml.config import LakehouseConfig
from lakeml.errors import ConcurrentModificationError, TableError
from lakeml.lakehouse import lineage, predicates
from lakeml.lakehouse.engines.delta_rs.engine import lineage_properties
from lakeml.lakehouse.engines.protocol import CommitOutcome, StagedWrite, TableEngine, Txn, committed
from lakeml.lakehouse.files import FileEntry, entry_from_log_add
from lakeml.lakehouse.log import parse_stats, read_commit
from lakeml.session import jvm, session_settings

_TXN_APP = "spark.databricks.delta.write.txnAppId"
_TXN_VERSION = "spark.databricks.delta.write.txnVersion"
_MAX_FILE_SIZE = "spark.databricks.delta.optimize.maxFileSize"
_USER_METADATA = "spark.databricks.delta.commitInfo.userMetadata"
_MAX_OPEN_WRITERS = "spark.sql.maxConcurrentOutputFileWriters"
_PROTOCOL_ERRORS = ("DELTA_UNSUPPORTED_FEATURES", "DELTA_INVALID_PROTOCOL_VERSION", "InvalidProtocolVersion")


def _serialized(method: Callable[..., Any]) -> Callable[..., Any]:
    """Run a writing method of the engine under the table's local write lock."""

    @functools.wraps(method)
    def locked(self: DeltaSparkEngine, *args: Any, **kwargs: Any) -> Any:
        with local_write_lock(self.uri):
            return method(self, *args, **kwargs)

    return locked


class DeltaSparkEngine:
    """Table operations through ``format("delta")`` and ``delta.tables.DeltaTable``."""

    name = "delta-spark"
    checks_duplicate_keys = False

    def __init__(self, spark: SparkSession, uri: str, settings: LakehouseConfig) -> None:
        self.spark = spark
        self.uri = uri.rstrip("/")
        self.settings = settings

    def _delta(self) -> Any:
        from delta.tables import DeltaTable

        if not DeltaTable.isDeltaTable(self.spark, self.uri):
            raise TableError(f"no Delta table at {self.uri}")
        return DeltaTable.forPath(self.spark, self.uri)

    def exists(self) -> bool:
        from delta.tables import DeltaTable

        return bool(DeltaTable.isDeltaTable(self.spark, self.uri))

    @_serialized
    def create(self, schema: T.StructType, partition_by: Sequence[str], properties: dict[str, str]) -> None:
        from delta.tables import DeltaTable

        builder = DeltaTable.create(self.spark).location(self.uri).addColumns(schema)
        if partition_by:
            builder = builder.partitionedBy(*partition_by)
        for key, value in properties.items():
            builder = builder.property(key, value)
        user_metadata = lineage.user_metadata()
        with session_settings(self.spark, {_USER_METADATA: user_metadata} if user_metadata else {}):
            builder.execute()

    def version(self) -> int:
        return int(self._delta().history(1).select("version").first()[0])

    def schema(self) -> T.StructType:
        return self._delta().toDF().schema

    def partition_columns(self) -> list[str]:
        return list(self._delta().detail().select("partitionColumns").first()[0])

    def history(self, limit: int | None = None) -> list[dict[str, Any]]:
        delta = self._delta()
        rows = (delta.history(limit) if limit else delta.history()).collect()  # one row per commit
        out = []
        for r in rows:
            item = r.asDict(recursive=True)
            stamp = item.get("timestamp")
            if isinstance(stamp, dt.datetime):
                item["timestamp"] = int(stamp.replace(tzinfo=stamp.tzinfo or dt.UTC).timestamp() * 1000)
            out.append(item)
        return out

    def transaction_version(self, app_id: str) -> int | None:
        known = self._snapshot().transactions()  # Scala Map: app id -> version
        return int(known.apply(app_id)) if known.contains(app_id) else None

    def read(
        self,
        version: int | None = None,
        timestamp: dt.datetime | None = None,
        filters: predicates.Filters = (),
    ) -> DataFrame:
        reader = self.spark.read.format("delta")
        if version is not None:
            reader = reader.option("versionAsOf", version)
        if timestamp is not None:
            stamp = timestamp if timestamp.tzinfo else timestamp.replace(tzinfo=dt.UTC)
            reader = reader.option("timestampAsOf", stamp.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f"))
        try:
            df = reader.load(self.uri)
        except Exception as exc:
            if not self.exists():
                raise TableError(f"no Delta table at {self.uri}") from None
            raise TableError(f"cannot read {self.uri}: {str(exc).splitlines()[0]}") from None
        return df.where(predicates.to_column(filters)) if filters else df

    def files(self, filters: predicates.Filters = (), version: int | None = None) -> list[FileEntry]:
        """The files a read with ``filters`` would scan (after partition and statistics pruning)."""
        adds = DataFrame(self._snapshot(version).allFiles().toDF(), self.spark)
        # One row per data file (its add action), never the data.
        rows = adds.select("path", "size", "partitionValues", "stats").collect()
        schema, partition_by = self.schema(), self.partition_columns()
        entries = [
            entry_from_log_add({**row.asDict(), "path": unquote(row["path"])}, schema, partition_by)
            for row in rows
        ]
        return [
            e
            for e in entries
            if predicates.file_may_match(
                filters, e.partition_values, e.mins, e.maxs, e.null_counts, e.num_records
            )
        ]

    def _snapshot(self, version: int | None = None) -> Any:
        """Delta's own snapshot of the table (py4j), at ``version`` or the latest."""
        view = jvm(self.spark)
        log = view.org.apache.spark.sql.delta.DeltaLog.forTable(self.spark._jsparkSession, self.uri)
        none = view.scala.Option.empty()
        try:
            if version is None:
                snapshot = log.update(False, none, none)
            else:
                snapshot = log.getSnapshotAt(version, none, none)
        except Exception as exc:
            raise TableError(f"cannot read the log of {self.uri}: {str(exc).splitlines()[0]}") from None
        if snapshot.version() < 0:  # Delta's empty snapshot: no log at the path
            raise TableError(f"no Delta table at {self.uri}")
        return snapshot

    def _already_committed(self, txn: Txn | None) -> bool:
        return txn is not None and committed(self.transaction_version(txn[0]), txn[1])

    def _outcome(self, before: int, tag: str) -> CommitOutcome:
        """What this write committed: the version whose commitInfo carries ``tag`` (None: Delta skipped
        it)."""
        version = before + 1
        while True:
            try:
                commit = read_commit(self.uri, version)
            except TableError:  # past the latest version
                return CommitOutcome(None)
            if commit.info.get("userMetadata") == tag:  # unique: it holds a fresh uuid
                rows = sum(int(parse_stats(a.get("stats")).get("numRecords", 0)) for a in commit.adds)
                return CommitOutcome(version, len(commit.adds), len(commit.removes), rows)
            version += 1

    @_serialized
    def append(
        self, df: DataFrame, txn: Txn | None, added: Sequence[T.StructField]
    ) -> CommitOutcome:
        if self._already_committed(txn):
            return CommitOutcome(None)
        before, tag = self.version(), _tag()
        writer = df.write.format("delta").mode("append").option("userMetadata", tag)
        if added:
            writer = writer.option("mergeSchema", "true")  # atomic with the data commit
        if txn:
            writer = writer.option("txnAppId", txn[0]).option("txnVersion", txn[1])
        with _translated("append", self.uri):
            writer.save(self.uri)
        return self._outcome(before, tag)

    def append_rows(self, rows: Sequence[Sequence[Any]], txn: Txn | None) -> CommitOutcome:
        # A few rows: one task, so one file per partition value (as the delta-rs engine writes them).
        return self.append(self.spark.createDataFrame(list(rows), self.schema()).coalesce(1), txn, [])

    @_serialized
    def overwrite_where(
        self,
        df: DataFrame,
        filters: predicates.Filters,
        txn: Txn | None,
        open_files: int | None = None,
    ) -> CommitOutcome:
        if self._already_committed(txn):
            return CommitOutcome(None)
        before, tag = self.version(), _tag()
        writer = df.write.format("delta").mode("overwrite").option("replaceWhere", predicates.to_sql(filters))
        writer = writer.option("userMetadata", tag)
        if txn:
            writer = writer.option("txnAppId", txn[0]).option("txnVersion", txn[1])
        # Spark's writer keeps up to this many files open per task instead of sorting by partition.
        writers = {_MAX_OPEN_WRITERS: str(open_files)} if open_files else {}
        with session_settings(self.spark, writers), _translated("overwrite_where", self.uri):
            writer.save(self.uri)
        return self._outcome(before, tag)

    @_serialized
    def merge(
        self,
        source: DataFrame,
        keys: Sequence[str],
        when_matched: str,
        when_not_matched: str,
        txn: Txn | None,
    ) -> CommitOutcome:
        if self._already_committed(txn):
            return CommitOutcome(None)
        before, tag = self.version(), _tag()
        condition = " AND ".join(f"t.`{k}` = s.`{k}`" for k in keys)
        builder = self._delta().alias("t").merge(source.alias("s"), condition)
        if when_matched == "update":
            builder = builder.whenMatchedUpdateAll()
        elif when_matched == "delete":
            builder = builder.whenMatchedDelete()
        if when_not_matched == "insert":
            builder = builder.whenNotMatchedInsertAll()
        settings = {_USER_METADATA: tag, **({_TXN_APP: txn[0], _TXN_VERSION: str(txn[1])} if txn else {})}
        with session_settings(self.spark, settings), _translated("merge", self.uri):
            builder.execute()
        return self._outcome(before, tag)

    @_serialized
    def optimize(self, target_file_size_mb: int, filters: predicates.Filters) -> CommitOutcome:
        before, tag = self.version(), _tag()
        settings = {_MAX_FILE_SIZE: str(target_file_size_mb * 1024 * 1024), _USER_METADATA: tag}
        with session_settings(self.spark, settings):
            builder = self._delta().optimize()
            if filters:
                builder = builder.where(predicates.to_sql(filters))
            with _translated("optimize", self.uri):
                builder.executeCompaction()
        return self._outcome(before, tag)

    def vacuum(
        self, retention_hours: int, dry_run: bool, enforce_retention: bool, keep_versions: list[int]
    ) -> list[str]:
        # deltalake's vacuum honours protected versions file by file; the table is a plain Delta table.
        try:
            table = RsTable(self.uri)
        except Exception as exc:
            raise TableError(f"vacuum of {self.uri} needs a log deltalake can read: {exc}") from None
        return table.vacuum(
            retention_hours=retention_hours,
            dry_run=dry_run,
            enforce_retention_duration=enforce_retention,
            full=True,
            keep_versions=keep_versions or None,
            commit_properties=lineage_properties(),
        )


    def stage_split(
        self, split: DataFrame, route: str, targets: Mapping[str, TableEngine]
    ) -> dict[str, StagedWrite] | None:
        return None  # no one-pass writer: the table layer caches the input and appends each share


def _tag() -> str:
    """The commit's ``userMetadata``: a fresh tag to find the version it commits, plus the run's lineage."""
    return lineage.user_metadata(f"lakeml:{uuid.uuid4().hex}") or ""


@contextlib.contextmanager
def _translated(operation: str, uri: str) -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        text = f"{type(exc).__name__}: {exc}"
        if "Concurrent" in text:
            raise ConcurrentModificationError(f"{operation} on {uri}: {text.splitlines()[0]}") from None
        if any(code in text for code in _PROTOCOL_ERRORS):
            # As on delta-rs: a table whose protocol needs features this engine cannot write.
            detail = next(line for line in text.splitlines() if any(c in line for c in _PROTOCOL_ERRORS))
            raise TableError(f"{operation} on {uri} could not commit: {detail.strip(' :')}") from None
        if "DELTA_REPLACE_WHERE_MISMATCH" in text or "does not conform to partial table overwrite" in text:
            # Delta checks replaceWhere on every row as it writes, and commits nothing on a violation.
            raise TableError(
                f"{operation}: data has rows outside the predicate; nothing was written"
            ) from None
        raise


@contextlib.contextmanager
def local_write_lock(uri: str) -> Iterator[None]:
    """One writer at a time per local table across processes (no-op for other file systems)."""
    parsed = urlparse(uri)
    if parsed.scheme not in ("", "file"):
        yield
        return
    path = os.path.realpath(parsed.path if parsed.scheme else uri)
    folder = os.path.join(tempfile.gettempdir(), "lakeml-delta-locks")
    os.makedirs(folder, exist_ok=True)
    name = hashlib.sha256(path.encode()).hexdigest()[:32]
    with open(os.path.join(folder, f"{name}.lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released by close, and by the OS if the process dies
        yield
