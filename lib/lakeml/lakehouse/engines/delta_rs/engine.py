"""The delta-rs engine: Spark tasks write and read Parquet, the ``deltalake`` package owns the log.

Commits are made with ``max_commit_retries=0`` so that this module, not delta-rs, decides what a
concurrent commit means for the operation: non-conflicting commits are rebased onto, conflicting
ones raise ConcurrentModificationError, and no data file is ever committed twice.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial, reduce
from typing import Any

import pyarrow as pa
from deltalake import DeltaTable
from deltalake import Schema as DeltaSchema
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError
from deltalake.transaction import AddAction, CommitProperties, RemoveAction, Transaction
from pyarrow import fs as pafs
from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lakeml import faults
from lakeml.config import LakehouseConfig
from lakeml.errors import ConcurrentModificationError, TableError
from lakeml.lakehouse import lineage, predicates
from lakeml.lakehouse.engines.delta_rs.writer import (
    WriteSpec,
    WrittenFile,
    write_files,
    write_rows,
    write_split_files,
)
from lakeml.lakehouse.engines.protocol import CommitOutcome, StagedWrite, TableEngine, Txn, committed
from lakeml.lakehouse.files import (
    FILE_COLUMN,
    FileEntry,
    comparable,
    entries_from_add_actions,
    entry_from_log_add,
    parse_value,
    scan_files,
    total_size,
)
from lakeml.lakehouse.log import Commit, read_commits
from lakeml.lakehouse.schema import duplicate_key_error, spark_schema_from_delta_json

# Reader features whose data files a plain Parquet scan would misread.
_UNSUPPORTED_READER_FEATURES = {"deletionVectors", "columnMapping"}


@dataclass(frozen=True)
class ConflictRule:
    """What a concurrent commit must not have done for this operation's commit to stand."""

    removed_by_us: frozenset[str] = frozenset()
    read_by_us: frozenset[str] = frozenset()
    may_touch: Callable[[FileEntry], bool] | None = None
    schema_sensitive: bool = True

    def violation(
        self, commits: Sequence[Commit], schema: T.StructType, partition_by: Sequence[str]
    ) -> str | None:
        for commit in commits:
            if commit.protocol_changed:
                return f"version {commit.version} changed the table protocol"
            if commit.metadata_changed and self.schema_sensitive:
                return f"version {commit.version} changed the table metadata (schema or properties)"
            for rm in commit.removes:
                if rm["path"] in self.removed_by_us:
                    return f"version {commit.version} also removed {rm['path']}"
                if rm.get("dataChange", True) and rm["path"] in self.read_by_us:
                    return f"version {commit.version} deleted data this operation read ({rm['path']})"
            if self.may_touch is not None:
                for add in commit.adds:
                    if add.get("dataChange", True) and self.may_touch(
                        entry_from_log_add(add, schema, partition_by)
                    ):
                        return (f"version {commit.version} added {add['path']}, which this operation should "
                            "have read")
        return None


