"""The table layer, once per engine: every operation's semantics on real Delta tables."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest
from chispa import assert_df_equality
from deltalake import DeltaTable
from pyspark.sql import DataFrame, Observation, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lakeml.config import Config
from lakeml.errors import TableError
from lakeml.lakehouse import DeltaTableRef, write_split
from lakeml.lakehouse.lineage import commit_lineage

EVENTS = T.StructType(
    [
        T.StructField("id", T.LongType(), False),
        T.StructField("event_date", T.DateType(), True),
        T.StructField("amount", T.DecimalType(12, 2), True),
        T.StructField("name", T.StringType(), True),
    ]
)
DAY = dt.date(2026, 11, 1)


def events(spark: SparkSession, start: int, stop: int, days: int = 4, name: str = "v1") -> DataFrame:
    """Rows id in [start, stop), spread over ``days`` dates, in EVENTS' schema."""
    df = spark.range(start, stop).select(
        F.col("id"),
        F.date_add(F.lit(DAY), (F.col("id") % days).cast("int")).alias("event_date"),
        (F.col("id") * 1.25).cast("decimal(12,2)").alias("amount"),
        F.lit(name).alias("name"),
    )
    return spark.createDataFrame(df.rdd, EVENTS)


def make_table(spark: SparkSession, config: Config, path: str, engine: str) -> DeltaTableRef:
    return DeltaTableRef(spark, path, config.lakehouse, engine).create(EVENTS, ["event_date"])


def same_rows(actual: DataFrame, expected: DataFrame) -> None:
    assert_df_equality(
        actual.select(*expected.columns),
        expected,
        ignore_row_order=True,
        ignore_nullable=True,
        allow_nan_equality=True,
    )


def log_adds(path: str, version: int) -> list[dict]:
    lines = Path(path, "_delta_log", f"{version:020d}.json").read_text().splitlines()
    return [json.loads(line)["add"] for line in lines if '"add"' in line]


# ---------------------------------------------------------------------------- create / append


def test_create_is_idempotent_and_refuses_a_different_schema(spark, config, table_path, engine):
    t = make_table(spark, config, table_path, engine)
    assert t.version() == 0
    assert t.partition_columns() == ["event_date"]
    assert [f.name for f in t.schema().fields] == EVENTS.fieldNames()
    make_table(spark, config, table_path, engine)  # same schema: fine
    other = T.StructType([*EVENTS.fields, T.StructField("extra", T.StringType())])
    with pytest.raises(TableError, match="exists with schema"):
        DeltaTableRef(spark, table_path, config.lakehouse, engine).create(other, ["event_date"])
    assert t.version() == 0


def test_append_reads_back_and_txn_makes_it_idempotent(spark, config, table_path, engine):
    t = make_table(spark, config, table_path, engine)
    data = events(spark, 0, 500)
    first = t.append(data, txn=("ingest", 1))
    assert first.version == 1 and not first.noop
    again = t.append(data, txn=("ingest", 1))
    assert again.noop
    assert t.version() == 1
    same_rows(t.read(), data)
    t.append(events(spark, 500, 600), txn=("ingest", 2))
    assert t.read().count() == 600
    assert DeltaTable(table_path).transaction_version("ingest") == 2


def test_not_null_violation_commits_nothing(spark, config, table_path, engine):
    t = make_table(spark, config, table_path, engine)
    bad = events(spark, 0, 10).withColumn("id", F.when(F.col("id") == 3, None).otherwise(F.col("id")))
    with pytest.raises(Exception, match="(?i)null"):
        t.append(bad)
    assert t.version() == 0
    assert t.read().count() == 0


def test_append_rows_writes_driver_rows_like_append_with_the_same_txn_and_null_rules(
    spark, config, table_path, engine
):
    t = make_table(spark, config, table_path, engine)
    rows = [
        (1, DAY, Decimal("1.25"), "a"),
        (2, DAY + dt.timedelta(days=1), Decimal("-3.50"), None),
        (3, None, None, "no date"),  # a NULL partition value
        (4, DAY, Decimal("9999999999.99"), "ü"),
    ]
    assert t.append_rows(rows, txn=("runs", 7)).rows_added == 4
    assert t.append_rows(rows, txn=("runs", 7)).noop
    assert t.version() == 1
    same_rows(t.read(), spark.createDataFrame(rows, EVENTS))
    assert sorted(a["partitionValues"]["event_date"] or "" for a in log_adds(table_path, 1)) == [
        "",
        "2026-11-01",
        "2026-11-02",
    ]
    with pytest.raises(Exception, match="(?i)null"):
        t.append_rows([(None, DAY, None, "id is NOT NULL")])
    assert t.version() == 1


