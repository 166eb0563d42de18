"""Executor-side Parquet writing for the delta-rs engine.

Each Spark task receives Arrow batches (``mapInArrow``), writes them into Parquet files under the
table folder with pyarrow, and yields one metadata row per file: relative path, size, partition
values, and Delta statistics. Only those rows travel to the driver, which commits them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import json
import math
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyarrow import fs as pafs
from pyspark.sql import DataFrame
from pyspark.sql import types as T

from lakeml.errors import TableError
from lakeml.lakehouse.files import partition_value_string
from lakeml.lakehouse.schema import spark_schema_from_delta_json, to_arrow_schema

# Delta's convention for a null partition value in a folder name.
NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"
# Like delta-spark: string statistics keep a 32-character prefix.
STRING_PREFIX = 32
# Appended to a truncated max so it still bounds every string with that prefix (largest code point).
MAX_CHAR = "\U0010ffff"

FILE_META_SCHEMA = T.StructType(
    [
        T.StructField("path", T.StringType(), False),
        T.StructField("size", T.LongType(), False),
        T.StructField("partition_values", T.StringType(), False),
        T.StructField("num_records", T.LongType(), False),
        T.StructField("stats", T.StringType(), False),
        T.StructField("modification_time", T.LongType(), False),
    ]
)


@dataclass(frozen=True)
class WrittenFile:
    """One data file a task wrote (not yet part of the table)."""

    path: str
    size: int
    partition_values: dict[str, str | None]
    num_records: int
    stats: str
    modification_time: int

    def null_counts(self) -> dict[str, int]:
        return json.loads(self.stats).get("nullCount", {})


@dataclass(frozen=True)
class WriteSpec:
    """Everything a writer task needs; pickled to executors."""

    root_uri: str
    schema_json: str
    partition_by: tuple[str, ...]
    stats_columns: int
    target_file_bytes: int
    row_group_rows: int
    # None: each task sorts its rows by partition first. A number: rows come in no partition order
    # and each task keeps up to this many partition files open (for tasks spanning a few partitions).
    open_files: int | None = None
    write_id: str = field(default_factory=lambda: uuid.uuid4().hex)


def write_files(df: DataFrame, spec: WriteSpec) -> list[WrittenFile]:
    """Write ``df`` (already in table column order) as Parquet files; returns their metadata."""
    if spec.partition_by and spec.open_files is None:
        # Like Spark's own partitioned writer: a local sort so each task keeps one file open at a time.
        df = df.sortWithinPartitions(*spec.partition_by)
    with storage_errors_named(spec.root_uri):
        metas = df.mapInArrow(_task_writer(spec), FILE_META_SCHEMA).collect()
    return [_written_file(r.asDict()) for r in metas]


# What the OS says when the storage, not the data, refuses a write (a task's traceback carries it).
STORAGE_ERRORS = (
    "No space left on device",
    "Disk quota exceeded",
    "Read-only file system",
    "Permission denied",
)


@contextlib.contextmanager
def storage_errors_named(table_uri: str) -> Iterator[None]:
    """Re-raise a write task's storage failure as a TableError naming the table (not a worker traceback).

    Files that finished before the failure are referenced by no commit; vacuum removes them.
    """
    try:
        yield
    except Exception as exc:
        text = str(exc)
        reason = next((e for e in STORAGE_ERRORS if e in text), None)
        if reason is None:
            raise
        raise TableError(
            f"writing data files of table {table_uri} failed: {reason}; nothing was committed"
        ) from None


SPLIT_META_SCHEMA = T.StructType([*FILE_META_SCHEMA.fields, T.StructField("target", T.StringType(), False)])


def write_split_files(df: DataFrame, route: str, specs: dict[str, WriteSpec]) -> dict[str, list[WrittenFile]]:
    """Write each row of ``df`` to the table its ``route`` column names, all tables in one pass.

    ``df`` has the string column ``route`` and, per target name, a struct column of that name holding
    the table's columns (in table order). Rows whose route names no target are not written.
    """
    with storage_errors_named(", ".join(sorted(spec.root_uri for spec in specs.values()))):
        metas = df.mapInArrow(_split_task_writer(route, specs), SPLIT_META_SCHEMA).collect()
    files: dict[str, list[WrittenFile]] = {name: [] for name in specs}
    for meta in metas:
        files[meta["target"]].append(_written_file(meta.asDict()))
    return files


def write_rows(rows: Sequence[Sequence[Any]], spec: WriteSpec) -> list[WrittenFile]:
    """Write a handful of driver-side rows (run records, check results) in this process, no Spark job."""
    schema = spark_schema_from_delta_json(spec.schema_json)
    names = schema.fieldNames()
    table = pa.Table.from_pylist(
        [dict(zip(names, row, strict=True)) for row in rows], to_arrow_schema(schema)
    )
    if spec.partition_by:
        table = table.sort_by([(c, "ascending") for c in spec.partition_by])
    metas = _task_writer(spec)(iter(table.to_batches()))
    return [_written_file(meta) for batch in metas for meta in batch.to_pylist()]


def _written_file(meta: dict[str, Any]) -> WrittenFile:
    return WrittenFile(
        meta["path"],
        meta["size"],
        json.loads(meta["partition_values"]),
        meta["num_records"],
        meta["stats"],
        meta["modification_time"],
    )


def partition_folder(partition_by: tuple[str, ...] | list[str], values: dict[str, str | None]) -> str:
    """Hive-style folder ``a=x/b=y`` with every byte outside [A-Za-z0-9._-] percent-escaped."""
    parts = []
    for col in partition_by:
        value = values[col]
        parts.append(f"{col}={NULL_PARTITION if value is None else escape_path_value(value)}")
    return "/".join(parts)


def escape_path_value(value: str) -> str:
    safe = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
    return "".join(ch if ch in safe else "".join(f"%{b:02X}" for b in ch.encode("utf-8")) for ch in value)


def _task_tag() -> str:
    """This task's partition and attempt, for file names (a retried task never reuses a name)."""
    from pyspark import TaskContext

    ctx = TaskContext.get()
    return f"{ctx.partitionId():05d}-{ctx.attemptNumber()}" if ctx else "00000-0"