class DeltaRsEngine:
    """Table operations on one Delta table path through Spark (data) and delta-rs (log)."""

    name = "delta-rs"
    # Duplicate merge keys are found in the pass that scopes the merge (no pass of their own).
    checks_duplicate_keys = True

    def __init__(self, spark: SparkSession, uri: str, settings: LakehouseConfig) -> None:
        self.spark = spark
        self.uri = uri.rstrip("/")
        self.settings = settings

    # ------------------------------------------------------------------ snapshot
    def exists(self) -> bool:
        return DeltaTable.is_deltatable(self.uri)

    def _table(self, version: int | None = None, timestamp: dt.datetime | None = None) -> DeltaTable:
        try:
            table = DeltaTable(self.uri, version=version)
        except TableNotFoundError:
            raise TableError(f"no Delta table at {self.uri}") from None
        except DeltaError as exc:
            raise TableError(f"cannot open {self.uri} at version {version}: {exc}") from None
        if timestamp is not None:
            try:
                table.load_as_version(timestamp)
            except (DeltaError, ValueError) as exc:
                raise TableError(
                    f"no version of {self.uri} at or before {timestamp.isoformat()}: {exc}"
                ) from None
        return table

    def create(self, schema: T.StructType, partition_by: Sequence[str], properties: dict[str, str]) -> None:
        DeltaTable.create(
            self.uri,
            DeltaSchema.from_json(schema.json()),
            mode="error",
            partition_by=list(partition_by) or None,
            configuration=properties or None,
            commit_properties=lineage_properties(),
        )

    def version(self) -> int:
        return self._table().version()

    def schema(self, table: DeltaTable | None = None) -> T.StructType:
        return spark_schema_from_delta_json((table or self._table()).schema().to_json())

    def partition_columns(self, table: DeltaTable | None = None) -> list[str]:
        return list((table or self._table()).metadata().partition_columns)

    def properties(self) -> dict[str, str]:
        return dict(self._table().metadata().configuration)

    def entries(self, table: DeltaTable) -> list[FileEntry]:
        self._check_readable(table)
        return entries_from_add_actions(
            pa.table(table.get_add_actions(flatten=True)), self.schema(table), self.partition_columns(table)
        )

    def _check_readable(self, table: DeltaTable) -> None:
        features = set(table.protocol().reader_features or [])
        blocked = features & _UNSUPPORTED_READER_FEATURES
        if blocked:
            raise TableError(
                f"{self.uri} uses {', '.join(sorted(blocked))}, which the delta-rs engine does not read; "
                "use lakehouse.engine=delta-spark for this table"
            )

    def scan(
        self, entries: Sequence[FileEntry], table: DeltaTable, keep_file_name: bool = False
    ) -> DataFrame:
        return scan_files(
            self.spark, self.uri, entries, self.schema(table), self.partition_columns(table), keep_file_name
        )

    # ------------------------------------------------------------------ reads
    def read(
        self,
        version: int | None = None,
        timestamp: dt.datetime | None = None,
        filters: predicates.Filters = (),
    ) -> DataFrame:
        table = self._table(version, timestamp)
        entries = self.entries(table)
        if filters:
            entries = [
                e
                for e in entries
                if predicates.file_may_match(
                    filters, e.partition_values, e.mins, e.maxs, e.null_counts, e.num_records
                )
            ]
        df = self.scan(entries, table)
        return df.where(predicates.to_column(filters)) if filters else df

    def files(self, filters: predicates.Filters = (), version: int | None = None) -> list[FileEntry]:
        """The files a read with ``filters`` would scan (after partition and statistics pruning)."""
        entries = self.entries(self._table(version))
        return [
            e
            for e in entries
            if predicates.file_may_match(
                filters, e.partition_values, e.mins, e.maxs, e.null_counts, e.num_records
            )
        ]

    def history(self, limit: int | None = None) -> list[dict[str, Any]]:
        return self._table().history(limit)

    def transaction_version(self, app_id: str) -> int | None:
        return self._table().transaction_version(app_id)

    # ------------------------------------------------------------------ writes
    def _write(
        self,
        df: DataFrame,
        table: DeltaTable,
        schema: T.StructType | None = None,
        open_files: int | None = None,
    ) -> list[WrittenFile]:
        schema = schema or self.schema(table)
        files = write_files(df, replace(self._spec(table, schema), open_files=open_files))
        self._check_not_null(files, schema)
        return files

    def _spec(self, table: DeltaTable, schema: T.StructType) -> WriteSpec:
        return WriteSpec(
            root_uri=self.uri,
            schema_json=schema.json(),
            partition_by=tuple(self.partition_columns(table)),
            stats_columns=self.settings.stats_indexed_columns,
            target_file_bytes=self.settings.target_file_size_mb * 1024 * 1024,
            row_group_rows=self.settings.row_group_rows,
        )

    def _check_not_null(self, files: list[WrittenFile], schema: T.StructType) -> None:
        required = [f.name for f in schema.fields if not f.nullable]
        bad: dict[str, int] = {}
        for f in files:
            counts = f.null_counts()
            for col in required:
                if col in f.partition_values:
                    n = f.num_records if f.partition_values[col] is None else 0
                else:
                    n = int(counts.get(col, 0))
                if n:
                    bad[col] = bad.get(col, 0) + n
        if bad:
            self._delete(files)
            detail = ", ".join(f"{c} ({n} nulls)" for c, n in bad.items())
            raise TableError(f"NOT NULL columns received nulls: {detail}; nothing was committed")

    def _delete(self, files: Sequence[WrittenFile]) -> None:
        """Best-effort removal of files this operation wrote but will not commit."""
        filesystem, root = pafs.FileSystem.from_uri(self.uri)
        for f in files:
            with contextlib.suppress(OSError):  # vacuum removes what is left
                filesystem.delete_file(f"{root}/{f.path}")

    def _commit(
        self,
        base: DeltaTable,
        adds: Sequence[WrittenFile],
        removes: Sequence[FileEntry],
        operation: str,
        rule: ConflictRule,
        txn: Txn | None = None,
        data_change: bool = True,
        parameters: dict[str, Any] | None = None,
    ) -> CommitOutcome:
        now = int(time.time() * 1000)
        actions: list[AddAction | RemoveAction] = [
            RemoveAction(e.path, data_change, now, e.size, e.partition_strings()) for e in removes
        ]
        actions += [
            AddAction(f.path, f.size, f.partition_values, f.modification_time, data_change, f.stats)
            for f in adds
        ]
        metadata = {
            "lakeml.operation": operation,
            **{f"lakeml.{k}": str(v) for k, v in (parameters or {}).items()},
        }
        user_metadata = lineage.user_metadata()
        if user_metadata:
            metadata["userMetadata"] = user_metadata
        props = CommitProperties(
            custom_metadata=metadata,
            max_commit_retries=0,
            app_transactions=[Transaction(txn[0], txn[1])] if txn else None,
        )
        table = base
        for _attempt in range(self.settings.max_commit_attempts):
            read_version = table.version()
            faults.point("commit.during", faults.table_label(self.uri))
            try:
                table.create_write_transaction(
                    actions, "append", table.schema(), self.partition_columns(table), commit_properties=props
                )
                return CommitOutcome(
                    read_version + 1, len(adds), len(removes), sum(f.num_records for f in adds)
                )
            except CommitFailedError as exc:
                if "concurrent" in str(exc).lower() and "failed: 0" not in str(exc):
                    self._delete(adds)
                    raise ConcurrentModificationError(f"{operation} on {self.uri}: {exc}") from None
                latest = self._table()
                if latest.version() <= read_version:
                    self._delete(adds)
                    raise TableError(f"{operation} on {self.uri} could not commit: {exc}") from None
                if txn is not None and committed(latest.transaction_version(txn[0]), txn[1]):
                    self._delete(adds)  # another writer committed this very transaction meanwhile
                    return CommitOutcome(None)
                winners = read_commits(self.uri, read_version + 1, latest.version())
                reason = rule.violation(winners, self.schema(table), self.partition_columns(table))
                if reason:
                    self._delete(adds)
                    raise ConcurrentModificationError(
                        f"{operation} on {self.uri} conflicts: {reason}"
                    ) from None
                table = latest
        self._delete(adds)
        raise ConcurrentModificationError(
            f"{operation} on {self.uri}: gave up after {self.settings.max_commit_attempts} commit attempts"
        )

    def _already_committed(self, table: DeltaTable, txn: Txn | None) -> bool:
        return txn is not None and committed(table.transaction_version(txn[0]), txn[1])

    def evolve_schema(self, added: Sequence[T.StructField]) -> None:
        """Add nullable columns (a metadata-only commit made before the data commit)."""
        if not added:
            return
        from deltalake.schema import Field as DeltaField

        fields = [DeltaField.from_json(T.StructField(f.name, f.dataType, True).json()) for f in added]
        self._table().alter.add_columns(fields)

    def append(
        self, df: DataFrame, txn: Txn | None, added: Sequence[T.StructField]
    ) -> CommitOutcome:
        table = self._table()
        if self._already_committed(table, txn):
            return CommitOutcome(None)
        if added:
            # delta-rs cannot commit a schema change together with file actions: add the nullable
            # columns first (old rows read them as null), then commit the data.
            self.evolve_schema(added)
            table = self._table()
        files = self._write(df, table)
        return self._commit(table, files, [], "APPEND", ConflictRule(schema_sensitive=False), txn)

    def append_rows(self, rows: Sequence[Sequence[Any]], txn: Txn | None) -> CommitOutcome:
        table = self._table()
        if self._already_committed(table, txn):
            return CommitOutcome(None)
        schema = self.schema(table)
        files = write_rows(rows, self._spec(table, schema))
        self._check_not_null(files, schema)
        return self._commit(table, files, [], "APPEND", ConflictRule(schema_sensitive=False), txn)

    def write_spec(self) -> WriteSpec:
        """How tasks write this table's data files now (for a split write across tables)."""
        table = self._table()
        return self._spec(table, self.schema(table))

    def check_written(self, files: list[WrittenFile]) -> None:
        """Refuse (and delete) files a split write made for this table that break its NOT NULL columns."""
        self._check_not_null(files, self.schema())

    def commit_written(self, files: list[WrittenFile], txn: Txn | None) -> CommitOutcome:
        """Commit files a split write made for this table; a txn already committed drops them instead."""
        table = self._table()
        if self._already_committed(table, txn):
            self._delete(files)
            return CommitOutcome(None)
        return self._commit(table, files, [], "APPEND", ConflictRule(schema_sensitive=False), txn)

    def discard_written(self, files: list[WrittenFile]) -> None:
        self._delete(files)

    def stage_split(
        self, split: DataFrame, route: str, targets: Mapping[str, TableEngine]
    ) -> dict[str, StagedWrite]:
        """Tasks write every target's files at once; each target commits or discards its own."""
        engines = {name: _delta_rs_engine(engine) for name, engine in targets.items()}
        specs = {name: engine.write_spec() for name, engine in engines.items()}
        # Each (table, partition) contiguous in its task: one open file at a time, so one file per
        # partition. Unsorted, a task holding more partitions than the writer keeps open (a backfill's
        # dates) closed and reopened them: 2-3 small files per date that maintenance then compacted.
        order = [F.col(name)[c] for name, spec in specs.items() for c in spec.partition_by]
        files = write_split_files(split.sortWithinPartitions(F.col(route), *order), route, specs)

        try:
            for name, engine in engines.items():
                engine.check_written(files[name])
        except TableError:
            for name, engine in engines.items():
                engine.discard_written(files[name])
            raise
        return {
            name: StagedWrite(
                sum(f.num_records for f in files[name]),
                partial(engine.commit_written, files[name]),
                partial(engine.discard_written, files[name]),
            )
            for name, engine in engines.items()
        }

    def overwrite_where(
        self,
        df: DataFrame,
        filters: predicates.Filters,
        txn: Txn | None,
        open_files: int | None = None,
    ) -> CommitOutcome:
        table = self._table()
        if self._already_committed(table, txn):
            return CommitOutcome(None)
        partition_by = self.partition_columns(table)
        replaced = [
            e
            for e in self.entries(table)
            if predicates.file_may_match(filters, e.partition_values, {}, {}, {}, None)
        ]
        files = self._write(df, table, open_files=open_files)
        # Every written file holds one partition: its values decide, no pass over the rows.
        types = {f.name: f.dataType for f in self.schema(table).fields}
        stray = [
            f
            for f in files
            if not predicates.file_may_match(
                filters,
                {c: parse_value(v, types[c]) for c, v in f.partition_values.items()},
                {},
                {},
                {},
                None,
            )
        ]
        if stray:
            self._delete(files)
            raise TableError(
                f"overwrite_where: data has rows outside {predicates.to_sql(filters)} "
                f"({sum(f.num_records for f in stray)} rows); nothing was written"
            )

        def may_touch(entry: FileEntry) -> bool:
            return predicates.file_may_match(filters, entry.partition_values, {}, {}, {}, None)

        rule = ConflictRule(
            removed_by_us=frozenset(e.path for e in replaced),
            read_by_us=frozenset(e.path for e in replaced),
            may_touch=may_touch,
        )
        params = {"predicate": predicates.to_sql(filters), "partitionBy": ",".join(partition_by)}
        return self._commit(table, files, replaced, "OVERWRITE_WHERE", rule, txn, parameters=params)

    def merge(
        self,
        source: DataFrame,
        keys: Sequence[str],
        when_matched: str,
        when_not_matched: str,
        txn: Txn | None,
    ) -> CommitOutcome:
        table = self._table()
        if self._already_committed(table, txn):
            return CommitOutcome(None)
        schema = self.schema(table)
        partition_by = self.partition_columns(table)
        columns = schema.fieldNames()
        source = source.persist(StorageLevel.MEMORY_AND_DISK)
        matches: DataFrame | None = None
        try:
            scope = _MergeScope.of(source, keys, partition_by, schema)
            # A source that fits in memory is broadcast, so the table side is never shuffled.
            small = scope.rows <= self.settings.merge_broadcast_rows
            hint = F.broadcast if small else (lambda df: df)
            candidates = [e for e in self.entries(table) if scope.may_contain(e)]
            few = bool(candidates) and self._few_rows(candidates)
            # An upsert over few candidates needs no "which source rows matched": the candidates' rows
            # whose key is not in the source, plus every source row, are the result (keys are unique in
            # the source). Updated rows then land in the insert files of their partition, a few at most.
            upsert = few and when_matched == "update" and when_not_matched == "insert"
            parts: list[DataFrame] = []
            touched: list[FileEntry] = []
            inserts = source
            if few:
                # Few candidate rows: no separate pass to find the touched files. Every candidate is
                # rewritten (the source scoped them: its rows lie in their partitions and key ranges).
                if when_matched in ("update", "delete"):
                    touched = candidates
                if not upsert:
                    # the candidates' keys, broadcast, tell the inserts apart: one job writes everything
                    keys_df = self.scan(candidates, table).select(*keys)
                    inserts = source.join(F.broadcast(keys_df), list(keys), "left_anti")
            elif candidates:
                # One pass over the candidates' key columns finds the matched keys and the files holding them.
                matches = (
                    self.scan(candidates, table, keep_file_name=True)
                    .select(*keys, FILE_COLUMN)
                    .join(hint(source.select(*keys)), list(keys), "inner")
                    .persist(StorageLevel.MEMORY_AND_DISK)
                )
                if when_matched in ("update", "delete"):
                    # one row per touched file: metadata, bounded by the file count
                    names = {r[0] for r in matches.select(FILE_COLUMN).distinct().collect()}
                    touched = [e for e in candidates if e.name in names]
                # Updated rows stay in place in their rewritten files: the table's layout does not fragment.
                inserts = source.join(hint(matches.select(*keys)), list(keys), "left_anti")
            if touched:
                # Rewritten rows keep the scan's layout (one task per file): no shuffle of the table.
                target = self.scan(touched, table)
                parts.append(
                    target.join(hint(source.select(*keys)), list(keys), "left_anti").select(*columns)
                    if upsert
                    else _rewrite_touched(target, hint(source), keys, columns, when_matched)
                )
            if when_not_matched == "insert":
                # A few tasks without a shuffle: few files per partition, the writer sorts locally.
                tasks = max(1, min(self.spark.sparkContext.defaultParallelism, len(scope.ranges)))
                parts.append(inserts.select(*columns).coalesce(tasks))
            if not parts:
                return (
                    self._commit(table, [], [], "MERGE", ConflictRule(), txn) if txn else CommitOutcome(None)
                )
            files = self._write(reduce(lambda a, b: a.unionByName(b), parts), table)
            rule = ConflictRule(
                removed_by_us=frozenset(e.path for e in touched),
                read_by_us=frozenset(e.path for e in candidates),
                may_touch=scope.may_contain,
            )
            params = {
                "keys": ",".join(keys),
                "matched": when_matched,
                "notMatched": when_not_matched,
                "filesRead": len(candidates),
                "filesRewritten": len(touched),
            }
            return self._commit(table, files, touched, "MERGE", rule, txn, parameters=params)
        finally:
            if matches is not None:
                matches.unpersist()
            source.unpersist()

    def _few_rows(self, entries: Sequence[FileEntry]) -> bool:
        """Whether ``entries`` hold few enough rows (by their statistics) to broadcast their keys."""
        rows = [e.num_records for e in entries]
        known = [r for r in rows if r is not None]
        return len(known) == len(rows) and sum(known) <= self.settings.merge_broadcast_rows

    def optimize(self, target_file_size_mb: int, filters: predicates.Filters) -> CommitOutcome:
        table = self._table()
        partition_by = self.partition_columns(table)
        target = target_file_size_mb * 1024 * 1024
        groups: dict[tuple[Any, ...], list[FileEntry]] = {}
        for e in self.entries(table):
            if e.size < target and predicates.file_may_match(filters, e.partition_values, {}, {}, {}, None):
                groups.setdefault(e.partition_key(partition_by), []).append(e)
        chosen = [e for files in groups.values() if len(files) > 1 for e in files]
        if not chosen:
            return CommitOutcome(None)
        tasks = max(sum(1 for f in groups.values() if len(f) > 1), math.ceil(total_size(chosen) / target))
        df = self.scan(chosen, table)
        df = df.repartition(tasks, *partition_by) if partition_by else df.repartition(tasks)
        files = self._write(df, table)
        rule = ConflictRule(removed_by_us=frozenset(e.path for e in chosen), schema_sensitive=False)
        return self._commit(
            table, files, chosen, "OPTIMIZE", rule, data_change=False, parameters={"targetSize": target}
        )

    def vacuum(
        self, retention_hours: int, dry_run: bool, enforce_retention: bool, keep_versions: list[int]
    ) -> list[str]:
        return self._table().vacuum(
            retention_hours=retention_hours,
            dry_run=dry_run,
            enforce_retention_duration=enforce_retention,
            full=True,
            keep_versions=keep_versions or None,
            commit_properties=lineage_properties(),
        )


