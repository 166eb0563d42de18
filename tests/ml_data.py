"""Small synthetic gold tables with a known, learnable signal, for the model lifecycle tests.

Built by Spark expressions over ``spark.range`` (no driver loops), conformed to the real gold schemas,
so the trainers run on exactly the table shapes the feature jobs write.
"""

from __future__ import annotations

import datetime as dt

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from lakeml.domains.banking.features import TRANSACTION_FEATURES_SCHEMA


def transaction_features(
    spark: SparkSession, rows_per_day: int, first_day: dt.date, days: int, mature_days: int, seed: int = 1
) -> DataFrame:
    """Transaction features where fraud (~3 %) = night + far travel + big amount, plus label noise;
    the last ``days - mature_days`` days have open label windows (label NULL unless fraud is known)."""
    n = rows_per_day * days
    u = lambda k: F.rand(seed * 100 + k)  # noqa: E731
    day = (F.col("id") % days).cast("int")
    df = spark.range(n, numPartitions=2).select(
        F.format_string("tx%016x", F.col("id")).alias("txn_id"),
        F.format_string("card%05d", (F.col("id") * 7919) % 2000).alias("card_token"),
        F.date_add(F.lit(first_day), day).alias("as_of_date"),
        (u(1) < 0.03).alias("_fraud"),
        u(2).alias("_u2"),
        u(3).alias("_u3"),
        u(4).alias("_u4"),
        day.alias("_day"),
    )
    fraud = F.col("_fraud")
    signal = {
        "ts": F.to_timestamp(F.col("as_of_date")) + F.make_dt_interval(secs=F.col("_u2") * 86399),
        "amount_eur": F.when(fraud, 100 + F.col("_u3") * 900)
        .otherwise(5 + F.col("_u3") * 400)
        .cast("decimal(18,2)"),
        "mcc": F.when(F.col("_u4") < 0.5, "5411").otherwise("5732"),
        "country": F.lit("DE"),
        "channel": F.when(F.col("_u4") < 0.3, "ecom").otherwise("pos"),
        "card_present": F.col("_u4") >= 0.3,
        "distinct_countries_24h": F.when(fraud & (F.col("_u2") < 0.8), 2).otherwise(1),
        "is_night": F.when(fraud, F.col("_u3") < 0.7).otherwise(F.col("_u3") < 0.05),
        "local_hour": (F.col("_u2") * 24).cast("int"),
        "mcc_risk_rate": F.when(F.col("_u4") < 0.5, 0.002).otherwise(0.004) + F.col("_u3") * 0.001,
        "seconds_since_prev": F.when(F.col("_u2") < 0.1, F.lit(None)).otherwise(F.col("_u3") * 86400.0),
    }
    for c, expr in signal.items():
        df = df.withColumn(c, expr)
    mature = F.col("_day") < mature_days
    label = F.when(fraud & (F.col("_u2") < 0.95), 1).when(mature, 0)  # 5 % of frauds never reported
    df = df.withColumn("label_fraud", label.cast("int")).withColumn(
        "label_status", F.when(label == 1, "fraud").when(label == 0, "legit").otherwise("immature")
    )
    df = df.withColumn("label_cutoff_date", F.date_add(F.lit(first_day), days - 1))
    out = []
    for field in TRANSACTION_FEATURES_SCHEMA.fields:
        if field.name in df.columns:
            out.append(F.col(field.name).cast(field.dataType).alias(field.name))
        elif field.nullable:
            out.append(F.lit(None).cast(field.dataType).alias(field.name))
        else:
            out.append((F.col("_u2") * 10).cast(field.dataType).alias(field.name))
    return df.select(*out)