REJECTS = T.StructType(
    [T.StructField("id", T.LongType(), False), T.StructField("reason", T.StringType(), False)]
)


def test_write_split_writes_two_tables_in_one_pass_and_commits_each_on_its_own(
    spark, config, tmp_path, engine
):
    good = make_table(spark, config, str(tmp_path / "good"), engine)
    bad = DeltaTableRef(spark, str(tmp_path / "bad"), config.lakehouse, engine).create(REJECTS)
    # 40 rows over 4 dates in no date order (the shuffle scrambles them); id % 10 == 3 is rejected,
    # id % 10 == 7 goes nowhere (a route without a target is not written).
    source = events(spark, 0, 40).repartition(3, "amount")
    route = F.when(F.col("id") % 10 == 3, "bad").when(F.col("id") % 10 == 7, "skip").otherwise("good")
    observed = Observation("split")
    staged = write_split(
        source.observe(observed, F.count_if(route == "good").alias("good")),
        route,
        {
            "good": (good, EVENTS.fieldNames()),
            "bad": (bad, [F.col("id"), F.concat(F.lit("id "), F.col("id").cast("string")).alias("reason")]),
        },
    )
    assert observed.get == {"good": 32}  # the single pass over the source already ran
    assert (staged["good"].rows, staged["bad"].rows) == (32, 4)
    assert (good.version(), bad.version()) == (0, 0)  # nothing is visible before a commit

    assert staged["bad"].commit(txn=("split", 1)).rows_added == 4
    staged["good"].discard()
    staged["good"].discard()  # a second discard is a no-op
    with pytest.raises(TableError, match="already committed or discarded"):
        staged["good"].commit()
    assert good.version() == 0
    same_rows(
        bad.read(),
        spark.createDataFrame([(i, f"id {i}") for i in range(3, 40, 10)], REJECTS),
    )
    if engine == "delta-rs":  # the discarded files are gone, not just uncommitted
        assert not list((tmp_path / "good").glob("event_date=*/*.parquet"))

    again = write_split(source, route, {"good": (good, EVENTS.fieldNames())})
    assert again["good"].commit(txn=("split", 1)).rows_added == 32
    same_rows(good.read(), events(spark, 0, 40).where(F.col("id") % 10 != 3).where(F.col("id") % 10 != 7))
    # Rows of one date from one task land in one file however scrambled they arrived.
    per_date: dict[str, int] = {}
    for add in log_adds(str(tmp_path / "good"), 1):
        per_date[add["partitionValues"]["event_date"]] = (
            per_date.get(add["partitionValues"]["event_date"], 0) + 1
        )
    assert sorted(per_date) == ["2026-11-01", "2026-11-02", "2026-11-03", "2026-11-04"]
    assert max(per_date.values()) <= 3  # at most one file per input task
    rerun = write_split(source, route, {"good": (good, EVENTS.fieldNames())})
    assert rerun["good"].commit(txn=("split", 1)).noop
    assert good.version() == 1


def test_write_split_of_more_dates_than_open_files_writes_one_file_per_date(spark, config, tmp_path, engine):
    """A backfill: 40 dates, ~20 per task (2 shuffle partitions), more than a task keeps open (16),
    arriving in several Arrow batches per task (as a real backfill's rows do), each with every date."""
    from lakeml.lakehouse.engines.delta_rs.writer import MAX_OPEN_FILES

    good = make_table(spark, config, str(tmp_path / "good"), engine)
    source = events(spark, 0, 800, days=40).repartition(3, "amount")
    batch_rows = "spark.sql.execution.arrow.maxRecordsPerBatch"
    previous = spark.conf.get(batch_rows)
    spark.conf.set(batch_rows, "100")
    try:
        staged = write_split(source, F.lit("good"), {"good": (good, EVENTS.fieldNames())})
    finally:
        spark.conf.set(batch_rows, previous)
    staged["good"].commit()
    per_date: dict[str, int] = {}
    for add in log_adds(str(tmp_path / "good"), 1):
        day = add["partitionValues"]["event_date"]
        per_date[day] = per_date.get(day, 0) + 1
    assert 40 / int(config.spark.conf["spark.sql.shuffle.partitions"]) > MAX_OPEN_FILES
    assert len(per_date) == 40 and set(per_date.values()) == {1}, per_date
    same_rows(good.read(), events(spark, 0, 800, days=40))


