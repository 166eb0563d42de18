"""Per-file metadata of a snapshot, and reading a set of data files back as one DataFrame."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pyarrow as pa
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lakeml.errors import TableError
from lakeml.lakehouse.log import parse_stats

FILE_COLUMN = "__lakeml_file"
# Up to this many distinct partitions, a scan derives partition values from file names inline.
_INLINE_PARTITIONS = 8
# A Hive-style folder ``column=value`` that needs no escaping, and partition types Spark parses back
# from such a folder exactly (the value is cast from its text, no inference).
_PLAIN_PATH_TEXT = re.compile(r"[A-Za-z0-9_.\-]+")
_PATH_PARSED_TYPES = (T.DateType, T.StringType, T.IntegerType, T.LongType, T.ShortType, T.ByteType)
# Delta stats keep milliseconds; a max may be truncated below the true value by < 1 ms.
_TIMESTAMP_SLACK_MICROS = 999


@dataclass(frozen=True)
class FileEntry:
    """One data file of a snapshot: where it is, its partition values and statistics (typed)."""

    path: str  # relative to the table root, decoded
    size: int
    partition_values: Mapping[str, Any]
    num_records: int | None
    mins: Mapping[str, Any]
    maxs: Mapping[str, Any]
    null_counts: Mapping[str, Any]

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    def partition_strings(self) -> dict[str, str | None]:
        return {k: partition_value_string(v) for k, v in self.partition_values.items()}

    def partition_key(self, partition_by: Sequence[str]) -> tuple[Any, ...]:
        return tuple(comparable(self.partition_values.get(c)) for c in partition_by)


def comparable(value: Any) -> Any:
    """Timestamps as UTC microseconds so values from Arrow, JSON and Spark compare equal."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        delta = value - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
        return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return value


def entries_from_add_actions(
    actions: pa.Table, schema: T.StructType, partition_by: Sequence[str]
) -> list[FileEntry]:
    """FileEntries from deltalake's ``get_add_actions(flatten=True)`` table (typed values)."""
    from urllib.parse import unquote

    timestamp_cols = {
        f.name for f in schema.fields if isinstance(f.dataType, T.TimestampType | T.TimestampNTZType)
    }
    names = actions.column_names
    stat_cols = [f.name for f in schema.fields if f.name not in partition_by]
    out = []
    for row in actions.to_pylist():
        mins = {c: row.get(f"min.{c}") for c in stat_cols if f"min.{c}" in names}
        maxs = {c: row.get(f"max.{c}") for c in stat_cols if f"max.{c}" in names}
        out.append(
            FileEntry(
                path=unquote(row["path"]),
                size=int(row["size_bytes"]),
                partition_values={c: row.get(f"partition.{c}") for c in partition_by},
                num_records=row.get("num_records"),
                mins=_bounds(mins, timestamp_cols, upper=False),
                maxs=_bounds(maxs, timestamp_cols, upper=True),
                null_counts={c: row.get(f"null_count.{c}") for c in stat_cols if f"null_count.{c}" in names},
            )
        )
    return out


def entry_from_log_add(
    add: Mapping[str, Any], schema: T.StructType, partition_by: Sequence[str]
) -> FileEntry:
    """A FileEntry from an ``add`` action read from a commit file (string partition values, JSON stats)."""
    types = {f.name: f.dataType for f in schema.fields}
    stats = parse_stats(add.get("stats"))
    timestamp_cols = {n for n, t in types.items() if isinstance(t, T.TimestampType | T.TimestampNTZType)}
    parts = add.get("partitionValues") or {}
    mins = {k: parse_value(v, types[k]) for k, v in (stats.get("minValues") or {}).items() if k in types}
    maxs = {k: parse_value(v, types[k]) for k, v in (stats.get("maxValues") or {}).items() if k in types}
    return FileEntry(
        path=add["path"],
        size=int(add.get("size") or 0),
        partition_values={c: parse_value(parts.get(c), types[c]) for c in partition_by},
        num_records=stats.get("numRecords"),
        mins=_bounds(mins, timestamp_cols, upper=False),
        maxs=_bounds(maxs, timestamp_cols, upper=True),
        null_counts=stats.get("nullCount") or {},
    )


def parse_value(text: Any, dtype: T.DataType) -> Any:
    """A partition value or JSON statistic in the column's Python type (None stays None)."""
    if text is None or (isinstance(text, str) and text == "" and not isinstance(dtype, T.StringType)):
        return None
    if not isinstance(text, str):
        return Decimal(str(text)) if isinstance(dtype, T.DecimalType) else text
    if isinstance(dtype, T.DateType):
        return dt.date.fromisoformat(text[:10])
    if isinstance(dtype, T.TimestampType | T.TimestampNTZType):
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if isinstance(dtype, T.LongType | T.IntegerType | T.ShortType | T.ByteType):
        return int(text)
    if isinstance(dtype, T.DoubleType | T.FloatType):
        return float(text)
    if isinstance(dtype, T.DecimalType):
        return Decimal(text)
    if isinstance(dtype, T.BooleanType):
        return text.lower() == "true"
    return text