def user_item_interactions(
    spark: SparkSession,
    users: int,
    pairs_per_user: int,
    day: dt.date,
    categories: int = 8,
    items_per_category: int = 30,
    seed: int = 3,
) -> DataFrame:
    """One interactions snapshot where each user prefers one category (80 % of pairs), item popularity
    is Zipf-like within a category, ratings are high in the favourite category and low elsewhere."""
    from lakeml.domains.commerce.features import USER_ITEM_INTERACTIONS_SCHEMA

    u = lambda k: F.rand(seed * 100 + k)  # noqa: E731
    user = (F.col("id") / pairs_per_user).cast("long")
    favourite = F.pmod(F.xxhash64(user, F.lit(seed)), F.lit(categories))
    df = spark.range(users * pairs_per_user, numPartitions=2).select(
        user.alias("_user"), favourite.alias("_fav"), u(1).alias("_u1"), u(2).alias("_u2"), u(3).alias("_u3")
    )
    is_fav = F.col("_u1") < 0.8
    category = F.when(is_fav, F.col("_fav")).otherwise((F.col("_u3") * categories).cast("long"))
    rank = (F.pow(F.col("_u2"), 2) * items_per_category).cast("long")
    df = df.select(
        F.format_string("u-%05d", F.col("_user")).alias("user_id"),
        F.format_string("i-%04d", category * items_per_category + rank).alias("item_id"),
        is_fav.alias("_is_fav"),
        F.col("_u3").alias("_u3"),
        F.col("_u2").alias("_u2"),
    )
    pairs = df.groupBy("user_id", "item_id").agg(
        F.count(F.lit(1)).alias("events"),
        F.max("_is_fav").alias("_is_fav"),
        F.max("_u3").alias("_u3"),
        F.min("_u2").alias("_u2"),
    )
    end = F.to_timestamp(F.lit(day + dt.timedelta(days=1)))
    out = pairs.select(
        "user_id",
        "item_id",
        (F.col("events") * (1.0 + F.col("_u3"))).alias("strength"),
        F.col("events").alias("views"),
        F.lit(0).cast("long").alias("carts"),
        F.lit(0).cast("long").alias("removes"),
        (F.col("_u3") < 0.2).cast("long").alias("purchases"),
        (F.col("_u3") < 0.2).cast("long").alias("purchased_units"),
        "events",
        F.lit(1).cast("long").alias("sessions"),
        (end - F.make_dt_interval(secs=F.col("_u3") * 86400 * 28 + 1)).alias("last_event_ts"),
        F.when(F.col("_u2") < 0.4, F.when(F.col("_is_fav"), 5).otherwise(2)).alias("rating_last"),
        F.when(F.col("_u2") < 0.4, end - F.make_dt_interval(secs=F.lit(3600))).alias("rating_ts"),
        (F.col("_u2") < 0.4).cast("long").alias("rating_count"),
        F.lit(day).alias("as_of_date"),
    )
    return out.select(*[F.col(f.name).cast(f.dataType) for f in USER_ITEM_INTERACTIONS_SCHEMA.fields])