@pytest.mark.parametrize(("days", "most_files"), [(12, 12), (20, 80)])
def test_file_roller_takes_rows_in_any_partition_order_with_bounded_open_files_and_buffers(
    tmp_path, days, most_files
):
    """Executor-side writer alone (no Spark): dates interleaved row by row, 16 files open at most.

    12 dates fit: one file each. 20 dates cycled through 16 slots evict each file before its date
    comes back: at most one file per batch and date, and still every row exactly once.
    """
    import pyarrow.parquet as pq

    from lakeml.lakehouse.engines.delta_rs import writer

    spec = writer.WriteSpec(str(tmp_path), EVENTS.json(), ("event_date",), 32, 1 << 30, row_group_rows=50)
    roller = writer._FileRoller(spec, "00000-0")
    ids = list(range(400))
    for start in range(0, 400, 100):  # four batches, each touching every date
        chunk = ids[start : start + 100]
        roller.add(
            pa.RecordBatch.from_pydict(
                {
                    "id": chunk,
                    "event_date": [DAY + dt.timedelta(days=i % days) for i in chunk],
                    "amount": [None] * len(chunk),
                    "name": [f"n{i}" for i in chunk],
                },
                schema=pa.schema(
                    [
                        ("id", pa.int64()),
                        ("event_date", pa.date32()),
                        ("amount", pa.decimal128(12, 2)),
                        ("name", pa.string()),
                    ]
                ),
            )
        )
        assert len(roller.open) <= writer.MAX_OPEN_FILES
        assert roller.buffered_rows <= spec.row_group_rows
    files = roller.close()
    got = []
    for f in files:
        day = json.loads(f["partition_values"])["event_date"]
        rows = pq.read_table(tmp_path / f["path"]).to_pylist()
        assert f["num_records"] == len(rows)
        got += [(r["id"], day) for r in rows]
    assert sorted(got) == [(i, (DAY + dt.timedelta(days=i % days)).isoformat()) for i in ids]
    assert days <= len(files) <= most_files


def test_write_split_refuses_misfit_columns_and_nulls_before_anything_is_committed(
    spark, config, tmp_path, engine
):
    good = make_table(spark, config, str(tmp_path / "good"), engine)
    bad = DeltaTableRef(spark, str(tmp_path / "bad"), config.lakehouse, engine).create(REJECTS)
    source = events(spark, 0, 10)
    with pytest.raises(TableError, match="not the columns of .* in table order"):
        write_split(source, F.lit("good"), {"good": (good, ["event_date", "id", "amount", "name"])})
    with pytest.raises(TableError, match=r"amount is decimal\(12,2\) in the table but string"):
        write_split(
            source, F.lit("good"), {"good": (good, ["id", "event_date", F.lit("x").alias("amount"), "name"])}
        )
    route = F.when(F.col("id") < 5, "good").otherwise("bad")
    with pytest.raises(Exception, match="(?i)null"):
        staged = write_split(
            source,
            route,
            {
                "good": (good, EVENTS.fieldNames()),
                "bad": (bad, ["id", F.lit(None).cast("string").alias("reason")]),  # reason is NOT NULL
            },
        )
        for files in staged.values():
            files.commit()
    assert (good.version(), bad.version()) == (0, 0)


def test_schema_mismatch_names_the_columns(spark, config, table_path, engine):
    t = make_table(spark, config, table_path, engine)
    with pytest.raises(TableError, match="column extra .*merge_schema"):
        t.append(events(spark, 0, 5).withColumn("extra", F.lit("x")))
    with pytest.raises(TableError, match=r"column amount is decimal\(12,2\) in the table but string"):
        t.append(events(spark, 0, 5).withColumn("amount", F.lit("12.5")))
    assert t.version() == 0


