"""Tables written by lakeml are ordinary Delta tables: other readers see the same rows and types."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest
from chispa import assert_df_equality
from deltalake import DeltaTable, write_deltalake
from pyspark.sql import SparkSession
from pyspark.sql import types as T

from lakeml.lakehouse import DeltaTableRef
from tests.conftest import delta_spark_skip_reason

TYPES = T.StructType(
    [
        T.StructField("id", T.LongType(), False),
        T.StructField("part", T.StringType(), True),
        T.StructField("ts", T.TimestampType(), True),
        T.StructField("day", T.DateType(), True),
        T.StructField("price", T.DecimalType(18, 4), True),
        T.StructField("score", T.DoubleType(), True),
        T.StructField("label", T.StringType(), True),
    ]
)
# Partition values a path can't hold as they are: spaces, '/', '=', '%', unicode, glob characters, null.
PARTS = ["a b", "x/y", "k=v", "100%", "ünï €", "a*[b]?", None]
UTC = dt.UTC


def typed_rows() -> list[tuple]:
    rows = []
    for i, part in enumerate(PARTS * 3):
        rows.append(
            (
                i,
                part,
                dt.datetime(2026, 3, 29, 1, 30, 15, 123456, tzinfo=UTC) + dt.timedelta(hours=i)
                if i % 5
                else None,
                dt.date(1970, 1, 1) + dt.timedelta(days=20000 + i) if i % 4 else None,
                Decimal("12345678901234.5678") - i if i % 3 else None,
                [math.nan, 1.5, -0.0, 1e300, None][i % 5],
                ["ascii", "日本語テキスト", "emoji 🚀", "", None, "quote ' and \" and \\"][i % 6],
            )
        )
    return rows


def test_delta_rs_written_table_reads_the_same_through_deltalake(spark: SparkSession, config, tmp_path):
    path = str(tmp_path / "typed")
    t = DeltaTableRef(spark, path, config.lakehouse, "delta-rs").create(TYPES, ["part"])
    df = spark.createDataFrame(typed_rows(), TYPES)
    t.append(df)
    # lakeml reads back exactly what it wrote
    assert_df_equality(t.read(), df, ignore_row_order=True, allow_nan_equality=True, ignore_nullable=True)
    # deltalake + pyarrow (no Spark) reads the same rows, partition values included
    arrow = DeltaTable(path).to_pyarrow_table()
    got = sorted(arrow.to_pylist(), key=lambda r: r["id"])
    want = sorted(
        (dict(zip(TYPES.fieldNames(), r, strict=True)) for r in typed_rows()), key=lambda r: r["id"]
    )
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        for key, value in w.items():
            if isinstance(value, float) and math.isnan(value):
                assert math.isnan(g[key])
            else:
                assert g[key] == value, (key, g[key], value)


def test_statistics_follow_the_delta_protocol(spark: SparkSession, config, tmp_path):
    path = str(tmp_path / "stats")
    t = DeltaTableRef(spark, path, config.lakehouse, "delta-rs").create(TYPES, ["part"])
    t.append(spark.createDataFrame(typed_rows(), TYPES).coalesce(1))
    lines = Path(path, "_delta_log", f"{1:020d}.json").read_text().splitlines()
    adds = [json.loads(line)["add"] for line in lines if '"add"' in line]
    assert len(adds) == len(PARTS)
    by_part = {a["partitionValues"]["part"]: a for a in adds}
    assert set(by_part) == set(PARTS)
    stats = json.loads(by_part["a b"]["stats"])
    ids = [r[0] for r in typed_rows() if r[1] == "a b"]
    assert stats["numRecords"] == len(ids)
    assert stats["minValues"]["id"] == min(ids) and stats["maxValues"]["id"] == max(ids)
    assert set(stats["nullCount"]) == set(TYPES.fieldNames()) - {"part"}
    # a file holding NaN gets no score bounds: NaN sorts above every number in Spark
    assert all("score" not in json.loads(a["stats"])["minValues"] for a in adds if _has_nan(a, "a b"))
    # timestamps in Delta's UTC millisecond format
    ts_bounds = [
        json.loads(a["stats"])["minValues"]["ts"] for a in adds if "ts" in json.loads(a["stats"])["minValues"]
    ]
    assert ts_bounds and all(v.endswith("Z") for v in ts_bounds)


def _has_nan(add: dict, part: str) -> bool:
    return any(
        math.isnan(r[5])
        for r in typed_rows()
        if r[1] == add["partitionValues"]["part"] and isinstance(r[5], float)
    )


def test_table_written_by_another_writer_is_read_by_lakeml(spark: SparkSession, config, tmp_path):
    """deltalake's own writer (a different Delta implementation) → lakeml's Spark reader."""
    path = str(tmp_path / "foreign")
    arrow = pa.table(
        {
            "id": pa.array([1, 2, 3], pa.int64()),
            "part": pa.array(["x/y", None, "ünï"]),
            "ts": pa.array([dt.datetime(2026, 1, 1, tzinfo=UTC)] * 3, pa.timestamp("us", tz="UTC")),
        }
    )
    write_deltalake(path, arrow, partition_by=["part"])
    got = DeltaTableRef(spark, path, config.lakehouse, "delta-rs").read()
    assert sorted((r.id, r.part) for r in got.collect()) == [(1, "x/y"), (2, None), (3, "ünï")]


def test_pruning_skips_files_by_partition_and_statistics(spark: SparkSession, config, tmp_path, engine):
    path = str(tmp_path / "pruned")
    t = DeltaTableRef(spark, path, config.lakehouse, engine).create(TYPES, ["part"])
    for lo in range(0, 60, 20):  # three appends: ids 0-19, 20-39, 40-59 land in separate files
        rows = [(i, "p", None, None, None, float(i), "x") for i in range(lo, lo + 20)]
        t.append(spark.createDataFrame(rows, TYPES).coalesce(1))
    assert len(t.files()) == 3
    assert len(t.files([("id", ">=", 45)])) == 1
    assert len(t.files([("id", "in", [1, 50])])) == 2
    assert len(t.files([("id", "=", 19), ("score", ">", 30.0)])) == 0  # each filter alone keeps a file
    assert len(t.files([("part", "=", "other")])) == 0
    assert len(t.files([("label", "is null")])) == 0
    assert len(t.files([("label", "is not null")])) == 3
    assert [r.id for r in t.read(where=[("id", ">=", 58)]).orderBy("id").collect()] == [58, 59]
    assert [(f.num_records, f.mins["id"], f.maxs["id"]) for f in t.files(version=1)] == [(20, 0, 19)]
    # A partition value that needs escaping in the file's path: listed decoded, and the file is there.
    t.append(spark.createDataFrame([(60, "a b/ü", None, None, None, 1.0, "x")], TYPES))
    [spaced] = t.files([("part", "=", "a b/ü")])
    assert spaced.partition_values == {"part": "a b/ü"}
    assert os.path.exists(os.path.join(path, spaced.path))


@pytest.mark.skipif(delta_spark_skip_reason() is not None, reason=str(delta_spark_skip_reason()))
def test_delta_spark_and_delta_rs_read_each_others_tables(spark: SparkSession, config, tmp_path):
    df = spark.createDataFrame(typed_rows(), TYPES)
    rs_path, native_path = str(tmp_path / "by_rs"), str(tmp_path / "by_native")
    DeltaTableRef(spark, rs_path, config.lakehouse, "delta-rs").create(TYPES, ["part"]).append(df)
    native = spark.read.format("delta").load(rs_path)
    assert_df_equality(
        native.select(*TYPES.fieldNames()),
        df,
        ignore_row_order=True,
        allow_nan_equality=True,
        ignore_nullable=True,
    )
    DeltaTableRef(spark, native_path, config.lakehouse, "delta-spark").create(TYPES, ["part"]).append(df)
    back = DeltaTableRef(spark, native_path, config.lakehouse, "delta-rs").read()
    assert_df_equality(back, df, ignore_row_order=True, allow_nan_equality=True, ignore_nullable=True)
