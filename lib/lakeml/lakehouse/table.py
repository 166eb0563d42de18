"""DeltaTableRef: one table API over two engines (delta-rs and the native delta-spark connector).

Shared rules live here (schema checks, predicate checks, merge-source checks, protected versions,
incremental reads from the log); the engine (``engines.TableEngine``) reads, writes and commits.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from pyarrow import fs as pafs
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lakeml import faults
from lakeml.config import LakehouseConfig
from lakeml.errors import ConcurrentModificationError, TableError
from lakeml.lakehouse import lineage, predicates
from lakeml.lakehouse.engines import CommitOutcome, TableEngine, Txn, open_engine
from lakeml.lakehouse.engines.protocol import WhenMatched, WhenNotMatched
from lakeml.lakehouse.files import FileEntry, entry_from_log_add, scan_files
from lakeml.lakehouse.log import read_commits
from lakeml.lakehouse.schema import conform, duplicate_key_error

PROTECTION_DIR = "_lakeml/protected"
# While a job runs (recording_reads), the first version of each table it read, by URI.
_reads: dict[str, int] | None = None


@contextlib.contextmanager
def recording_reads() -> Iterator[dict[str, int]]:
    """Within the block, collect {table URI: first version read} of every read (a job's input versions)."""
    global _reads
    outer, _reads = _reads, {}
    try:
        yield _reads
    finally:
        _reads = outer


def note_input(key: str, version: int) -> None:
    """Record an input of the running job (a table URI, or another versioned input such as a model)."""
    if _reads is not None:
        _reads.setdefault(key, version)


class DeltaTableRef:
    """A Delta table at ``uri`` and the operations jobs may run on it."""

    def __init__(
        self, spark: SparkSession, uri: str, settings: LakehouseConfig, engine: str = "delta-rs"
    ) -> None:
        self.spark = spark
        self.uri = uri.rstrip("/")
        self.settings = settings
        self.engine_name = engine
        self.engine: TableEngine = open_engine(engine, spark, self.uri, settings)

    def __repr__(self) -> str:
        return f"DeltaTableRef({self.uri!r}, engine={self.engine_name!r})"

    # ------------------------------------------------------------------ lifecycle
    def exists(self) -> bool:
        return self.engine.exists()

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
        self.engine.create(schema, list(partition_by), dict(properties or {}))
        return self

    def version(self) -> int:
        return self.engine.version()

    def schema(self) -> T.StructType:
        return self.engine.schema()

    def partition_columns(self) -> list[str]:
        return self.engine.partition_columns()

    def history(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Newest first: version, timestamp, operation, its parameters and ``lineage`` (the job, run id
        and run date that committed it; {} outside a job) per commit."""
        return [{**entry, "lineage": lineage.parse(entry)} for entry in self.engine.history(limit)]

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
        if _reads is not None and timestamp is None:
            note_input(self.uri, self.version() if version is None else version)
        return self.engine.read(version=version, timestamp=timestamp, filters=filters)

    def files(self, where: predicates.Filters = (), version: int | None = None) -> list[FileEntry]:
        """The data files a read with ``where`` scans, after partition and statistics pruning (from the
        log)."""
        filters = predicates.validate(where, self.schema())
        return self.engine.files(filters, version)

    def appended_files(self, version: int, until: int | None = None) -> list[FileEntry]:
        """Data files added after ``version`` up to ``until`` (default: now); the range must be
        append-only."""
        _check_plain_parquet(self.uri)
        latest = self.version() if until is None else until
        if version > latest:
            raise TableError(
                f"changes since version {version} requested, but {self.uri} is at version {latest}"
            )
        note_input(self.uri, latest)
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
        """Rows appended after ``version`` up to ``until`` (default: now); the table must be append-only
        there."""
        entries = self.appended_files(version, until)
        return scan_files(self.spark, self.uri, entries, self.schema(), self.partition_columns())

    def transaction_version(self, app_id: str) -> int | None:
        """The last txn version committed by ``app_id`` (e.g. the source version a job processed up to)."""
        return self.engine.transaction_version(app_id)

    # ------------------------------------------------------------------ writes
    def append(self, df: DataFrame, txn: Txn | None = None, merge_schema: bool = False) -> CommitOutcome:
        """Add rows; with ``txn=(app_id, version)`` a second commit of the same pair is a no-op."""
        _check_txn(txn)
        conformed, added = conform(df, self.schema(), self.partition_columns(), merge_schema)
        return self._committing(
            lambda: self.engine.append(by_table_partition(conformed, self.partition_columns()), txn, added)
        )

    def append_rows(self, rows: Sequence[Sequence[Any]], txn: Txn | None = None) -> CommitOutcome:
        """Add a few rows built on the driver, in the table's column order; ``txn`` as for append.

        For per-batch records (run accounting, check results): the delta-rs engine writes them in
        this process, without a Spark job.
        """
        _check_txn(txn)
        return self._committing(lambda: self.engine.append_rows(rows, txn))

    def overwrite_where(
        self,
        df: DataFrame,
        where: predicates.Filters,
        txn: Txn | None = None,
        open_files: int | None = None,
    ) -> CommitOutcome:
        """Atomically replace the rows matching a partition predicate with ``df`` (e.g. rerun one date).

        Rows of ``df`` outside the predicate raise ``TableError`` and nothing is committed. With
        ``open_files``, each write task keeps up to that many partitions' files open instead of
        sorting its rows by partition: for a ``df`` whose tasks each hold rows of a few partitions
        in no order (one row per date of a range), where the sort would be as large as the output.
        """
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
        conformed = by_table_partition(conformed, partition_by)
        # Rows outside the predicate are refused by the engine as it writes (no pass of their own).
        return self._committing(
            lambda: self._retrying(
                "overwrite_where", lambda: self.engine.overwrite_where(conformed, filters, txn, open_files)
            )
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
                f"merge: unsupported clauses when_matched={when_matched!r} "
                f"when_not_matched={when_not_matched!r}"
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
        if not self.engine.checks_duplicate_keys:
            error = duplicate_key_error(source, keys)
            if error is not None:
                raise error
        return self._committing(
            lambda: self._retrying(
                "merge", lambda: self.engine.merge(source, keys, when_matched, when_not_matched, txn)
            )
        )

    def optimize(
        self, target_file_size_mb: int | None = None, where: predicates.Filters = ()
    ) -> CommitOutcome:
        """Compact small files (per partition) into files of about the target size; data is unchanged."""
        filters = predicates.validate(where, self.schema())
        outside = [c for c, _, _ in filters if c not in self.partition_columns()]
        if outside:
            raise TableError(f"optimize predicates may use partition columns only, not {outside}")
        return self.engine.optimize(target_file_size_mb or self.settings.target_file_size_mb, filters)

    def vacuum(
        self, retention_hours: int | None = None, dry_run: bool = False, enforce_retention: bool = True
    ) -> list[str]:
        """Delete files no version within the retention (nor any protected version) needs; returns them."""
        hours = self.settings.vacuum_retention_hours if retention_hours is None else retention_hours
        return self.engine.vacuum(hours, dry_run, enforce_retention, sorted(self.protected_versions()))

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
    def _committing(self, write: Callable[[], CommitOutcome]) -> CommitOutcome:
        """Run one write between the fault-injection points before and after its commit."""
        label = faults.table_label(self.uri)
        faults.point("commit.before", label)
        outcome = write()
        faults.point("commit.after", label)
        return outcome

    def _retrying(self, operation: str, attempt: Callable[[], CommitOutcome]) -> CommitOutcome:
        """Re-run a whole read-modify-write operation after a conflict, a bounded number of times."""
        for tries in range(self.settings.max_operation_retries + 1):
            try:
                return attempt()
            except ConcurrentModificationError:
                if tries == self.settings.max_operation_retries:
                    raise
        raise AssertionError("unreachable")


def by_table_partition(df: DataFrame, partition_by: Sequence[str]) -> DataFrame:
    """``df`` with each table partition's rows in one task, so a write makes one file per partition
    (more only past lakehouse.target_file_size_mb), not one per task per partition (many small files)."""
    if not partition_by:
        return df
    return df.repartition(*[F.col(f"`{c}`") for c in partition_by])


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
