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