def test_merge_schema_adds_nullable_columns_and_widens_safely(spark, config, table_path, engine):
    t = make_table(spark, config, table_path, engine)
    t.append(events(spark, 0, 5))
    narrow_ids = events(spark, 5, 10).withColumn("id", F.col("id").cast("int"))
    t.append(narrow_ids.withColumn("channel", F.lit("web")), merge_schema=True)
    assert t.schema()["channel"].dataType == T.StringType()
    got = t.read().groupBy(F.col("channel").isNull().alias("old")).count().orderBy("old").collect()
    assert [(r.old, r["count"]) for r in got] == [(False, 5), (True, 5)]
    # a later write without the new column fills it with null
    t.append(events(spark, 10, 12))
    assert t.read().where("channel IS NULL").count() == 7


def test_nested_fields_take_stricter_data_and_refuse_looser(spark, config, table_path, engine):
    point = T.StructType([T.StructField("x", T.LongType(), True), T.StructField("tag", T.StringType(), True)])
    schema = T.StructType([T.StructField("id", T.LongType(), False), T.StructField("p", point, True)])
    t = DeltaTableRef(spark, table_path, config.lakehouse, engine).create(schema)
    strict = spark.range(3).select("id", F.struct(F.col("id").alias("x"), F.lit("a").alias("tag")).alias("p"))
    assert not strict.schema["p"].dataType["x"].nullable  # the premise: NOT NULL inside the struct
    t.append(strict)
    assert sorted((r.id, r.p.x, r.p.tag) for r in t.read().collect()) == [
        (0, 0, "a"),
        (1, 1, "a"),
        (2, 2, "a"),
    ]
    assert t.schema() == schema
    strict_table = DeltaTableRef(spark, table_path + "-strict", config.lakehouse, engine).create(
        strict.schema
    )
    loose = spark.range(1).select(
        "id", F.struct(F.lit(None).cast("long").alias("x"), F.lit("a").alias("tag")).alias("p")
    )
    with pytest.raises(
        TableError, match=r"column p is struct<x:bigint,tag:string> in the table .*nested field"
    ):
        strict_table.append(loose)
    assert strict_table.version() == 0


def test_a_folder_without_a_table_and_an_unwritable_protocol_get_clear_errors(
    spark, config, tmp_path, engine
):
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "data.csv").write_text("id\n1\n")
    ref = DeltaTableRef(spark, str(plain), config.lakehouse, engine)
    assert not ref.exists()
    with pytest.raises(TableError, match="no Delta table at"):
        ref.read()
    with pytest.raises(TableError, match="no Delta table at"):
        ref.append(events(spark, 0, 3))
    # A later writer raised the protocol to a writer feature neither engine knows.
    t = make_table(spark, config, str(tmp_path / "future"), engine)
    t.append(events(spark, 0, 5))
    features = ["appendOnly", "invariants", "lakemlFutureFeature"]  # the first two: writer version 2's
    protocol = {"minReaderVersion": 1, "minWriterVersion": 7, "writerFeatures": features}
    Path(t.uri, "_delta_log", f"{2:020d}.json").write_text(
        json.dumps({"protocol": protocol})
        + "\n"
        + json.dumps({"commitInfo": {"operation": "UPGRADE"}})
        + "\n"
    )
    with pytest.raises(TableError, match="could not commit.*lakemlFutureFeature"):
        t.append(events(spark, 5, 10))
    assert t.version() == 2
    same_rows(t.read(), events(spark, 0, 5))


# ---------------------------------------------------------------------------- overwrite_where


def test_overwrite_where_replaces_one_partition_atomically(spark, config, table_path, engine):
    t = make_table(spark, config, table_path, engine)
    t.append(events(spark, 0, 400))
    day = DAY + dt.timedelta(days=1)
    replacement = events(spark, 1000, 1040, days=1, name="rerun").withColumn("event_date", F.lit(day))
    t.overwrite_where(replacement, [("event_date", "=", day)])
    expected = events(spark, 0, 400).where(F.col("event_date") != F.lit(day)).unionByName(replacement)
    same_rows(t.read(), expected)
    # the same rerun again gives the same table
    t.overwrite_where(replacement, [("event_date", "=", day.isoformat())])
    same_rows(t.read(), expected)


