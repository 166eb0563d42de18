"""Benchmark the gold feature builders: rows/s of a full recompute, and one incremental day ÷ full.

    .venv/bin/python scripts/bench_features.py [--scale 100] [--days 30] [--tables transaction_features,...]

Silver tables are synthesized with Spark at the generator's volumes per scale unit (not timed):
transactions 3,700/day, clickstream 5,800/day, telemetry 3,800/day (30 machines × 144 cycles).
For each feature table it then times a full recompute of the ``--days``-day table ending the day
before the last silver day (every as_of_date in one run, on an empty gold layer), then the
incremental run of the next day, as the daily schedule runs it (per-day aggregates stored by the
full run are reused; that day's are computed), and prints rows, seconds, rows/s and incremental ÷
full (target ≤ 0.2 for a 30-day table). For transaction_features it then times the
separate label-refresh job a week later (not part of the incremental day).
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
from lakeml.domains.commerce.silver import CLICKSTREAM_SILVER_SCHEMA
from lakeml.domains.maintenance.silver import MAINTENANCE_SILVER_SCHEMA, SENSORS, TELEMETRY_SILVER_SCHEMA
from lakeml.lakehouse import Lakehouse
from lakeml.session import build_spark
from lakeml.steps import DateRange

END = dt.date(2026, 3, 31)
TXNS_PER_SCALE_DAY = 3_700
CLICKS_PER_SCALE_DAY = 5_800
MACHINES_PER_SCALE = 30
READINGS_PER_DAY = 144


def _conform(df: DataFrame, schema) -> DataFrame:  # type: ignore[no-untyped-def]
    return df.select(*[F.col(f.name).cast(f.dataType) for f in schema.fields])


def synth_transactions(
    spark: SparkSession, scale: int, first: dt.date, days: int
) -> tuple[DataFrame, DataFrame]:
    """Silver transactions and chargebacks: cards with repeat spend, 19 MCCs, 14 countries, 0.5 % charged
    back."""
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
    return lake.table("silver", "transactions").read(where=full_run_days(days)).count()


def _u(column: str, salt: int) -> F.Column:
    return F.abs(F.xxhash64(column, F.lit(salt)) % 1_000_003) / 1_000_003.0


def prepare_commerce(spark: SparkSession, config: Config, scale: int, days: int, lookback: int) -> int:
    """Silver clickstream: users with skewed activity, Zipf-like items, the generator's event mix."""
    per_day = CLICKS_PER_SCALE_DAY * scale
    first = END - dt.timedelta(days=days + lookback)
    start = int(dt.datetime.combine(first, dt.time(), dt.UTC).timestamp())
    n_days = days + lookback + 1
    rows = spark.range(per_day * n_days).withColumn("day", F.floor(F.col("id") / per_day))
    ts = F.timestamp_seconds(F.lit(start) + F.col("day") * 86_400 + F.floor(_u("id", 1) * 86_400))
    kinds = (
        F.when(_u("id", 3) < 0.70, "view")
        .when(_u("id", 3) < 0.82, "add_to_cart")
        .when(_u("id", 3) < 0.85, "remove_from_cart")
        .when(_u("id", 3) < 0.95, "purchase")
        .otherwise("rating")
    )
    user = F.floor(F.pow(_u("id", 2), 2) * 1_500 * scale)
    clicks = rows.select(
        F.concat(F.lit("e"), F.col("id").cast("string")).alias("event_id"),
        ts.alias("ts"),
        F.lit(0).alias("utc_offset_minutes"),
        F.concat(F.lit("u-"), user.cast("string")).alias("user_id"),
        F.concat(F.lit("s-"), user.cast("string"), F.lit("-"), F.hour(ts).cast("string")).alias("session_id"),
        kinds.alias("event_type"),
        F.concat(F.lit("i-"), F.floor(F.pow(_u("id", 4), 3) * 480 * scale).cast("string")).alias("item_id"),
        F.element_at(
            F.array(*[F.lit(c) for c in ("books", "music", "toys", "home")]),
            (F.floor(_u("id", 5) * 4) + 1).cast("int"),
        ).alias("category"),
        F.round(_u("id", 6) * 100 + 1, 2).alias("price"),
        F.when(kinds.isin("add_to_cart", "remove_from_cart", "purchase"), F.lit(1)).alias("quantity"),
        F.when(kinds == "rating", F.floor(_u("id", 7) * 5) + 1).alias("rating"),
        F.lit("mobile").alias("device"),
        F.lit(None).cast("string").alias("ip_token"),
        F.lit("ua").alias("user_agent"),
        F.lit("").alias("referrer"),
        F.lit(None).cast("string").alias("app_version"),
        F.to_date(ts).alias("event_date"),
        F.lit("synthetic").alias("_source_file"),
        ts.alias("_ingested_at"),
    )
    lake = Lakehouse(spark, config)
    silver = lake.table("silver", "clickstream").create(CLICKSTREAM_SILVER_SCHEMA, ["event_date"])
    silver.append(_conform(clicks, CLICKSTREAM_SILVER_SCHEMA))
    return silver.read(where=full_run_days(days)).count()


