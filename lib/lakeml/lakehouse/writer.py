"""Executor-side Parquet writing for the delta-rs engine.

Each Spark task receives Arrow batches (``mapInArrow``), writes them into Parquet files under the
table folder with pyarrow, and yields one metadata row per file: relative path, size, partition
values, and Delta statistics. Only those rows travel to the driver, which commits them.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import math
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyarrow import fs as pafs
from pyspark.sql import DataFrame
from pyspark.sql import types as T

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
    write_id: str = field(default_factory=lambda: uuid.uuid4().hex)


def write_files(df: DataFrame, spec: WriteSpec) -> list[WrittenFile]:
    """Write ``df`` (already in table column order) as Parquet files; returns their metadata."""
    if spec.partition_by:
        # Like Spark's own partitioned writer: a local sort so each task keeps one file open at a time.
        df = df.sortWithinPartitions(*spec.partition_by)
    return [_written_file(r.asDict()) for r in df.mapInArrow(_task_writer(spec), FILE_META_SCHEMA).collect()]


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


def partition_value_string(value: Any) -> str | None:
    """Delta's serialized form of a partition value."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return value.isoformat(sep=" ", timespec="microseconds")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _task_writer(spec: WriteSpec) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from pyspark import TaskContext

        ctx = TaskContext.get()
        task_tag = f"{ctx.partitionId():05d}-{ctx.attemptNumber()}" if ctx else "00000-0"
        writer = _FileRoller(spec, task_tag)
        for batch in batches:
            writer.add(batch)
        files = writer.close()
        if files:
            yield pa.RecordBatch.from_pylist(files, schema=_meta_arrow_schema())

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


class _FileRoller:
    """Writes a task's sorted batches into files: one partition at a time, rolled at the target size."""

    def __init__(self, spec: WriteSpec, task_tag: str) -> None:
        from lakeml.lakehouse.schema import spark_schema_from_delta_json

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
        self.current_key: tuple[str | None, ...] | None = None
        self.pending: list[pa.RecordBatch] = []
        self.pending_rows = 0
        self.sink: Any = None
        self.writer: pq.ParquetWriter | None = None
        self.rel_path = ""
        self.stats: _StatsAccumulator | None = None
        self.seq = 0

    def add(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        batch = pa.Table.from_batches([batch]).cast(self.full_arrow_schema).combine_chunks().to_batches()[0]
        if not self.partition_by:
            self._append((), batch)
            return
        # Rows arrive sorted by partition columns: cut the batch where any partition value changes.
        for start, stop in _runs(batch, self.partition_by):
            key = tuple(partition_value_string(batch.column(c)[start].as_py()) for c in self.partition_by)
            self._append(key, batch.slice(start, stop - start))

    def _append(self, key: tuple[str | None, ...], batch: pa.RecordBatch) -> None:
        if key != self.current_key:
            self._finish_file()
            self.current_key = key
        data = batch.select([f.name for f in self.data_schema.fields])
        self.pending.append(data)
        self.pending_rows += data.num_rows
        if self.pending_rows >= self.spec.row_group_rows:
            self._flush_row_group()

    def _flush_row_group(self) -> None:
        if not self.pending:
            return
        table = pa.Table.from_batches(self.pending, schema=self.arrow_schema)
        self.pending, self.pending_rows = [], 0
        if self.writer is None:
            self._open_file()
        assert self.writer is not None and self.stats is not None
        self.writer.write_table(table, row_group_size=max(table.num_rows, 1))
        self.stats.update(table)
        if self.sink.tell() >= self.spec.target_file_bytes:
            self._close_file()

    def _open_file(self) -> None:
        values = dict(zip(self.partition_by, self.current_key or (), strict=True))
        folder = partition_folder(self.partition_by, values)
        name = f"part-{self.task_tag}-{self.spec.write_id}-{self.seq:04d}.snappy.parquet"
        self.seq += 1
        self.rel_path = f"{folder}/{name}" if folder else name
        full = f"{self.root.rstrip('/')}/{self.rel_path}"
        self.filesystem.create_dir(full.rsplit("/", 1)[0], recursive=True)
        self.sink = self.filesystem.open_output_stream(full)
        self.writer = pq.ParquetWriter(self.sink, self.arrow_schema, compression="snappy")
        self.stats = _StatsAccumulator(self.arrow_schema, self.stats_fields)

    def _close_file(self) -> None:
        if self.writer is None:
            return
        assert self.stats is not None
        self.writer.close()
        size = self.sink.tell()
        self.sink.close()
        values = dict(zip(self.partition_by, self.current_key or (), strict=True))
        self.files.append(
            {
                "path": self.rel_path,
                "size": size,
                "partition_values": json.dumps(values),
                "num_records": self.stats.num_records,
                "stats": self.stats.to_json(),
                "modification_time": int(time.time() * 1000),
            }
        )
        self.writer, self.sink, self.stats = None, None, None

    def _finish_file(self) -> None:
        self._flush_row_group()
        self._close_file()

    def close(self) -> list[dict[str, Any]]:
        self._finish_file()
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