def test_overwrite_where_with_open_files_takes_rows_in_no_partition_order(spark, config, table_path, engine):
    t = make_table(spark, config, table_path, engine)
    t.append(events(spark, 0, 10))
    dates = [("event_date", ">=", DAY), ("event_date", "<", DAY + dt.timedelta(days=4))]
    # One task whose rows cycle through the 4 dates, over several Arrow batches.
    rows = events(spark, 0, 30_000).coalesce(1)
    for open_files in (4, 2):
        outcome = t.overwrite_where(rows, dates, open_files=open_files)
        same_rows(t.read(), events(spark, 0, 30_000))
        adds = log_adds(table_path, outcome.version)
        assert sum(json.loads(a["stats"])["numRecords"] for a in adds) == 30_000
        # Each date's rows go to one task first (by_table_partition): a file per date either way.
        assert len(adds) == 4
    if engine == "delta-rs":  # a task holding more dates than open files finishes the least recently used
        from lakeml.lakehouse.engines.delta_rs.writer import write_files

        spec = dataclasses.replace(t.engine.write_spec(), open_files=2)
        written = write_files(rows, spec)
        t.engine.discard_written(written)
        assert len(written) > 4 and sum(f.num_records for f in written) == 30_000


def test_overwrite_where_refuses_rows_outside_the_predicate(spark, config, table_path, engine):
    t = make_table(spark, config, table_path, engine)
    t.append(events(spark, 0, 100))
    before = t.version()
    data_files = lambda: sorted(p.name for p in Path(table_path).rglob("*.parquet"))  # noqa: E731
    files_before = data_files()
    with pytest.raises(TableError, match="outside"):
        t.overwrite_where(events(spark, 0, 100), [("event_date", "=", DAY)])
    if engine == "delta-rs":  # it deletes what it wrote; Delta leaves a failed write's files to vacuum
        assert data_files() == files_before
    with pytest.raises(TableError, match="partition columns"):
        t.overwrite_where(events(spark, 0, 10), [("id", "<", 5)])
    assert t.version() == before
    assert t.read().count() == 100


# ---------------------------------------------------------------------------- merge


def test_merge_upserts_and_rewrites_only_files_that_hold_keys(spark, config, table_path, engine):
    t = make_table(spark, config, table_path, engine)
    t.append(events(spark, 0, 400))
    before = {a["path"] for a in _live_files(table_path)}
    last_day = DAY + dt.timedelta(days=3)
    # updates of existing ids (all on the last day) + new ids on the last day
    updates = events(spark, 0, 400).where(F.col("event_date") == F.lit(last_day)).limit(10)
    updates = updates.withColumn("name", F.lit("updated"))
    new = events(spark, 5000, 5010, days=1).withColumn("event_date", F.lit(last_day))
    outcome = t.merge(updates.unionByName(new), ["id"])
    assert not outcome.noop
    table = t.read()
    assert table.count() == 410
    assert table.where("name = 'updated'").count() == 10
    assert table.where("id >= 5000").count() == 10
    after = {a["path"] for a in _live_files(table_path)}
    untouched_partitions = {p for p in before if f"event_date={last_day}" not in p}
    assert untouched_partitions <= after, "files outside the merged partition must not be rewritten"


def test_merge_rejects_duplicate_source_keys_or_deduplicates_deterministically(
    spark, config, table_path, engine
):
    t = make_table(spark, config, table_path, engine)
    t.append(events(spark, 0, 10))
    dup = events(spark, 3, 4, name="a").unionByName(events(spark, 3, 4, name="b"))
    with pytest.raises(TableError, match="duplicate keys.*id=3"):
        t.merge(dup, ["id"])
    assert t.version() == 1
    # the same key in two partitions of the source is a duplicate too
    far_day = DAY + dt.timedelta(days=30)
    across = events(spark, 4, 5).unionByName(events(spark, 4, 5).withColumn("event_date", F.lit(far_day)))
    with pytest.raises(TableError, match="duplicate keys.*id=4"):
        t.merge(across, ["id"])
    assert t.version() == 1
    t.merge(dup, ["id"], deduplicate_by=["name"])
    assert [r.name for r in t.read().where("id = 3").collect()] == ["b"]