def _task_writer(spec: WriteSpec) -> Callable[[Iterable[pa.RecordBatch]], Iterable[pa.RecordBatch]]:
    def run(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        writer = _FileRoller(spec, _task_tag())
        for batch in batches:
            writer.add(batch)
        files = writer.close()
        if files:
            yield pa.RecordBatch.from_pylist(files, schema=_meta_arrow_schema())

    return run


def _split_task_writer(
    route: str, specs: dict[str, WriteSpec]
) -> Callable[[Iterable[pa.RecordBatch]], Iterable[pa.RecordBatch]]:
    def run(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        tag = _task_tag()
        writers = {name: _FileRoller(spec, tag) for name, spec in specs.items()}
        for batch in batches:
            routes = batch.column(route)
            for name, writer in writers.items():
                rows = batch.filter(pc.fill_null(pc.equal(routes, name), False))
                if rows.num_rows:
                    writer.add(pa.RecordBatch.from_struct_array(rows.column(name)))
        files = [{**meta, "target": name} for name, writer in writers.items() for meta in writer.close()]
        if files:
            yield pa.RecordBatch.from_pylist(
                files, schema=_meta_arrow_schema().append(pa.field("target", pa.string()))
            )

    return run


def _meta_arrow_schema() -> pa.Schema:
    return pa.schema(
        [
            ("path", pa.string()),
            ("size", pa.int64()),
            ("partition_values", pa.string()),
            ("num_records", pa.int64()),
            ("stats", pa.string()),
            ("modification_time", pa.int64()),
        ]
    )


def _runs(batch: pa.RecordBatch, columns: list[str]) -> list[tuple[int, int]]:
    """[start, stop) ranges of equal values in ``columns`` of a batch sorted by them (vectorized)."""
    n = batch.num_rows
    if n <= 1:
        return [(0, n)]
    changed = pa.array([False] * (n - 1))
    for name in columns:
        col = batch.column(name)
        after, before = col.slice(1), col.slice(0, n - 1)
        differs = pc.fill_null(pc.not_equal(after, before), False)
        null_flip = pc.not_equal(pc.is_null(after), pc.is_null(before))
        changed = pc.or_(changed, pc.or_(differs, null_flip))
    cuts = [0, *(pc.indices_nonzero(changed).to_numpy() + 1).tolist(), n]
    return list(itertools.pairwise(cuts))


# Open files per task and table when rows arrive in no partition order (split writes): beyond this
# the least recently used file is finished, so a wide batch costs more files, never unbounded memory.
MAX_OPEN_FILES = 16


@dataclass
class _OpenFile:
    """One partition's file being written by a task: rows buffered for the next row group, and the file."""

    key: tuple[str | None, ...]
    pending: list[pa.RecordBatch] = field(default_factory=list)
    pending_rows: int = 0
    rel_path: str = ""
    sink: Any = None
    writer: pq.ParquetWriter | None = None
    stats: _StatsAccumulator | None = None


class _FileRoller:
    """Writes a task's batches into files: one open file per partition, rolled at the target size.

    Rows may arrive in any partition order. Buffered rows across all open files never exceed
    ``row_group_rows`` (the fullest buffer is flushed first), so memory stays that of one row group.
    """

    def __init__(self, spec: WriteSpec, task_tag: str) -> None:
        self.spec = spec
        self.task_tag = task_tag
        table_schema = spark_schema_from_delta_json(spec.schema_json)
        self.partition_by = list(spec.partition_by)
        self.data_schema = T.StructType([f for f in table_schema.fields if f.name not in self.partition_by])
        self.arrow_schema = to_arrow_schema(self.data_schema)
        self.full_arrow_schema = to_arrow_schema(table_schema)
        self.stats_fields = [f.name for f in self.data_schema.fields][: spec.stats_columns]
        self.filesystem, self.root = pafs.FileSystem.from_uri(spec.root_uri)
        self.files: list[dict[str, Any]] = []
        self.open: dict[tuple[str | None, ...], _OpenFile] = {}  # insertion order = least recently used first
        self.buffered_rows = 0
        self.seq = 0

    def add(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        batch = pa.Table.from_batches([batch]).cast(self.full_arrow_schema).combine_chunks().to_batches()[0]
        if not self.partition_by:
            self._append((), batch)
            return
        runs = _runs(batch, self.partition_by)
        if len(runs) > 1:
            # Group the batch's rows by partition (stable, vectorized) so each partition is one slice.
            order = pc.sort_indices(batch, sort_keys=[(c, "ascending") for c in self.partition_by])
            batch = batch.take(order)
            runs = _runs(batch, self.partition_by)
        for start, stop in runs:
            key = tuple(partition_value_string(batch.column(c)[start].as_py()) for c in self.partition_by)
            self._append(key, batch.slice(start, stop - start))

    def _append(self, key: tuple[str | None, ...], batch: pa.RecordBatch) -> None:
        target = self.open.pop(key, None)
        if target is None:
            if len(self.open) >= (self.spec.open_files or MAX_OPEN_FILES):
                self._finish(next(iter(self.open.values())))
            target = _OpenFile(key)
        self.open[key] = target  # most recently used last
        data = batch.select([f.name for f in self.data_schema.fields])
        target.pending.append(data)
        target.pending_rows += data.num_rows
        self.buffered_rows += data.num_rows
        if target.pending_rows >= self.spec.row_group_rows:
            self._flush_row_group(target)
        while self.buffered_rows > self.spec.row_group_rows:
            self._flush_row_group(max(self.open.values(), key=lambda f: f.pending_rows))

    def _flush_row_group(self, target: _OpenFile) -> None:
        if not target.pending:
            return
        table = pa.Table.from_batches(target.pending, schema=self.arrow_schema)
        self.buffered_rows -= target.pending_rows
        target.pending, target.pending_rows = [], 0
        if target.writer is None:
            self._open_file(target)
        assert target.writer is not None and target.stats is not None
        target.writer.write_table(table, row_group_size=max(table.num_rows, 1))
        target.stats.update(table)
        if target.sink.tell() >= self.spec.target_file_bytes:
            self._close_file(target)

    def _open_file(self, target: _OpenFile) -> None:
        values = dict(zip(self.partition_by, target.key, strict=True))
        folder = partition_folder(self.partition_by, values)
        name = f"part-{self.task_tag}-{self.spec.write_id}-{self.seq:04d}.snappy.parquet"
        self.seq += 1
        target.rel_path = f"{folder}/{name}" if folder else name
        full = f"{self.root.rstrip('/')}/{target.rel_path}"
        self.filesystem.create_dir(full.rsplit("/", 1)[0], recursive=True)
        target.sink = self.filesystem.open_output_stream(full)
        target.writer = pq.ParquetWriter(target.sink, self.arrow_schema, compression="snappy")
        target.stats = _StatsAccumulator(self.arrow_schema, self.stats_fields)

    def _close_file(self, target: _OpenFile) -> None:
        if target.writer is None:
            return
        assert target.stats is not None
        target.writer.close()
        size = target.sink.tell()
        target.sink.close()
        self.files.append(
            {
                "path": target.rel_path,
                "size": size,
                "partition_values": json.dumps(dict(zip(self.partition_by, target.key, strict=True))),
                "num_records": target.stats.num_records,
                "stats": target.stats.to_json(),
                "modification_time": int(time.time() * 1000),
            }
        )
        target.writer, target.sink, target.stats = None, None, None

    def _finish(self, target: _OpenFile) -> None:
        self._flush_row_group(target)
        self._close_file(target)
        del self.open[target.key]

    def close(self) -> list[dict[str, Any]]:
        for target in list(self.open.values()):
            self._finish(target)
        return self.files


class _StatsAccumulator:
    """Delta per-file statistics: numRecords, minValues, maxValues, nullCount."""

    def __init__(self, schema: pa.Schema, minmax_columns: list[str]) -> None:
        self.minmax_columns = minmax_columns
        self.all_columns = schema.names
        self.kinds = {name: schema.field(name).type for name in schema.names}
        self.num_records = 0
        self.null_count: dict[str, int] = dict.fromkeys(self.all_columns, 0)
        self.min: dict[str, Any] = {}
        self.max: dict[str, Any] = {}
        self.unbounded: set[str] = set()  # columns whose min/max cannot be stated (NaN, unsupported type)

    def update(self, table: pa.Table) -> None:
        self.num_records += table.num_rows
        for name in self.all_columns:
            self.null_count[name] += table.column(name).null_count
        for name in self.minmax_columns:
            if name in self.unbounded:
                continue
            column = table.column(name)
            kind = column.type
            if not _has_bounds(kind):
                self.unbounded.add(name)
                continue
            if pa.types.is_floating(kind) and pc.any(pc.is_nan(column)).as_py():
                # NaN sorts above every number in Spark, so no finite max would bound it.
                self.unbounded.add(name)
                continue
            if column.null_count == len(column):
                continue
            bounds = pc.min_max(column)
            try:
                lo, hi = bounds["min"].as_py(), bounds["max"].as_py()
            except UnicodeDecodeError:
                # Spark strings can hold bytes that are not UTF-8; such a column gets no bounds.
                self.unbounded.add(name)
                continue
            if pa.types.is_timestamp(kind):
                lo, hi = (
                    pc.cast(bounds["min"], pa.int64()).as_py(),
                    pc.cast(bounds["max"], pa.int64()).as_py(),
                )
            self.min[name] = lo if name not in self.min else min(self.min[name], lo)
            self.max[name] = hi if name not in self.max else max(self.max[name], hi)

    def to_json(self) -> str:
        kinds = self.kinds
        mins, maxs = {}, {}
        for name in self.minmax_columns:
            if name in self.unbounded or name not in self.min:
                continue
            kind = kinds[name]
            lo, hi = (
                _stat_value(self.min[name], kind, upper=False),
                _stat_value(self.max[name], kind, upper=True),
            )
            if lo is not None and hi is not None:
                mins[name], maxs[name] = lo, hi
        return _render_json(
            {
                "numRecords": self.num_records,
                "minValues": mins,
                "maxValues": maxs,
                "nullCount": self.null_count,
            }
        )


def _has_bounds(kind: pa.DataType) -> bool:
    return (
        pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_decimal(kind)
        or pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_date(kind)
        or pa.types.is_timestamp(kind)
    )


def _stat_value(value: Any, kind: pa.DataType, upper: bool) -> Any:
    """A bound in Delta's JSON form; rounded outward so it still bounds the data."""
    if pa.types.is_timestamp(kind):
        micros = int(value)
        millis = -(-micros // 1000) if upper else micros // 1000  # Delta stats carry milliseconds
        stamp = dt.datetime(1970, 1, 1) + dt.timedelta(milliseconds=millis)
        text = stamp.isoformat(timespec="milliseconds")
        return text + "Z" if kind.tz is not None else text
    if pa.types.is_date(kind):
        return value.isoformat()
    if isinstance(value, str):
        if len(value) <= STRING_PREFIX:
            return value
        return value[:STRING_PREFIX] + MAX_CHAR if upper else value[:STRING_PREFIX]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _render_json(value: Any) -> str:
    """JSON with decimals written exactly (json.dumps would go through float)."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{_render_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, float):
        return repr(value)
    return json.dumps(value)
