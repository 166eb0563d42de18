"""Filters as data: ``[(column, op, value), ...]`` (AND), usable for Spark, SQL and file pruning.

Keeping predicates as data (not SQL text) lets the same filter prune files on the driver from
partition values and per-file min/max statistics, and then filter rows in Spark.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from decimal import Decimal
from functools import reduce
from typing import Any

from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lakeml.errors import TableError
from lakeml.sqltext import sql_identifier

Filter = tuple[str, str, Any]
Filters = Sequence[Filter]

COMPARISONS = ("=", "!=", "<", "<=", ">", ">=")
OPERATORS = (*COMPARISONS, "in", "not in", "is null", "is not null")


def validate(filters: Filters, schema: T.StructType) -> list[Filter]:
    """Filters with known columns and operators, values coerced to the column's Python type."""
    types = {f.name: f.dataType for f in schema.fields}
    out: list[Filter] = []
    for item in filters:
        if not (isinstance(item, tuple | list) and len(item) in (2, 3)):
            raise TableError(f"bad filter {item!r}: expected (column, op, value)")
        column, op = item[0], str(item[1]).lower()
        value = item[2] if len(item) == 3 else None
        if column not in types:
            raise TableError(f"filter on unknown column '{column}' (columns: {', '.join(types)})")
        if op == "==":
            op = "="
        if op not in OPERATORS:
            raise TableError(f"filter {item!r}: unknown operator '{op}' (use one of {', '.join(OPERATORS)})")
        if op in ("in", "not in"):
            value = [coerce_value(v, types[column], column) for v in value]
        elif op in COMPARISONS:
            if value is None:
                raise TableError(f"filter {item!r}: compare with None using 'is null'")
            value = coerce_value(value, types[column], column)
        out.append((column, op, value))
    return out


def coerce_value(value: Any, dtype: T.DataType, column: str) -> Any:
    """A filter literal in the column's Python type (dates from ISO strings, timestamps as UTC)."""
    try:
        if isinstance(dtype, T.DateType) and isinstance(value, str):
            return dt.date.fromisoformat(value)
        if isinstance(dtype, T.TimestampType | T.TimestampNTZType):
            if isinstance(value, str):
                value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            elif isinstance(value, dt.date) and not isinstance(value, dt.datetime):
                value = dt.datetime(value.year, value.month, value.day)
            if isinstance(dtype, T.TimestampType) and value.tzinfo is None:
                value = value.replace(tzinfo=dt.UTC)
            return value
        if isinstance(dtype, T.DecimalType) and not isinstance(value, Decimal):
            return Decimal(str(value))
    except (TypeError, ValueError) as exc:
        raise TableError(
            f"filter value {value!r} does not fit column {column} ({dtype.simpleString()})"
        ) from exc
    return value


def to_column(filters: Filters) -> Column:
    """The filters as one Spark boolean Column."""
    parts = [_column(c, op, v) for c, op, v in filters]
    return reduce(lambda a, b: a & b, parts) if parts else F.lit(True)


def _column(column: str, op: str, value: Any) -> Column:
    col = F.col(f"`{column}`")
    if op == "is null":
        return col.isNull()
    if op == "is not null":
        return col.isNotNull()
    if op == "in":
        return col.isin(list(value))
    if op == "not in":
        return ~col.isin(list(value))
    lit = F.lit(value)
    return {
        "=": col == lit,
        "!=": col != lit,
        "<": col < lit,
        "<=": col <= lit,
        ">": col > lit,
        ">=": col >= lit,
    }[op]


def to_sql(filters: Filters) -> str:
    """The filters as a Spark SQL predicate (for delta-spark's replaceWhere)."""
    parts = []
    for column, op, value in filters:
        name = sql_identifier(column)
        if op in ("is null", "is not null"):
            parts.append(f"{name} {op.upper()}")
        elif op in ("in", "not in"):
            parts.append(f"{name} {op.upper()} ({', '.join(sql_literal(v) for v in value)})")
        else:
            parts.append(f"{name} {op} {sql_literal(value)}")
    return " AND ".join(parts) if parts else "true"


def sql_literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | Decimal):
        return repr(value) if isinstance(value, float) else str(value)
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
            return f"TIMESTAMP '{value.isoformat(sep=' ')}+00:00'"
        return f"TIMESTAMP_NTZ '{value.isoformat(sep=' ')}'"
    if isinstance(value, dt.date):
        return f"DATE '{value.isoformat()}'"
    text = str(value).replace("\\", "\\\\").replace("'", "\\'")
    return f"'{text}'"


def file_may_match(
    filters: Filters,
    partition_values: Mapping[str, Any],
    mins: Mapping[str, Any],
    maxs: Mapping[str, Any],
    null_counts: Mapping[str, Any],
    num_records: int | None,
) -> bool:
    """False only when no row of the file can satisfy every filter (unknown statistics never prune)."""
    for column, op, value in filters:
        if column in partition_values:
            if not _value_matches(partition_values[column], op, value):
                return False
            continue
        lo, hi, nulls = mins.get(column), maxs.get(column), null_counts.get(column)
        if op == "is null":
            if nulls == 0:
                return False
            continue
        if op == "is not null":
            if nulls is not None and num_records is not None and nulls == num_records:
                return False
            continue
        if lo is None or hi is None:
            continue
        if not _range_may_match(lo, hi, op, value):
            return False
    return True


def _value_matches(actual: Any, op: str, value: Any) -> bool:
    if op == "is null":
        return actual is None
    if op == "is not null":
        return actual is not None
    if actual is None:
        return False  # comparisons with NULL are never true
    if op == "in":
        return actual in value
    if op == "not in":
        return actual not in value
    return _range_may_match(actual, actual, op, value)


def _range_may_match(lo: Any, hi: Any, op: str, value: Any) -> bool:
    lo, hi, value = _comparable(lo), _comparable(hi), _comparable(value)
    try:
        if op == "=":
            return lo <= value <= hi
        if op == "!=":
            return not (lo == hi == value)
        if op == "<":
            return lo < value
        if op == "<=":
            return lo <= value
        if op == ">":
            return hi > value
        if op == ">=":
            return hi >= value
        if op == "in":
            return any(lo <= _comparable(v) <= hi for v in value)
    except TypeError:
        return True  # incomparable statistics never prune
    return True


def _comparable(value: Any) -> Any:
    """Timestamps as UTC microseconds so stats and literals compare whatever their tz-awareness."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return int(value.timestamp() * 1_000_000)
    if isinstance(value, list):
        return [_comparable(v) for v in value]
    return value