# Each plan once: few candidates (broadcast) as an upsert and with a rewrite; the shuffled matches
# path (merge_broadcast_rows=0) with updates + inserts, deletes, and inserts only.
@pytest.mark.parametrize(
    ("when_matched", "when_not_matched", "broadcast_rows"),
    [
        ("update", "insert", 1_000_000),
        ("update", "ignore", 1_000_000),
        ("update", "insert", 0),
        ("delete", "ignore", 0),
        ("ignore", "insert", 0),
    ],
)
def test_merge_result_equals_its_definition_with_and_without_broadcast(
    spark, config, tmp_path, engine, when_matched, when_not_matched, broadcast_rows
):
    lakehouse = dataclasses.replace(config.lakehouse, merge_broadcast_rows=broadcast_rows)
    t = make_table(spark, dataclasses.replace(config, lakehouse=lakehouse), str(tmp_path / "t"), engine)
    target = events(spark, 0, 40)
    t.append(target)
    # updates of ids spread over every date, plus new ids
    source = events(spark, 0, 40, name="u").where("id % 5 = 0").unionByName(events(spark, 100, 108, name="n"))
    t.merge(source, ["id"], when_matched=when_matched, when_not_matched=when_not_matched)
    unmatched_target = target.join(source.select("id"), ["id"], "left_anti")
    expected = {
        ("update", "insert"): unmatched_target.unionByName(source),
        ("ignore", "insert"): target.unionByName(source.join(target.select("id"), ["id"], "left_anti")),
        ("update", "ignore"): unmatched_target.unionByName(
            source.join(target.select("id"), ["id"], "left_semi")
        ),
        ("delete", "ignore"): unmatched_target,
    }[(when_matched, when_not_matched)]
    same_rows(t.read(), expected.select(*EVENTS.fieldNames()))


def test_merge_of_an_empty_source_changes_nothing_with_or_without_partitions(spark, config, tmp_path, engine):
    for partition_by in (["event_date"], []):
        t = DeltaTableRef(spark, str(tmp_path / f"t{len(partition_by)}"), config.lakehouse, engine)
        t.create(EVENTS, partition_by).append(events(spark, 0, 8))
        t.merge(events(spark, 0, 0), ["id"])
        same_rows(t.read(), events(spark, 0, 8))


def test_merge_with_txn_is_idempotent(spark, config, table_path, engine):
    t = make_table(spark, config, table_path, engine)
    t.append(events(spark, 0, 20))
    upd = events(spark, 15, 25, name="u")
    assert not t.merge(upd, ["id"], txn=("upsert", 1)).noop
    v = t.version()
    assert t.merge(upd, ["id"], txn=("upsert", 1)).noop
    assert t.version() == v
    assert t.read().count() == 25


# ---------------------------------------------------------------------------- time travel, changes, history


def test_time_travel_by_version_and_timestamp(spark, config, table_path, engine):
    t = make_table(spark, config, table_path, engine)
    t.append(events(spark, 0, 50))
    stamp = dt.datetime.now(dt.UTC)
    t.overwrite_where(events(spark, 0, 10, days=1, name="v2"), [("event_date", "=", DAY)])
    same_rows(t.read(version=1), events(spark, 0, 50))
    assert t.read(timestamp=stamp).count() == 50
    assert t.read(version=2).where("name = 'v2'").count() == 10
    with pytest.raises(TableError):
        t.read(version=1, timestamp=stamp)


def test_changes_since_returns_only_appended_rows(spark, config, table_path, engine):
    t = make_table(spark, config, table_path, engine)
    t.append(events(spark, 0, 30))
    v1 = t.version()
    t.append(events(spark, 30, 45))
    t.append(events(spark, 45, 50))
    same_rows(t.changes_since(v1), events(spark, 30, 50))
    same_rows(t.changes_since(v1, until=v1 + 1), events(spark, 30, 45))
    assert t.changes_since(t.version()).count() == 0
    t.overwrite_where(events(spark, 0, 5, days=1), [("event_date", "=", DAY)])
    with pytest.raises(TableError, match="append-only"):
        t.changes_since(v1)