def _delta_rs_engine(engine: TableEngine) -> DeltaRsEngine:
    if not isinstance(engine, DeltaRsEngine):
        raise TableError(f"write_split targets must share one engine, got delta-rs and {engine.name}")
    return engine


def lineage_properties() -> CommitProperties | None:
    """Commit properties carrying the running job's lineage (None outside a job)."""
    user_metadata = lineage.user_metadata()
    return CommitProperties(custom_metadata={"userMetadata": user_metadata}) if user_metadata else None


def _rewrite_touched(
    target: DataFrame, source: DataFrame, keys: Sequence[str], columns: Sequence[str], when_matched: str
) -> DataFrame:
    """Rows of the touched files after the merge: matched rows updated from ``source`` or deleted."""
    src = source.select(*[F.col(f"`{c}`").alias(f"__src_{c}") for c in columns]).withColumn(
        "__src_hit", F.lit(True)
    )
    joined = target.join(src, on=[target[f"`{k}`"] == src[f"__src_{k}"] for k in keys], how="left")
    if when_matched == "delete":
        return joined.where(F.col("__src_hit").isNull()).select(*[target[f"`{c}`"] for c in columns])
    return joined.select(
        *[
            F.when(F.col("__src_hit"), F.col(f"__src_{c}")).otherwise(target[f"`{c}`"]).alias(c)
            for c in columns
        ]
    )