def prepare_maintenance(spark: SparkSession, config: Config, scale: int, days: int, lookback: int) -> int:
    """Silver telemetry (one reading per machine and 10 minutes, 6 regimes) and a failure every ~4 days."""
    machines = MACHINES_PER_SCALE * scale
    first = END - dt.timedelta(days=days + lookback)
    start = int(dt.datetime.combine(first, dt.time(), dt.UTC).timestamp())
    n_days = days + lookback + 3
    slots = spark.range(machines * READINGS_PER_DAY * n_days).select(
        (F.col("id") % machines).alias("m"), F.floor(F.col("id") / machines).alias("slot")
    )
    life = 576  # readings per life: a failure then a new life
    ts = F.timestamp_seconds(F.lit(start) + F.col("slot") * 600 + F.col("m") % 60)
    regime = F.abs(F.xxhash64("m", F.floor(F.col("slot") / 6))) % 6
    health = F.pow(((F.col("slot") + F.col("m") * 37) % life) / life, 2)
    readings = slots.select(
        F.format_string("MCH-%05d", F.col("m")).alias("machine_id"),
        ts.alias("ts"),
        F.lit(0).alias("utc_offset_minutes"),
        ((F.col("slot") + F.col("m") * 37) % life + 1).cast("int").alias("cycle"),
        (0.25 + regime * 0.15).alias("setting_1"),
        (0.5 + regime * 0.1).alias("setting_2"),
        F.when(regime % 2 == 0, 60.0).otherwise(100.0).alias("setting_3"),
        *[
            (F.lit(10.0 * (i + 1)) + regime * 3 + health * 5 + _u("slot", i)).alias(s)
            for i, s in enumerate(SENSORS)
        ],
        F.lit("4.0.1").alias("firmware"),
        F.to_date(ts).alias("event_date"),
        F.lit("synthetic").alias("_source_file"),
        ts.alias("_ingested_at"),
    )
    events = (
        readings.where(F.col("cycle") == life)
        .select(
            "machine_id",
            "ts",
            "utc_offset_minutes",
            F.lit("failure").alias("kind"),
            F.lit("pump").alias("component"),
            "event_date",
            "_source_file",
            "_ingested_at",
        )
        .unionByName(
            readings.where(F.col("cycle") == 1).select(
                "machine_id",
                "ts",
                "utc_offset_minutes",
                F.lit("repair").alias("kind"),
                F.lit("pump").alias("component"),
                "event_date",
                "_source_file",
                "_ingested_at",
            )
        )
    )
    lake = Lakehouse(spark, config)
    lake.table("silver", "telemetry").create(TELEMETRY_SILVER_SCHEMA, ["event_date"]).append(
        _conform(readings, TELEMETRY_SILVER_SCHEMA)
    )
    lake.table("silver", "maintenance").create(MAINTENANCE_SILVER_SCHEMA, ["event_date"]).append(
        _conform(events, MAINTENANCE_SILVER_SCHEMA)
    )
    return lake.table("silver", "telemetry").read(where=full_run_days(days)).count()


def full_run_days(days: int) -> list[tuple[str, str, dt.date]]:
    """The silver days the timed full recompute covers: the ``days`` days before END."""
    return [("event_date", ">=", END - dt.timedelta(days=days)), ("event_date", "<", END)]


def bench_table(name: str, build: Callable[[DateRange], object], days: int, rows_in_table: int) -> None:
    # The full recompute: the days before END in one run; then END alone, as the next daily run
    # (stored per-day aggregates of the earlier days are reused, END's are new).
    last = END - dt.timedelta(days=1)
    started = time.perf_counter()
    build(DateRange(last - dt.timedelta(days=days - 1), last))
    full = time.perf_counter() - started
    started = time.perf_counter()
    build(DateRange.single(END))
    incremental = time.perf_counter() - started
    print(
        f"{name:<26}{rows_in_table:>12,}{full:>9.1f}{rows_in_table / full:>11,.0f}{incremental:>9.1f}"
        f"{incremental / full:>9.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=100)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--tables", default="transaction_features,user_item_interactions,machine_features")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lakeml-bench-features-"))
    try:
        config = load_config("local", [f"lakehouse.root={work}", "spark.conf.spark.ui.enabled=false"])
        spark = build_spark(config, app_name="lakeml-bench-features")
        print(f"scale {args.scale}, {args.days}-day tables ending {END}; full = every day in one run")
        print(f"{'table':<26}{'rows':>12}{'full s':>9}{'rows/s':>11}{'1 day s':>9}{'1 day÷full':>9}")
        for table in args.tables.split(","):
            if table == "transaction_features":
                from lakeml.domains.banking.features import (
                    build_transaction_features,
                    refresh_transaction_labels,
                )

                rows = prepare_banking(spark, config, args.scale, args.days)
                bench_table(
                    table, lambda dates: build_transaction_features(spark, config, dates), args.days, rows
                )
                # The separate label job a week later: the chargebacks (5 days after their
                # transactions) of the last days have arrived, so those days are rewritten.
                started = time.perf_counter()
                week_later = DateRange.single(END + dt.timedelta(days=7))
                counts = refresh_transaction_labels(spark, config, week_later).details
                seconds = time.perf_counter() - started
                print(
                    f"{'  label refresh, +7 days':<26}{counts['rows']:>12,}{seconds:>9.1f}"
                    f"   ({counts['relabelled_days']} days rewritten; a separate job, not in 1 day)"
                )
            elif table == "user_item_interactions":
                from lakeml.domains.commerce.features import build_commerce_features

                lookback = config.features.commerce.lookback_days
                rows = prepare_commerce(spark, config, args.scale, args.days, lookback)
                bench_table(
                    table, lambda dates: build_commerce_features(spark, config, dates), args.days, rows
                )
            elif table == "machine_features":
                from lakeml.domains.maintenance.features import build_machine_features

                lookback = config.features.maintenance.regime_stats_days + 1
                rows = prepare_maintenance(spark, config, args.scale, args.days, lookback)
                bench_table(
                    table, lambda dates: build_machine_features(spark, config, dates), args.days, rows
                )
            else:
                raise SystemExit(f"unknown table {table}")
        print("(target: 1 day ÷ full ≤ 0.2)")
        spark.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