def test_history_lists_every_commit_newest_first(spark, config, table_path, engine):
    t = make_table(spark, config, table_path, engine)
    t.append(events(spark, 0, 10))
    t.merge(events(spark, 5, 15), ["id"])
    history = t.history()
    assert [h["version"] for h in history] == [2, 1, 0]
    assert all(isinstance(h["timestamp"], int) for h in history)
    assert all(h["lineage"] == {} for h in history)  # written outside a job


def test_every_commit_of_a_job_names_the_run_that_made_it(spark, config, table_path, engine):
    t = make_table(spark, config, table_path, engine)  # created outside a job
    with commit_lineage("demo.job", "run-1", dt.date(2026, 1, 2)):
        t.append(events(spark, 0, 10))
        t.merge(events(spark, 5, 15), ["id"])
        t.overwrite_where(events(spark, 0, 5, days=1), [("event_date", "=", DAY)])
        t.optimize()
        t.vacuum(retention_hours=0, enforce_retention=False)
    with commit_lineage("demo.other", "run-2", dt.date(2026, 1, 3)):
        t.append(events(spark, 20, 25))
    by_version = {h["version"]: h["lineage"] for h in t.history()}
    first = {"job": "demo.job", "run_id": "run-1", "run_date": "2026-01-02"}
    assert by_version[0] == {}
    assert by_version[1] == by_version[2] == by_version[3] == first
    assert all(lineage == first for v, lineage in by_version.items() if 3 < v < t.version())
    assert by_version[t.version()] == {"job": "demo.other", "run_id": "run-2", "run_date": "2026-01-03"}


# ---------------------------------------------------------------------------- optimize, vacuum


def test_optimize_compacts_small_files_without_changing_data(spark, config, table_path, engine):
    t = make_table(spark, config, table_path, engine)
    for i in range(4):
        t.append(events(spark, i * 100, (i + 1) * 100))
    before = len(_live_files(table_path))
    snapshot = t.read()
    expected = spark.createDataFrame(snapshot.collect(), EVENTS)
    t.optimize()
    after = len(_live_files(table_path))
    assert after < before
    assert after >= 4  # one per date partition at least
    same_rows(t.read(), expected)
    assert t.changes_since(t.version() - 1).count() == 0  # compaction is not new data


def test_vacuum_removes_unreferenced_files_but_keeps_protected_versions(spark, config, table_path, engine):
    t = make_table(spark, config, table_path, engine)
    t.append(events(spark, 0, 100))
    t.protect(1, "model fraud v1")
    t.overwrite_where(events(spark, 0, 5, days=1, name="v2"), [("event_date", "=", DAY)])
    t.append(events(spark, 100, 110))
    t.overwrite_where(events(spark, 200, 205, days=1, name="v4"), [("event_date", "=", DAY)])
    assert t.protected_versions() == {1: ["model_fraud_v1"]}
    deleted = t.vacuum(retention_hours=0, enforce_retention=False)
    # version 2's files for DAY were replaced at version 4 and nobody protects them
    assert deleted, "the files replaced at version 4 must be vacuumed"
    assert not any(_exists(table_path, p) for p in deleted)
    same_rows(t.read(version=1), events(spark, 0, 100))  # protected version still readable
    t.unprotect(1, "model fraud v1")
    assert t.vacuum(retention_hours=0, enforce_retention=False), "unprotected files go on the next vacuum"
    # 75 rows off DAY from v1, 7 off DAY from v3, and v4's 5 rows on DAY
    assert t.read().count() == 87


def test_vacuum_refuses_short_retention_by_default(spark, config, table_path, engine):
    t = make_table(spark, config, table_path, engine)
    t.append(events(spark, 0, 10))
    with pytest.raises(Exception, match="(?i)retention"):
        t.vacuum(retention_hours=0)


# ---------------------------------------------------------------------------- helpers


def _live_files(path: str) -> list[dict]:
    return pa.table(DeltaTable(path).get_add_actions(flatten=True)).select(["path"]).to_pylist()


