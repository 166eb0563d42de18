"""Schemas across Spark, Arrow and the Delta log, and the rules for writing a DataFrame into a table."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pyarrow as pa
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lakeml.errors import TableError

# Writes may widen these types losslessly (table type <- DataFrame types).
_SAFE_UPCASTS: dict[type[T.DataType], tuple[type[T.DataType], ...]] = {
    T.LongType: (T.IntegerType, T.ShortType, T.ByteType),
    T.IntegerType: (T.ShortType, T.ByteType),
    T.ShortType: (T.ByteType,),
    T.DoubleType: (T.FloatType, T.IntegerType, T.ShortType, T.ByteType),
}


def spark_schema_from_delta_json(schema_json: str) -> T.StructType:
    """Spark StructType from a Delta schema string (Delta stores Spark's own JSON schema format)."""
    return T.StructType.fromJson(json.loads(schema_json))


def to_arrow_type(dtype: T.DataType) -> pa.DataType:
    """Arrow type with which Delta stores a Spark type in Parquet (timestamps as UTC microseconds)."""
    simple = {
        T.StringType: pa.string(),
        T.LongType: pa.int64(),
        T.IntegerType: pa.int32(),
        T.ShortType: pa.int16(),
        T.ByteType: pa.int8(),
        T.DoubleType: pa.float64(),
        T.FloatType: pa.float32(),
        T.BooleanType: pa.bool_(),
        T.BinaryType: pa.binary(),
        T.DateType: pa.date32(),
        T.TimestampType: pa.timestamp("us", tz="UTC"),
        T.TimestampNTZType: pa.timestamp("us"),
    }
    for spark_type, arrow_type in simple.items():
        if isinstance(dtype, spark_type):
            return arrow_type
    if isinstance(dtype, T.DecimalType):
        return pa.decimal128(dtype.precision, dtype.scale)
    if isinstance(dtype, T.ArrayType):
        return pa.list_(pa.field("element", to_arrow_type(dtype.elementType), dtype.containsNull))
    if isinstance(dtype, T.MapType):
        return pa.map_(to_arrow_type(dtype.keyType), to_arrow_type(dtype.valueType))
    if isinstance(dtype, T.StructType):
        return pa.struct([pa.field(f.name, to_arrow_type(f.dataType), True) for f in dtype.fields])
    raise TableError(f"type {dtype.simpleString()} cannot be stored in a Delta table by lakeml")


def to_arrow_schema(schema: T.StructType) -> pa.Schema:
    """Arrow schema of the Parquet data files; every field optional (NOT NULL is checked from stats)."""
    return pa.schema([pa.field(f.name, to_arrow_type(f.dataType), True) for f in schema.fields])


@dataclass(frozen=True)
class WritePlan:
    """How a DataFrame is conformed to a table: the select list and any columns it adds."""

    columns: list[Column]
    added_fields: list[T.StructField]


def plan_write(
    table: T.StructType, df_schema: T.StructType, partition_by: list[str], merge_schema: bool
) -> WritePlan:
    """Check ``df_schema`` against ``table``; widen safe types, fill missing nullable columns with null."""
    incoming = {f.name: f for f in df_schema.fields}
    by_lower = {f.name.lower(): f.name for f in table.fields}
    problems: list[str] = []
    columns: list[Column] = []
    for field in table.fields:
        src = incoming.get(field.name)
        if src is None:
            if not field.nullable:
                problems.append(f"column {field.name} ({field.dataType.simpleString()}, NOT NULL) is missing")
            columns.append(F.lit(None).cast(field.dataType).alias(field.name))
            continue
        if src.dataType == field.dataType:
            columns.append(F.col(f"`{field.name}`"))
        elif _can_widen(field.dataType, src.dataType) or _fits_nested(field.dataType, src.dataType):
            columns.append(F.col(f"`{field.name}`").cast(field.dataType).alias(field.name))
        else:
            looser = " (a nested field that is NOT NULL in the table is nullable in the data)"
            problems.append(
                f"column {field.name} is {field.dataType.simpleString()} in the table "
                f"but {src.dataType.simpleString()} in the data"
                + (looser if field.dataType.simpleString() == src.dataType.simpleString() else "")
            )
    extra = [f for f in df_schema.fields if f.name not in {t.name for t in table.fields}]
    added: list[T.StructField] = []
    for f in extra:
        if f.name.lower() in by_lower:
            problems.append(
                f"column {f.name} differs only in case from table column {by_lower[f.name.lower()]}"
            )
        elif not merge_schema:
            problems.append(
                f"column {f.name} ({f.dataType.simpleString()}) is not in the table (pass merge_schema=True "
                "to add it)"
            )
        elif f.name in partition_by:
            problems.append(f"column {f.name} cannot be added as a partition column")
        else:
            added.append(T.StructField(f.name, f.dataType, True))
            columns.append(F.col(f"`{f.name}`"))
    if problems:
        raise TableError("data does not fit the table schema: " + "; ".join(problems))
    return WritePlan(columns, added)


def _fits_nested(target: T.DataType, source: T.DataType) -> bool:
    """The same nested type, where the data's nested fields may only be stricter (NOT NULL into nullable)."""
    if isinstance(target, T.StructType) and isinstance(source, T.StructType):
        return [f.name for f in target.fields] == [f.name for f in source.fields] and all(
            (t.nullable or not s.nullable)
            and (t.dataType == s.dataType or _fits_nested(t.dataType, s.dataType))
            for t, s in zip(target.fields, source.fields, strict=True)
        )
    if isinstance(target, T.ArrayType) and isinstance(source, T.ArrayType):
        return (target.containsNull or not source.containsNull) and (
            target.elementType == source.elementType or _fits_nested(target.elementType, source.elementType)
        )
    if isinstance(target, T.MapType) and isinstance(source, T.MapType):
        return (
            target.keyType == source.keyType
            and (target.valueContainsNull or not source.valueContainsNull)
            and (target.valueType == source.valueType or _fits_nested(target.valueType, source.valueType))
        )
    return False


def _can_widen(target: T.DataType, source: T.DataType) -> bool:
    if isinstance(source, T.NullType):
        return True
    allowed = next((srcs for tgt, srcs in _SAFE_UPCASTS.items() if isinstance(target, tgt)), ())
    return isinstance(source, allowed)


def conform(
    df: DataFrame, table: T.StructType, partition_by: list[str], merge_schema: bool
) -> tuple[DataFrame, list[T.StructField]]:
    """``df`` with the table's columns in table order (plus new nullable columns when evolving)."""
    plan = plan_write(table, df.schema, partition_by, merge_schema)
    return df.select(*plan.columns), plan.added_fields


def duplicate_key_error(source: DataFrame, keys: list[str]) -> TableError | None:
    """A TableError naming up to five duplicated keys of ``source`` (None when keys are unique)."""
    duplicates = source.groupBy(*keys).count().where(F.col("count") > 1).limit(5).collect()
    if not duplicates:
        return None
    examples = "; ".join(", ".join(f"{k}={r[k]!r}" for k in keys) + f" ({r['count']}x)" for r in duplicates)
    return TableError(
        f"merge source has duplicate keys, e.g. {examples}; pass deduplicate_by=[...] or fix the source"
    )