def machine_features(
    spark: SparkSession,
    machines: int,
    readings_per_machine: int,
    first_day: dt.date,
    seed: int = 5,
    fc: object | None = None,
) -> DataFrame:
    """Machine features (MACHINE_FEATURES_SCHEMA) of run-to-failure lives: each machine fails every
    ``L`` cycles (90-329, per machine, at a per-machine phase), health ``1 - min(rul, cap) / cap`` drives
    four sensors' ``_z``, ``_short_mean`` and ``_long_mean`` (plus noise), the other sensors are noise or
    NULL; ``cycles_since_maintenance`` is the age in the life (NULL for every 9th machine), so the
    age-bucket baseline knows the average life only. Labels follow ``fc`` (default: the test conf's
    ``features.maintenance``): rul_cycles capped, NULL for ~3 % of rows (fails_within then FALSE when
    the true RUL is far beyond the horizon, else NULL). Readings are ``cycle_minutes`` apart, machines
    start on the first three days."""
    from lakeml.config import load_config
    from lakeml.domains.maintenance.features import MACHINE_FEATURES_SCHEMA
    from lakeml.domains.maintenance.silver import SENSORS

    fc = fc or load_config("test").features.maintenance
    cap, horizon, minutes = fc.rul_cap_cycles, fc.fails_within_cycles, fc.cycle_minutes
    u = lambda k: F.rand(seed * 100 + k)  # noqa: E731
    noise = lambda k, sd: F.randn(seed * 100 + k) * sd  # noqa: E731
    machine = (F.col("id") / readings_per_machine).cast("long")
    k = F.col("id") % readings_per_machine
    life = F.pmod(F.xxhash64(machine, F.lit(seed)), F.lit(240)) + 90
    phase = F.pmod(F.xxhash64(machine, F.lit(seed + 1)), life)
    df = spark.range(machines * readings_per_machine, numPartitions=2).select(
        machine.alias("_m"),
        k.alias("_k"),
        life.alias("_life"),
        F.pmod(k + phase, life).alias("_age"),
        u(1).alias("_u1"),
        u(2).alias("_u2"),
        u(3).alias("_u3"),
    )
    true_rul = F.col("_life") - 1 - F.col("_age")
    health = 1.0 - F.least(true_rul, F.lit(cap)) / float(cap)
    start = F.to_timestamp(F.date_add(F.lit(first_day), (F.col("_m") % 3).cast("int")))
    known = F.col("_u1") >= 0.03
    rul = F.when(known, F.least(true_rul, F.lit(cap)))
    columns = {
        "machine_id": F.format_string("MCH-%05d", F.col("_m")),
        "as_of": start + F.make_dt_interval(mins=(F.col("_k") * minutes).cast("int")),
        "cycle": F.col("_age") + 1,
        "regime": F.when(F.col("_u3") < 0.4, "0.25|0.5|60.0")
        .when(F.col("_u3") < 0.7, "0.5|0.75|60.0")
        .otherwise("1.0|1.0|100.0"),
        "cycles_since_maintenance": F.when(F.col("_m") % 9 != 0, F.col("_age")),
        "last_maintenance_kind": F.when(F.col("_m") % 9 != 0, F.lit("repair")),
        "long_window_count": F.least(F.col("_k") + 1, F.lit(fc.long_window_readings)),
        "rul_cycles": rul,
        "fails_within": F.when(known, rul <= horizon).when(
            (true_rul > 2 * horizon) & (F.col("_u2") < 0.5), F.lit(False)
        ),
    }
    signal = ("temperature", "vibration_mm_s", "acoustic", "oil_temp")
    for i, s in enumerate(SENSORS):
        if s in signal:
            columns[f"{s}_z"] = 2.5 * health + noise(10 + i, 0.35)
            columns[f"{s}_short_mean"] = 2.5 * health + noise(30 + i, 0.2)
            columns[f"{s}_long_mean"] = 2.2 * health + noise(50 + i, 0.15)
        else:
            columns[f"{s}_z"] = noise(10 + i, 1.0)
    columns["temperature_z"] = F.when(F.col("_u2") >= 0.05, columns["temperature_z"])  # a few NULL sensors
    df = df.select("*", *[expr.alias(name) for name, expr in columns.items()])
    df = df.withColumn("as_of_date", F.to_date("as_of"))
    return df.select(
        *[
            (F.col(f.name) if f.name in df.columns else F.lit(None)).cast(f.dataType).alias(f.name)
            for f in MACHINE_FEATURES_SCHEMA.fields
        ]
    )


def train_twice_and_score(
    spark: SparkSession,
    cfg,
    table,
    rows: DataFrame,
    train,
    score,
    run_date: dt.date,
    score_days,
    score_table: str,
    git_commit: str,
):  # type: ignore[no-untyped-def]
    """Shared lifecycle fixture body: write ``rows`` to ``table``, train twice on the same version,
    score twice; yields everything the lifecycle tests assert on."""
    from types import SimpleNamespace

    import mlflow
    import pytest

    from lakeml.lakehouse import Lakehouse
    from lakeml.ml import tracking
    from lakeml.steps import DateRange

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(tracking.GIT_COMMIT_ENV, git_commit)
        lake = Lakehouse(spark, cfg)
        table.append(rows)
        table_version = table.version()
        first = train(spark, cfg, DateRange.single(run_date)).details
        second = train(spark, cfg, DateRange.single(run_date)).details
        scores = lake.table("gold", score_table)
        score_first = score(spark, cfg, DateRange(*score_days)).details
        scores_version = scores.version()
        score_again = score(spark, cfg, DateRange(*score_days)).details
        uri = tracking.tracking_uri(cfg)
        yield SimpleNamespace(
            cfg=cfg,
            lake=lake,
            table=table,
            table_version=table_version,
            first=first,
            second=second,
            scores=scores,
            score_first=score_first,
            score_again=score_again,
            scores_version=scores_version,
            client=mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri),
        )