def _exists(root: str, relative: str) -> bool:
    from urllib.parse import unquote

    return os.path.exists(os.path.join(root, unquote(relative)))


def test_decimal_amounts_survive_exactly(spark, config, table_path, engine):
    t = make_table(spark, config, table_path, engine)
    t.append(events(spark, 7, 8))
    assert t.read().collect()[0].amount == Decimal("8.75")


def test_txn_version_zero_counts_as_committed(spark, config, table_path, engine):
    t = make_table(spark, config, table_path, engine)
    assert not t.append(events(spark, 0, 5), txn=("stream", 0)).noop
    assert t.append(events(spark, 0, 5), txn=("stream", 0)).noop
    assert t.merge(events(spark, 0, 5), ["id"], txn=("stream", 0)).noop
    assert t.read().count() == 5


def test_reads_take_partition_values_from_plain_hive_folders_or_else_from_the_log(
    spark, config, table_path, engine
):
    t = make_table(spark, config, table_path, engine)
    t.append(events(spark, 0, 240, days=12))  # more partitions than the inline file-name mapping takes
    same_rows(t.read(), events(spark, 0, 240, days=12))
    window = [
        ("event_date", ">=", DAY + dt.timedelta(days=3)),
        ("event_date", "<", DAY + dt.timedelta(days=9)),
    ]
    expected = events(spark, 0, 240, days=12).where(
        F.col("event_date").between(DAY + dt.timedelta(days=3), DAY + dt.timedelta(days=8))
    )
    same_rows(t.read(where=window), expected)
    if engine == "delta-rs":  # the plain folders are read as partitions: no join with the file list
        plan = t.read()._jdf.queryExecution().executedPlan().toString()
        assert "Join" not in plan
    t.append_rows([(1000, None, Decimal("1.00"), "no date")])  # a NULL partition value
    null_row = spark.createDataFrame([(1000, None, Decimal("1.00"), "no date")], EVENTS)
    same_rows(t.read(), events(spark, 0, 240, days=12).unionByName(null_row))
    same_rows(t.read(where=[("event_date", "is null", None)]), null_row)


def test_hive_layout_needs_every_folder_to_name_its_own_plain_values():
    from lakeml.lakehouse.files import FileEntry, hive_layout

    def entry(path, **values):
        return FileEntry(path, 1, values, 1, {}, {}, {})

    types = {"d": T.DateType(), "region": T.StringType(), "at": T.TimestampType()}
    plain = [entry("d=2026-11-01/region=EU/a.parquet", d=DAY, region="EU")]
    assert hive_layout(plain, ["d", "region"], types)
    assert not hive_layout(plain, ["region", "d"], types)  # folders in another order
    assert not hive_layout(
        [entry("d=2026-11-02/region=EU/a.parquet", d=DAY, region="EU")], ["d", "region"], types
    )
    assert not hive_layout([entry("x/a.parquet", d=DAY, region="EU")], ["d", "region"], types)
    assert not hive_layout([entry("a.parquet", d=DAY, region="EU")], ["d", "region"], types)
    null = entry("d=__HIVE_DEFAULT_PARTITION__/region=EU/a.parquet", d=None, region="EU")
    assert not hive_layout([null], ["d", "region"], types)
    escaped = entry("d=2026-11-01/region=E%20U/a.parquet", d=DAY, region="E U")
    assert not hive_layout([escaped], ["d", "region"], types)
    stamp = dt.datetime(2026, 11, 1, 12)
    assert not hive_layout([entry(f"at={stamp}/a.parquet", at=stamp)], ["at"], types)


def test_writes_make_one_file_per_partition_not_one_per_task(spark, config, table_path, engine):
    table = make_table(spark, config, table_path, engine)
    spread = events(spark, 0, 400).repartition(8)  # 8 tasks, each holding rows of all 4 dates
    assert spread.rdd.getNumPartitions() == 8
    version = table.append(spread).version
    assert len(log_adds(table_path, version)) == 4  # one per date (tiny: far below the target size)
    again = events(spark, 0, 400, name="v2").repartition(8)
    version = table.overwrite_where(again, [("event_date", ">=", DAY)]).version
    assert len(log_adds(table_path, version)) == 4
    assert table.read().where(F.col("name") == "v2").count() == 400