@dataclass(frozen=True)
class _MergeScope:
    """Per source partition, the key range of the source: which files a merge must read."""

    partition_by: tuple[str, ...]
    keys: tuple[str, ...]
    ranges: dict[tuple[Any, ...], dict[str, tuple[Any, Any]]]
    rows: int

    @classmethod
    def of(
        cls, source: DataFrame, keys: Sequence[str], partition_by: Sequence[str], schema: T.StructType
    ) -> _MergeScope:
        types = {f.name: f.dataType for f in schema.fields}

        def bound(k: str) -> Column:
            col = F.col(f"`{k}`")
            if isinstance(types[k], T.TimestampType | T.TimestampNTZType):
                col = F.unix_micros(col.cast(T.TimestampType()))
            return col

        # Two plain aggregations, no distinct count: rows per key (a key in two rows, in one or two
        # partitions, is a duplicate), then per source partition the key range, rows and largest count.
        groups = [f"__p{i}" for i in range(len(partition_by))]
        bounds = [f"__k{i}" for i in range(len(keys))]
        per_key = source.groupBy(*[bound(k).alias(b) for k, b in zip(keys, bounds, strict=True)]).agg(
            F.count(F.lit(1)).alias("__n"),
            *[F.min(F.col(f"`{p}`")).alias(g) for p, g in zip(partition_by, groups, strict=True)],
        )
        summary = per_key.groupBy(*groups).agg(
            *[F.min(b).alias(f"{b}_min") for b in bounds],
            *[F.max(b).alias(f"{b}_max") for b in bounds],
            F.sum("__n").alias("__rows"),
            F.max("__n").alias("__most"),
        )
        ranges: dict[tuple[Any, ...], dict[str, tuple[Any, Any]]] = {}
        rows, most = 0, 1
        # One row per source partition value: metadata-sized, not data-sized.
        for row in summary.collect():
            if row["__rows"] is None:
                continue  # an empty source without partition columns: the global group still yields a row
            key = tuple(comparable(row[g]) for g in groups)
            ranges[key] = {k: (row[f"{b}_min"], row[f"{b}_max"]) for k, b in zip(keys, bounds, strict=True)}
            rows += int(row["__rows"])
            most = max(most, int(row["__most"]))
        if most > 1:
            error = duplicate_key_error(source, list(keys))
            if error is not None:
                raise error
        return cls(tuple(partition_by), tuple(keys), ranges, rows)

    def may_contain(self, entry: FileEntry) -> bool:
        bounds = self.ranges.get(entry.partition_key(self.partition_by))
        if bounds is None:
            return False
        for k, (lo, hi) in bounds.items():
            if lo is None:
                continue  # only null keys in the source: they match nothing, but stay conservative
            fmin, fmax = entry.mins.get(k), entry.maxs.get(k)
            if fmin is None or fmax is None:
                continue
            try:
                if fmax < lo or fmin > hi:
                    return False
            except TypeError:
                continue
        return True
