"""Benchmark the table layer against plain Spark Parquet, measured in one run on one DataFrame.

    .venv/bin/python scripts/bench_lakehouse.py [--rows 10000000] [--days 60] [--engine delta-rs]

Prints seconds and ratios:
  append            lakeml append ÷ df.write.partitionBy(...).parquet          (target ≤ 1.15)
  merge, clustered  1 % updated + 1 % new keys in the last 3 days ÷ full rewrite (target ≤ 0.2);
                    the median of 3 successive late-data merges ÷ the faster of 2 rewrites
  merge, random     1 % updated keys spread over every file ÷ full rewrite      (native delta: ~3×)
  filtered read     partition + stats pruned aggregate ÷ full-scan aggregate
and the driver's peak Python memory after a small and the full-size write (must not grow with rows).
"""

from __future__ import annotations

import argparse
import datetime as dt
import resource
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lakeml.config import load_config
from lakeml.lakehouse import DeltaTableRef
from lakeml.session import build_spark

START = dt.date(2026, 1, 1)
SCHEMA = T.StructType(
    [
        T.StructField("id", T.LongType(), False),
        T.StructField("event_date", T.DateType(), False),
        T.StructField("user_id", T.LongType(), True),
        T.StructField("amount", T.DoubleType(), True),
        T.StructField("category", T.StringType(), True),
        T.StructField("ts", T.TimestampType(), True),
        T.StructField("note", T.StringType(), True),
    ]
)


