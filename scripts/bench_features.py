"""Benchmark the gold feature builders: rows/s of a full recompute, and one incremental day ÷ full.

    .venv/bin/python scripts/bench_features.py [--scale 100] [--days 30] [--tables transaction_features,...]

Silver tables are synthesized with Spark at the generator's volumes per scale unit (not timed):
transactions 3,700/day, clickstream 5,800/day, telemetry 3,800/day (30 machines × 144 cycles).
For each feature table it then times a full recompute of the ``--days``-day table (every as_of_date
in one run) and the incremental run of its last day, and prints rows, seconds, rows/s and
incremental ÷ full (target ≤ 0.2 for a 30-day table).
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from lakeml.config import Config, load_config
from lakeml.domains.banking.silver import CHARGEBACKS_SILVER_SCHEMA, TRANSACTIONS_SILVER_SCHEMA
from lakeml.lakehouse import Lakehouse
from lakeml.session import build_spark

END = dt.date(2026, 3, 31)
TXNS_PER_SCALE_DAY = 3_700


def _conform(df: DataFrame, schema) -> DataFrame:  # type: ignore[no-untyped-def]
    return df.select(*[F.col(f.name).cast(f.dataType) for f in schema.fields])


def synth_transactions(
    spark: SparkSession, scale: int, first: dt.date, days: int
) -> tuple[DataFrame, DataFrame]:
    """Silver transactions and chargebacks: cards with repeat spend, 19 MCCs, 14 countries, 0.5 % charged back."""
    per_day = TXNS_PER_SCALE_DAY * scale
    cards = 3_000 * scale
    start = int(dt.datetime.combine(first, dt.time(), dt.UTC).timestamp())
    rows = spark.range(per_day * days).select(
        F.col("id"),
        F.floor(F.col("id") / per_day).alias("day"),
        F.xxhash64("id", F.lit(1)).alias("h1"),
        F.xxhash64("id", F.lit(2)).alias("h2"),
    )
    u = lambda h: F.abs(F.col(h) % 1_000_003) / 1_000_003.0  # noqa: E731
    ts = F.timestamp_seconds(F.lit(start) + F.col("day") * 86_400 + F.floor(u("h1") * 86_400))
    countries = F.array(
        *[
            F.lit(c)
            for c in ("US", "GB", "DE", "FR", "ES", "IT", "NL", "BR", "IN", "JP", "AU", "ZA", "SG", "MX")
        ]
    )
    mccs = F.array(
        *[
            F.lit(m)
            for m in (
                "5411",
                "5812",
                "5814",
                "5541",
                "5912",
                "5311",
                "5691",
                "5732",
                "5944",
                "4111",
                "4121",
                "7011",
                "5999",
                "5816",
                "5967",
                "7995",
                "4829",
                "6051",
                "6011",
            )
        ]
    )
    txns = rows.select(
        F.concat(F.lit("tx"), F.col("id").cast("string")).alias("txn_id"),
        ts.alias("ts"),
        F.sha2(F.floor(F.pow(u("h2"), 1.3) * cards).cast("string"), 256).alias("card_token"),
        F.lit("0000").alias("card_last4"),
        F.lit("A1").alias("account_id"),
        F.concat(F.lit("M"), (F.abs(F.col("h2")) % (400 * scale)).cast("string")).alias("merchant_id"),
        F.element_at(mccs, (F.abs(F.col("h1")) % 19 + 1).cast("int")).alias("mcc"),
        F.round(F.exp(u("h1") * 6), 2).alias("amount"),
        F.lit("EUR").alias("currency"),
        F.round(F.exp(u("h1") * 6), 2).alias("amount_eur"),
        F.lit("pos").alias("channel"),
        F.element_at(countries, (F.abs(F.col("h2")) % 14 + 1).cast("int")).alias("country"),
        (u("h1") * 120 - 60).alias("lat"),
        (u("h2") * 300 - 150).alias("lon"),
        F.lit(True).alias("card_present"),
        F.to_date(ts).alias("event_date"),
        F.lit("synthetic").alias("_source_file"),
        ts.alias("_ingested_at"),
    )
    charged = txns.where(F.abs(F.xxhash64("txn_id")) % 200 == 0)
    reported = F.col("ts") + F.make_dt_interval(days=F.lit(5))
    chargebacks = charged.select(
        "txn_id",
        reported.alias("reported_at"),
        F.lit("10.4").alias("reason_code"),
        F.lit(False).alias("is_reversal"),
        F.to_date(reported).alias("event_date"),
        F.lit("synthetic").alias("_source_file"),
        reported.alias("_ingested_at"),
    )
    return _conform(txns, TRANSACTIONS_SILVER_SCHEMA), _conform(chargebacks, CHARGEBACKS_SILVER_SCHEMA)


def prepare_banking(spark: SparkSession, config: Config, scale: int, days: int) -> int:
    first = END - dt.timedelta(days=days + 30)  # the full recompute's lookback exists too
    txns, chargebacks = synth_transactions(spark, scale, first, days + 31)
    lake = Lakehouse(spark, config)
    lake.table("silver", "transactions").create(TRANSACTIONS_SILVER_SCHEMA, ["event_date"]).append(txns)
    lake.table("silver", "chargebacks").create(CHARGEBACKS_SILVER_SCHEMA, ["event_date"]).append(chargebacks)
    return (
        lake.table("silver", "transactions")
        .read(where=[("event_date", ">", END - dt.timedelta(days=days))])
        .count()
    )


def bench_table(
    name: str, build: Callable[[dt.date, dt.date], dict[str, int]], days: int, rows_in_table: int
) -> None:
    first = END - dt.timedelta(days=days - 1)
    started = time.perf_counter()
    build(first, END)
    full = time.perf_counter() - started
    started = time.perf_counter()
    build(END, END)
    incremental = time.perf_counter() - started
    print(
        f"{name:<26}{rows_in_table:>12,}{full:>9.1f}{rows_in_table / full:>11,.0f}{incremental:>9.1f}"
        f"{incremental / full:>9.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=100)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--tables", default="transaction_features")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lakeml-bench-features-"))
    try:
        config = load_config("local", [f"lakehouse.root={work}", "spark.conf.spark.ui.enabled=false"])
        spark = build_spark(config, app_name="lakeml-bench-features")
        print(f"scale {args.scale}, {args.days}-day tables ending {END}; full = every day in one run")
        print(f"{'table':<26}{'rows':>12}{'full s':>9}{'rows/s':>11}{'1 day s':>9}{'1 day÷full':>9}")
        for table in args.tables.split(","):
            if table == "transaction_features":
                from lakeml.domains.banking.features import build_transaction_features

                rows = prepare_banking(spark, config, args.scale, args.days)
                bench_table(
                    table, lambda a, b: build_transaction_features(spark, config, a, b), args.days, rows
                )
            else:
                raise SystemExit(f"unknown table {table}")
        print("(target: 1 day ÷ full ≤ 0.2)")
        spark.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