def _bounds(values: Mapping[str, Any], timestamp_cols: set[str], upper: bool) -> dict[str, Any]:
    out = {}
    for k, v in values.items():
        if v is None:
            continue
        if k in timestamp_cols:
            v = comparable(v) + (_TIMESTAMP_SLACK_MICROS if upper else 0)
        out[k] = v
    return out


def scan_files(
    spark: SparkSession,
    root: str,
    entries: Sequence[FileEntry],
    schema: T.StructType,
    partition_by: Sequence[str],
    keep_file_name: bool = False,
) -> DataFrame:
    """Spark reads ``entries`` in parallel; partition values come from plain Hive folders (hive_layout) or
    from the log."""
    columns = [F.col(f"`{c}`") for c in schema.fieldNames()] + (
        [F.col(FILE_COLUMN)] if keep_file_name else []
    )
    if not entries:
        empty_schema = schema if not keep_file_name else schema.add(FILE_COLUMN, T.StringType())
        return spark.createDataFrame([], empty_schema)
    names = [e.name for e in entries]
    if len(set(names)) != len(names):
        raise TableError(
            "the snapshot holds two data files with the same name; lakeml's reader needs unique names"
        )
    data_schema = T.StructType([f for f in schema.fields if f.name not in partition_by])
    paths = [join_path(root, e.path) for e in entries]
    types = {f.name: f.dataType for f in schema.fields}
    if partition_by and hive_layout(entries, partition_by, types):
        # Every file sits in folders naming its own partition values: Spark reads them from the
        # paths (typed by the schema), with no file-name join.
        read_schema = T.StructType([*data_schema.fields, *[schema[c] for c in partition_by]])
        data = spark.read.schema(read_schema).option("basePath", root).parquet(*paths)
        if keep_file_name:
            data = data.withColumn(FILE_COLUMN, F.col("_metadata.file_name"))
        return data.select(*columns)
    data = (
        spark.read.schema(data_schema).parquet(*paths).withColumn(FILE_COLUMN, F.col("_metadata.file_name"))
    )
    if partition_by:
        groups: dict[tuple[str | None, ...], list[str]] = {}
        for e in entries:
            strings = e.partition_strings()
            groups.setdefault(tuple(strings[c] for c in partition_by), []).append(e.name)
        if len(groups) <= _INLINE_PARTITIONS:
            # Few partitions: their values as expressions on the file name, no join (and no job
            # to broadcast the file list).
            data = data.select(
                "*", *[_partition_value(groups, i, types[c]).alias(c) for i, c in enumerate(partition_by)]
            )
        else:
            meta_schema = T.StructType(
                [T.StructField(FILE_COLUMN, T.StringType(), False)]
                + [T.StructField(f"__p{i}", T.StringType(), True) for i in range(len(partition_by))]
            )
            rows = [(e.name, *[e.partition_strings()[c] for c in partition_by]) for e in entries]
            meta = spark.createDataFrame(rows, meta_schema).select(
                FILE_COLUMN, *[F.col(f"__p{i}").cast(types[c]).alias(c) for i, c in enumerate(partition_by)]
            )
            data = data.join(F.broadcast(meta), FILE_COLUMN)
    return data.select(*columns)


def hive_layout(
    entries: Sequence[FileEntry], partition_by: Sequence[str], types: Mapping[str, T.DataType]
) -> bool:
    """True when every file's folders are exactly ``column=value/`` of its own partition values, plainly.

    Then Spark can take the values from the paths. Anything else (another layout, NULL or escaped
    values, types whose text Spark would not parse back exactly) is read with the values from the log.
    """
    if not all(
        isinstance(types[c], _PATH_PARSED_TYPES) and _PLAIN_PATH_TEXT.fullmatch(c) for c in partition_by
    ):
        return False
    for e in entries:
        strings = e.partition_strings()
        values = [strings.get(c) for c in partition_by]
        if any(v is None or not _PLAIN_PATH_TEXT.fullmatch(v) for v in values):
            return False
        if e.path.split("/")[:-1] != [f"{c}={v}" for c, v in zip(partition_by, values, strict=True)]:
            return False
    return True


def _partition_value(
    groups: Mapping[tuple[str | None, ...], list[str]], index: int, dtype: T.DataType
) -> Column:
    """The value of partition column ``index`` of each row, chosen by the row's file name."""
    values = [(names, F.lit(strings[index]).cast(T.StringType())) for strings, names in groups.items()]
    if len({strings[index] for strings in groups}) == 1:
        return values[0][1].cast(dtype)
    expr = None
    for names, value in values[:-1]:
        cond = F.col(FILE_COLUMN).isin(names)
        expr = F.when(cond, value) if expr is None else expr.when(cond, value)
    assert expr is not None
    return expr.otherwise(values[-1][1]).cast(dtype)


def join_path(root: str, relative: str) -> str:
    return f"{root.rstrip('/')}/{relative}"


def total_size(entries: Iterable[FileEntry]) -> int:
    return sum(e.size for e in entries)


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