def generate(spark: SparkSession, rows: int, days: int, first_id: int = 0) -> DataFrame:
    """Rows clustered by date like ingested events: id order follows event date."""
    per_day = max(rows // days, 1)
    df = spark.range(first_id, first_id + rows).select(
        F.col("id"),
        F.date_add(
            F.lit(START), F.least(F.floor((F.col("id") - first_id) / per_day), F.lit(days - 1)).cast("int")
        ).alias("event_date"),
        (F.xxhash64("id") % 100_000).alias("user_id"),
        (F.abs(F.xxhash64("id", F.lit(1))) % 100_000 / 100.0).alias("amount"),
        F.concat(F.lit("cat-"), (F.abs(F.xxhash64("id", F.lit(2))) % 50).cast("string")).alias("category"),
        F.timestamp_seconds(F.lit(1_767_225_600) + F.col("id") % 86_400).alias("ts"),
        F.sha2(F.col("id").cast("string"), 256).substr(1, 24).alias("note"),
    )
    return df.select(*[F.col(f.name).cast(f.dataType) for f in SCHEMA])


def late_data(spark: SparkSession, table: DeltaTableRef, rows: int, days: int, batch: int = 0) -> DataFrame:
    """Merge source: 1 % of ``rows`` as updates of keys in the last 3 days, and 1 % new keys on the last day.

    Each ``batch`` updates other keys and adds other new ones, as successive late-data loads do.
    """
    last_days = START + dt.timedelta(days=days - 3)
    every = max(1, round(3 * 100 / days))
    updated = (
        table.read(where=[("event_date", ">=", last_days)])
        .where(F.pmod(F.xxhash64("id"), F.lit(every)) == batch % every)
        .withColumn("amount", F.col("amount") + 1)
    )
    new_rows = generate(spark, rows // 100, 1, first_id=rows * (1 + batch)).withColumn(
        "event_date", F.lit(START + dt.timedelta(days=days - 1))
    )
    return updated.unionByName(new_rows)


def timed(label: str, action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    seconds = time.perf_counter() - started
    print(f"  {label:<48} {seconds:8.2f} s", flush=True)
    return seconds


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--engine", default="delta-rs", choices=["delta-rs", "delta-spark"])
    parser.add_argument("--workdir", default=None, help="scratch folder (default: a temp dir, removed after)")
    args = parser.parse_args()

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-lakehouse-"))
    config = load_config(
        "local",
        [
            f"lakehouse.root={work}",
            "spark.conf.spark.driver.memory=10g",
            "spark.conf.spark.sql.shuffle.partitions=8",
        ],
    )
    spark = build_spark(config, app_name="bench-lakehouse")
    lake = config.lakehouse
    print(
        f"rows={args.rows:,} days={args.days} engine={args.engine} cores={spark.sparkContext.defaultParallelism}"
    )

    small_rows = max(args.rows // 10, 1000)
    warm = DeltaTableRef(spark, str(work / "warm"), lake, args.engine).create(SCHEMA, ["event_date"])
    warm.append(generate(spark, small_rows, args.days))
    # Warm-up on the small table, so every timed operation below runs on a warmed JVM (JIT, codegen)
    # as the baseline write does: steady-state figures, not first-call ones.
    warm.merge(late_data(spark, warm, small_rows, args.days), ["id"])
    rss_small = peak_rss_mb()

    source = generate(spark, args.rows, args.days).persist(StorageLevel.MEMORY_AND_DISK)
    source.count()
    print("write")
    base = timed(
        "plain Spark parquet write (partitioned)",
        lambda: source.write.mode("overwrite").partitionBy("event_date").parquet(str(work / "plain")),
    )
    table = DeltaTableRef(spark, str(work / "table"), lake, args.engine).create(SCHEMA, ["event_date"])
    append = timed("lakeml append", lambda: table.append(source))
    rss_full = peak_rss_mb()
    source.unpersist()

    print("merge")
    # Short operations on a shared 2-core VM are noisy: the rewrite is timed twice (the faster one is
    # the baseline, the conservative choice) and the clustered merge three times (the median counts).
    rewrites = [
        timed(
            f"full-table rewrite (read all + write all) #{i + 1}",
            lambda i=i: (
                DeltaTableRef(spark, str(work / f"rewrite{i}"), lake, args.engine)
                .create(SCHEMA, ["event_date"])
                .append(table.read())
            ),
        )
        for i in range(2)
    ]
    rewrite = min(rewrites)
    merges = []
    for batch in range(3):
        late = late_data(spark, table, args.rows, args.days, batch).persist(StorageLevel.MEMORY_AND_DISK)
        late.count()
        merges.append(
            timed(
                f"merge 1% updated + 1% new, last 3 days #{batch + 1}", lambda s=late: table.merge(s, ["id"])
            )
        )
        late.unpersist()
    clustered = statistics.median(merges)

    random_keys = table.read().sample(fraction=0.01, seed=7).withColumn("amount", F.col("amount") + 2)
    random_source = random_keys.persist(StorageLevel.MEMORY_AND_DISK)
    random_source.count()
    random_merge = timed("merge 1% random keys over every file", lambda: table.merge(random_source, ["id"]))
    random_source.unpersist()

    print("read")
    full_scan = timed("full scan: sum(amount)", lambda: table.read().agg(F.sum("amount")).collect())
    day = START + dt.timedelta(days=args.days // 2)
    n = args.rows
    lo = (args.days // 2) * (n // args.days)
    where = [("event_date", "=", day), ("id", ">=", lo), ("id", "<", lo + 1000)]
    pruned = timed(
        "pruned: one date + id range, sum(amount)",
        lambda: table.read(where=where).agg(F.sum("amount")).collect(),
    )
    files_total, files_read = len(table.files()), len(table.files(where))

    print("results")
    print(f"  append / plain parquet write            {append / base:6.2f}   (target <= 1.15)")
    print(
        f"  clustered merge / full rewrite          {clustered / rewrite:6.2f}   (target <= 0.20; median of 3 ÷ faster of 2)"
    )
    print(
        f"  random 1% merge / full rewrite          {random_merge / rewrite:6.2f}   (native connector ~3.0)"
    )
    print(
        f"  pruned read / full scan                 {pruned / full_scan:6.2f}   ({files_read} of {files_total} files)"
    )
    print(
        f"  driver peak RSS  {rss_small:7.0f} MB after {small_rows:,} rows, "
        f"{rss_full:7.0f} MB after {args.rows:,} rows"
    )
    spark.stop()
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
