"""gold/transaction_features: card velocity, travel, amount and merchant-risk features per transaction.

Every feature of a transaction at time t uses only what was known before t:

- velocity over [t - w, t) for each window of ``features.banking.velocity_windows_hours``: count
  and sum of ``amount_eur``; distinct merchants and countries over the 24 h window; an event at the
  same instant as t (a tie) is not before it;
- the previous transaction of the card within the longest window: seconds since it, great-circle
  distance and implied speed;
- the amount's z-score against the card's own amounts in the longest window;
- local hour (merchant country's offset) and a night-time flag;
- the merchant category's fraud rate: of the category's transactions in the ``mcc_risk_days``
  days before the transaction's date, the share with a fraud chargeback reported before that date
  and not reversed before it, smoothed toward ``mcc_risk_prior_rate``.

Labels (not features) are as of ``label_cutoff`` (end of that day): ``label_fraud`` is 1 when a
chargeback with a fraud reason code was reported within ``label_window_days`` of the transaction,
by the cut-off, and not reversed by then; 0 when the window has closed without one; NULL
(``label_status`` = ``immature``) when the window is still open: too recent is unlabeled, not negative.
A chargeback dated (UTC) before its transaction's day is not one of it.
Labels change after a day is computed (chargebacks and reversals keep arriving, 2–45 days late).
The daily feature run writes only its own days; ``refresh_transaction_labels`` (its own job, run
before training) recomputes the labels of the ``label_refresh_days`` days up to its cut-off and
rewrites only the days where one changed. Kept apart because with fraud on most days a refresh
inside every daily run would rewrite ~45 days of rows to change a few hundred labels.

Incremental by design. Windows longer than a day must be whole days. To compute day D the job reads
at row level only the days a window can cut through (D, D-1 and D-k for each k-day window) and
per-card sums (count, Σ, Σ², last transaction) over the other days of the lookback; a
range of days reads every day at row level. Both give the same rows (tests compare them).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lakeml.config import BankingFeaturesConfig, Config
from lakeml.errors import ConfigError, JobFailed
from lakeml.lakehouse import Lakehouse
from lakeml.steps import DateRange, StepResult
from lakeml.transforms import Transform
from lakeml.transforms.windows import (
    MICROS_PER_HOUR,
    MICROS_PER_SECOND,
    epoch_micros,
    haversine_km,
    sample_std,
    window_before,
)

# Fixed window names (their lengths come from conf); they are part of the table's schema.
VELOCITY_WINDOWS = ("1h", "24h", "7d", "30d")
DISTINCT_WINDOW = "24h"
CARD = "card_token"
TS_US = "_ts_us"
DAY_MICROS = 24 * MICROS_PER_HOUR

TRANSACTION_FEATURES_SCHEMA = T.StructType(
    [
        T.StructField("txn_id", T.StringType(), False),
        T.StructField(CARD, T.StringType(), False),
        T.StructField("ts", T.TimestampType(), False),  # as_of: features use only what came before
        T.StructField("amount_eur", T.DecimalType(18, 2), False),
        T.StructField("mcc", T.StringType(), False),
        T.StructField("country", T.StringType(), False),
        T.StructField("channel", T.StringType(), False),
        T.StructField("card_present", T.BooleanType(), False),
        *[
            field
            for w in VELOCITY_WINDOWS
            for field in (
                T.StructField(f"txn_count_{w}", T.LongType(), False),
                T.StructField(f"amount_sum_{w}", T.DoubleType(), False),
            )
        ],
        T.StructField(f"distinct_merchants_{DISTINCT_WINDOW}", T.IntegerType(), False),
        T.StructField(f"distinct_countries_{DISTINCT_WINDOW}", T.IntegerType(), False),
        T.StructField("seconds_since_prev", T.DoubleType(), True),  # NULL: none in the longest window
        T.StructField("km_from_prev", T.DoubleType(), True),
        T.StructField("speed_kmh_from_prev", T.DoubleType(), True),
        T.StructField("amount_mean_30d", T.DoubleType(), True),
        T.StructField("amount_std_30d", T.DoubleType(), True),
        T.StructField("amount_zscore_30d", T.DoubleType(), True),
        T.StructField("local_hour", T.IntegerType(), True),
        T.StructField("is_night", T.BooleanType(), True),
        T.StructField("mcc_risk_rate", T.DoubleType(), False),
        T.StructField("label_fraud", T.IntegerType(), True),  # NULL while the label window is open
        T.StructField("label_status", T.StringType(), False),  # fraud | legit | immature
        T.StructField("label_cutoff_date", T.DateType(), False),
        T.StructField("as_of_date", T.DateType(), False),  # partition: UTC date of ts
    ]
)
_ROW_COLUMNS = [
    "txn_id",
    CARD,
    "ts",
    "amount_eur",
    "mcc",
    "country",
    "channel",
    "card_present",
    "merchant_id",
    "lat",
    "lon",
]


def window_hours(settings: BankingFeaturesConfig) -> dict[str, float]:
    """The velocity window lengths, checked: every fixed window named, ≤ 24 h or whole days."""
    hours = dict(settings.velocity_windows_hours)
    if sorted(hours) != sorted(VELOCITY_WINDOWS):
        raise ConfigError(
            f"features.banking.velocity_windows_hours must name exactly {list(VELOCITY_WINDOWS)}"
        )
    for name, h in hours.items():
        if h <= 0 or (h > 24 and h % 24):
            raise ConfigError(
                f"features.banking.velocity_windows_hours.{name}: {h} h is not ≤ 24 h or whole days"
            )
    if hours[DISTINCT_WINDOW] > 24:
        raise ConfigError(f"features.banking.velocity_windows_hours.{DISTINCT_WINDOW} must be at most 24 h")
    return hours


def row_level_days(targets: Sequence[dt.date], hours: Mapping[str, float]) -> list[dt.date]:
    """Days read row by row: the targets, the day before each, and each day a k-day window starts in."""
    if len(targets) > 1:  # a range: every day of the lookback, so windows need no daily aggregates
        lookback = math.ceil(max(hours.values()) / 24)
        first, last = min(targets), max(targets)
        return [first + dt.timedelta(days=i) for i in range(-lookback, (last - first).days + 1)]
    (day,) = targets
    offsets = {0, 1} | {int(h // 24) for h in hours.values() if h >= 24}
    return sorted(day - dt.timedelta(days=k) for k in offsets)


def aggregate_days(
    targets: Sequence[dt.date], row_days: Sequence[dt.date], hours: Mapping[str, float]
) -> list[dt.date]:
    """Days of the lookback not read row by row: they enter as per-card sums (card_aggregates_before)."""
    lookback = math.ceil(max(hours.values()) / 24)
    wanted = {d - dt.timedelta(days=k) for d in targets for k in range(1, lookback)}
    return sorted(wanted - set(row_days))


def with_velocity_features(rows: DataFrame, hours: Mapping[str, float]) -> DataFrame:
    """Reads card_token, ts, amount_eur, merchant_id, country, lat, lon; adds per-window velocity over the
    rows given."""
    longest = int(max(hours.values()) * MICROS_PER_HOUR)
    df = rows.withColumn(TS_US, epoch_micros(F.col("ts"))).withColumn(
        "_amount", F.col("amount_eur").cast("double")
    )
    for name, h in hours.items():
        w = window_before([CARD], TS_US, int(h * MICROS_PER_HOUR))
        df = df.withColumn(f"_n_{name}", F.count(F.lit(1)).over(w)).withColumn(
            f"_s_{name}", F.coalesce(F.sum("_amount").over(w), F.lit(0.0))
        )
    distinct = window_before([CARD], TS_US, int(hours[DISTINCT_WINDOW] * MICROS_PER_HOUR))
    longest_w = window_before([CARD], TS_US, longest)
    previous = F.struct(
        F.col(TS_US).alias("t"),
        F.col("txn_id").alias("id"),
        F.col("lat").alias("lat"),
        F.col("lon").alias("lon"),
    )
    return (
        df.withColumn(
            f"distinct_merchants_{DISTINCT_WINDOW}", F.size(F.collect_set("merchant_id").over(distinct))
        )
        .withColumn(f"distinct_countries_{DISTINCT_WINDOW}", F.size(F.collect_set("country").over(distinct)))
        .withColumn(
            "_ss_30d", F.coalesce(F.sum(F.col("_amount") * F.col("_amount")).over(longest_w), F.lit(0.0))
        )
        .withColumn("_prev", F.max(previous).over(longest_w))
    )


def card_aggregates_before(rows: DataFrame, day: dt.date, hours: Mapping[str, float]) -> DataFrame:
    """Reads card_token, event_date, ts, txn_id, amount_eur, lat, lon of whole days before ``day``; per card
    the count and Σ of each day-long window's days, Σ² and the last transaction.

    One aggregation per card (partial sums before the shuffle), for the one target ``day`` of an
    incremental run: the whole days inside a window enter as these sums instead of row by row.
    """
    windows = {name: int(h // 24) for name, h in hours.items() if h >= 24}
    longest = max(windows.values(), default=0)
    amount = F.col("amount_eur").cast("double")
    last = F.struct(
        epoch_micros(F.col("ts")).alias("t"),
        F.col("txn_id").alias("id"),
        F.col("lat").alias("lat"),
        F.col("lon").alias("lon"),
    )
    inside = {name: F.col("event_date") > F.lit(day - dt.timedelta(days=k)) for name, k in windows.items()}
    in_reach = (F.col("event_date") < F.lit(day)) & (
        F.col("event_date") > F.lit(day - dt.timedelta(days=longest))
    )
    return (
        rows.where(in_reach)
        .groupBy(CARD)
        .agg(
            *[F.sum(F.when(cond, 1).otherwise(0)).alias(f"_an_{n}") for n, cond in inside.items()],
            *[F.sum(F.when(cond, amount).otherwise(0.0)).alias(f"_as_{n}") for n, cond in inside.items()],
            F.sum(amount * amount).alias("_ass"),
            F.max(last).alias("_alast"),
        )
        .withColumn("as_of_date", F.lit(day))
    )


def with_aggregate_contributions(
    targets: DataFrame, sums: DataFrame | None, hours: Mapping[str, float]
) -> DataFrame:
    """Reads card_token, as_of_date and the row-level window columns; adds the whole days' share
    (card_aggregates_before)."""
    if sums is None:
        return targets
    windows = [name for name, h in hours.items() if h >= 24]
    out = targets.join(sums, [CARD, "as_of_date"], "left")
    for name in windows:
        out = out.withColumn(f"_n_{name}", F.col(f"_n_{name}") + F.coalesce(F.col(f"_an_{name}"), F.lit(0)))
        out = out.withColumn(f"_s_{name}", F.col(f"_s_{name}") + F.coalesce(F.col(f"_as_{name}"), F.lit(0.0)))
    out = out.withColumn("_ss_30d", F.col("_ss_30d") + F.coalesce(F.col("_ass"), F.lit(0.0)))
    out = out.withColumn("_prev", F.greatest(F.col("_prev"), F.col("_alast")))
    return out.drop(*[c for c in out.columns if c.startswith(("_an_", "_as_"))], "_ass", "_alast")


def with_derived_features(df: DataFrame, settings: BankingFeaturesConfig, longest: str) -> DataFrame:
    """Reads the window sums and _prev; adds counts/sums, previous-transaction, z-score and local-time
    features."""
    offsets = F.create_map(
        *[x for k, v in sorted(settings.country_utc_offset_minutes.items()) for x in (F.lit(k), F.lit(v))]
    )
    seconds = (F.col(TS_US) - F.col("_prev.t")) / MICROS_PER_SECOND
    km = haversine_km(F.col("_prev.lat"), F.col("_prev.lon"), F.col("lat"), F.col("lon"))
    n, s, ss = F.col(f"_n_{longest}"), F.col(f"_s_{longest}"), F.col("_ss_30d")
    mean = F.when(n > 0, s / n)
    std = sample_std(n.cast("double"), s, ss)
    offset = F.element_at(offsets, F.col("country"))
    local_hour = F.hour(F.col("ts") + F.make_dt_interval(mins=offset))
    night = (local_hour >= settings.night_start_hour) & (local_hour < settings.night_end_hour)
    out = df
    for name in VELOCITY_WINDOWS:
        out = out.withColumn(f"txn_count_{name}", F.col(f"_n_{name}").cast("long")).withColumn(
            f"amount_sum_{name}", F.round(F.col(f"_s_{name}"), 6)
        )
    return (
        out.withColumn("seconds_since_prev", seconds)
        .withColumn("km_from_prev", km)
        .withColumn("speed_kmh_from_prev", F.when(seconds > 0, km / (seconds / 3600)))
        .withColumn("amount_mean_30d", mean)
        .withColumn("amount_std_30d", std)
        .withColumn("amount_zscore_30d", F.when(std > 0, (F.col("_amount") - mean) / std))
        .withColumn("local_hour", local_hour)
        .withColumn("is_night", night)
    )


def mcc_risk_rates(
    transactions: DataFrame, fraud: DataFrame, target_days: DataFrame, settings: BankingFeaturesConfig
) -> DataFrame:
    """Reads transactions (mcc, event_date), fraud chargebacks (fraud_chargebacks) and target days; (mcc,
    as_of_date, mcc_risk_rate)."""
    daily = transactions.groupBy("mcc", F.col("event_date").alias("day")).agg(F.count(F.lit(1)).alias("txns"))
    events = fraud.select("mcc", F.col("event_date").alias("day"), "reported_at", "reversed_at")
    in_window = (F.col("day") < F.col("as_of_date")) & (
        F.col("day") >= F.date_sub("as_of_date", settings.mcc_risk_days)
    )
    totals = (
        target_days.crossJoin(daily)
        .where(in_window)
        .groupBy("mcc", "as_of_date")
        .agg(F.sum("txns").alias("txns"))
    )
    known = (F.to_date("reported_at") < F.col("as_of_date")) & (
        F.col("reversed_at").isNull() | (F.to_date("reversed_at") >= F.col("as_of_date"))
    )
    frauds = (
        target_days.crossJoin(events)
        .where(in_window & known)
        .groupBy("mcc", "as_of_date")
        .agg(F.count(F.lit(1)).alias("frauds"))
    )
    prior_w, prior = settings.mcc_risk_prior_weight, settings.mcc_risk_prior_rate
    return totals.join(frauds, ["mcc", "as_of_date"], "left").select(
        "mcc",
        "as_of_date",
        ((F.coalesce(F.col("frauds"), F.lit(0)) + prior * prior_w) / (F.col("txns") + prior_w)).alias(
            "mcc_risk_rate"
        ),
    )


def fraud_chargebacks(
    chargebacks: DataFrame, transactions: DataFrame, settings: BankingFeaturesConfig, broadcast: bool = False
) -> DataFrame:
    """Reads silver chargebacks and (txn_id, ts, mcc, event_date); per transaction its first fraud chargeback
    in the label window and its reversal.

    ``broadcast``: the chargebacks (the small side) are sent to the transactions, not both shuffled.
    """
    chargebacks = chargebacks.select("txn_id", "reported_at", "reason_code", "is_reversal")
    if broadcast:
        chargebacks = F.broadcast(chargebacks)
    # A chargeback dated before its transaction's day is not one of it (and runs read chargebacks
    # from their first transaction day on, so every run sees the same ones).
    reported = chargebacks.join(transactions, "txn_id").where(
        (F.col("reported_at") <= F.col("ts") + F.make_dt_interval(days=F.lit(settings.label_window_days)))
        & (F.to_date("reported_at") >= F.to_date("ts"))
    )
    first = (
        reported.where(F.col("reason_code").isin(*settings.fraud_reason_codes))
        .groupBy("txn_id", "mcc", "event_date")
        .agg(F.min("reported_at").alias("reported_at"))
    )
    reversals = chargebacks.where(F.col("is_reversal")).select("txn_id", F.col("reported_at").alias("rev"))
    return (
        first.join(reversals, "txn_id", "left")
        .where(F.col("rev").isNull() | (F.col("rev") > F.col("reported_at")))
        .groupBy("txn_id", "mcc", "event_date", "reported_at")
        .agg(F.min("rev").alias("reversed_at"))
    )


def with_labels(
    df: DataFrame, fraud: DataFrame, settings: BankingFeaturesConfig, cutoff: dt.date
) -> DataFrame:
    """Reads txn_id, ts and fraud chargebacks; adds label_fraud, label_status and label_cutoff_date as of
    the cut-off."""
    end = F.lit(dt.datetime.combine(cutoff + dt.timedelta(days=1), dt.time()).isoformat(sep=" ")).cast(
        "timestamp"
    )
    known = fraud.where(F.col("reported_at") < end).select(
        "txn_id", (F.col("reversed_at").isNull() | (F.col("reversed_at") >= end)).alias("_fraud")
    )
    matured = F.col("ts") + F.make_dt_interval(days=F.lit(settings.label_window_days)) < end
    labelled = df.join(F.broadcast(known), "txn_id", "left")
    status = (
        F.when(F.coalesce(F.col("_fraud"), F.lit(False)), "fraud")
        .when(matured, "legit")
        .otherwise("immature")
    )
    return (
        labelled.withColumn("label_status", status)
        .withColumn("label_fraud", F.when(status == "fraud", 1).when(status == "legit", 0).cast("int"))
        .withColumn("label_cutoff_date", F.lit(cutoff))
        .drop("_fraud")
    )


def with_mcc_risk(mcc_rates: DataFrame, settings: BankingFeaturesConfig) -> Transform:
    """Reads mcc, as_of_date; adds mcc_risk_rate from ``mcc_rates`` (the prior for a category without one)."""

    def apply(df: DataFrame) -> DataFrame:
        joined = df.join(F.broadcast(mcc_rates), ["mcc", "as_of_date"], "left")
        return joined.withColumn(
            "mcc_risk_rate", F.coalesce(F.col("mcc_risk_rate"), F.lit(settings.mcc_risk_prior_rate))
        )

    return apply


def compute_transaction_features(
    row_level: DataFrame,
    daily: DataFrame | None,
    mcc_rates: DataFrame,
    fraud: DataFrame,
    targets: Sequence[dt.date],
    settings: BankingFeaturesConfig,
    label_cutoff: dt.date,
) -> DataFrame:
    """Reads silver transaction rows (+ per-card sums of the other days); the feature rows of the target
    days."""
    hours = window_hours(settings)
    longest = max(hours, key=lambda k: hours[k])
    velocity = with_velocity_features(row_level.select(*_ROW_COLUMNS, "event_date"), hours)
    on_targets = velocity.where(F.col("event_date").isin(list(targets))).withColumnRenamed(
        "event_date", "as_of_date"
    )
    combined = with_aggregate_contributions(on_targets, daily, hours)
    features = with_derived_features(combined, settings, longest).transform(
        with_mcc_risk(mcc_rates, settings)
    )
    labelled = with_labels(features, fraud, settings, label_cutoff)
    return labelled.select(*TRANSACTION_FEATURES_SCHEMA.fieldNames())


LABEL_COLUMNS = ("label_fraud", "label_status", "label_cutoff_date")


def refresh_days(cutoff: dt.date, settings: BankingFeaturesConfig) -> list[dt.date]:
    """The days whose labels a refresh as of ``cutoff`` recomputes: the ``label_refresh_days`` before it
    and itself."""
    if settings.label_refresh_days < settings.label_window_days:
        raise ConfigError(
            f"features.banking.label_refresh_days ({settings.label_refresh_days}) must be at least "
            f"label_window_days ({settings.label_window_days}), or some days would never mature"
        )
    start = cutoff - dt.timedelta(days=settings.label_refresh_days)
    return [start + dt.timedelta(days=i) for i in range(settings.label_refresh_days + 1)]


def with_refreshed_labels(fraud: DataFrame, settings: BankingFeaturesConfig, cutoff: dt.date) -> Transform:
    """Reads feature rows with labels; replaces the labels by those as of ``cutoff``, adds ``_label_changed``.

    A label already as of a later cut-off is kept (a refresh for an older date never moves labels back).
    """

    def apply(rows: DataFrame) -> DataFrame:
        renamed = dict(zip(LABEL_COLUMNS, ("_old_fraud", "_old_status", "_old_cutoff"), strict=True))
        relabelled = with_labels(rows.withColumnsRenamed(renamed), fraud, settings, cutoff)
        changed = (F.col("_old_cutoff") < F.lit(cutoff)) & (F.col("label_status") != F.col("_old_status"))
        labels = [F.when(changed, F.col(c)).otherwise(F.col(old)).alias(c) for c, old in renamed.items()]
        return relabelled.select(
            *[c for c in rows.columns if c not in renamed], *labels, changed.alias("_label_changed")
        )

    return apply


def _narrow_transactions(lake: Lakehouse, first: dt.date, last: dt.date) -> DataFrame:
    """The silver transactions of [first, last], only the columns risk rates and labels need."""
    return (
        lake.table("silver", "transactions")
        .read(where=[("event_date", ">=", first), ("event_date", "<=", last)])
        .select("txn_id", "mcc", "ts", "event_date")
    )


def _fraud_rows(
    lake: Lakehouse, settings: BankingFeaturesConfig, narrow: DataFrame, first: dt.date
) -> DataFrame:
    """Fraud chargebacks (fraud_chargebacks) of the ``narrow`` transactions (from day ``first`` on),
    persisted.

    Chargebacks are read from ``first`` on: one dated before its transaction's day does not count.
    """
    chargeback_table = lake.table("silver", "chargebacks")
    since = [("event_date", ">=", first)]
    rows = [f.num_records for f in chargeback_table.files(since)]
    known = [n for n in rows if n is not None]  # a file without stats: size unknown, no broadcast
    small = len(known) == len(rows) and sum(known) <= settings.chargeback_broadcast_rows
    fraud = fraud_chargebacks(chargeback_table.read(where=since), narrow, settings, broadcast=small)
    return fraud.persist(StorageLevel.MEMORY_AND_DISK)


def day_mcc_risk_rates(spark: SparkSession, config: Config, day: dt.date) -> DataFrame:
    """(mcc, as_of_date, mcc_risk_rate) of one ``day`` from silver, as a one-day build_transaction_features
    run has them.

    Empty when silver has no transactions or chargebacks yet (every category then gets the prior).
    """
    settings = config.features.banking
    lake = Lakehouse(spark, config)
    empty = spark.createDataFrame([], "mcc string, as_of_date date, mcc_risk_rate double")
    if not (lake.table("silver", "transactions").exists() and lake.table("silver", "chargebacks").exists()):
        return empty
    risk_start = day - dt.timedelta(days=settings.mcc_risk_days)
    narrow = _narrow_transactions(lake, risk_start, day)
    fraud = _fraud_rows(lake, settings, narrow, risk_start)
    try:
        target_days = spark.createDataFrame([(day,)], "as_of_date date")
        rates = mcc_risk_rates(narrow.where(F.col("event_date") < F.lit(day)), fraud, target_days, settings)
        # One row per merchant category: kept on the driver for the day, so the stream never rereads silver.
        return spark.createDataFrame(rates.collect(), empty.schema)
    finally:
        fraud.unpersist()


def build_transaction_features(
    spark: SparkSession, config: Config, dates: DateRange, label_cutoff: dt.date | None = None
) -> StepResult:
    """Compute and write gold/transaction_features for every as_of_date of ``dates``.

    Labels are as of ``label_cutoff`` (default the run date, ``dates.last``); other days are not
    touched (their labels mature through ``refresh_transaction_labels``).
    """
    settings = config.features.banking
    hours = window_hours(settings)
    cutoff = label_cutoff or dates.last
    days = dates.days()
    lake = Lakehouse(spark, config)
    silver = lake.table("silver", "transactions")
    row_days = row_level_days(days, hours)
    agg_days = aggregate_days(days, row_days, hours)
    row_level = silver.read(where=[("event_date", "in", row_days)])
    # Only a single day has whole days to aggregate (a range reads its whole lookback row by row).
    daily = (
        card_aggregates_before(silver.read(where=[("event_date", "in", agg_days)]), days[0], hours)
        if agg_days
        else None
    )
    # Merchant-category risk needs the transactions and frauds of its own window; labels the as-of days'.
    risk_start = dates.first - dt.timedelta(days=settings.mcc_risk_days)
    narrow = _narrow_transactions(lake, risk_start, dates.last)
    fraud = _fraud_rows(lake, settings, narrow, risk_start)
    try:
        target_days = spark.createDataFrame([(d,) for d in days], "as_of_date date")
        in_risk_window = narrow.where(F.col("event_date") < F.lit(dates.last))
        rates = mcc_risk_rates(in_risk_window, fraud, target_days, settings)
        features = compute_transaction_features(row_level, daily, rates, fraud, days, settings, cutoff)
        gold = lake.table("gold", "transaction_features").create(TRANSACTION_FEATURES_SCHEMA, ["as_of_date"])
        outcome = gold.overwrite_where(features, [("as_of_date", "in", days)])
    finally:
        fraud.unpersist()
    rows = outcome.rows_added
    return StepResult(rows_in=rows, rows_out=rows, details={"transaction_features": rows, "days": len(days)})


def refresh_transaction_labels(spark: SparkSession, config: Config, dates: DateRange) -> StepResult:
    """Rewrite the days of gold/transaction_features in the refresh window whose labels changed by the
    run date (``dates.last``, the labels' cut-off).

    Features are final and kept as they are; a day whose labels did not change is not rewritten, so a
    rerun commits nothing.
    """
    counts = _refresh_labels(spark, config, dates.last)
    return StepResult(rows_in=counts["rows"], rows_out=counts["rows"], details=counts)


def _refresh_labels(spark: SparkSession, config: Config, cutoff: dt.date) -> dict[str, int]:
    settings = config.features.banking
    days = refresh_days(cutoff, settings)
    lake = Lakehouse(spark, config)
    gold = lake.table("gold", "transaction_features")
    if not gold.exists():
        raise JobFailed(
            f"gold/transaction_features does not exist at {gold.uri}: run banking.build_features first"
        )
    fraud = _fraud_rows(lake, settings, _narrow_transactions(lake, days[0], cutoff), days[0])
    try:
        # The label columns alone find the changed days (one row per day: metadata, bounded by the
        # refresh window); only those days are then read whole.
        probe = gold.read(where=[("as_of_date", "in", days)]).select(
            "txn_id", "ts", "as_of_date", *LABEL_COLUMNS
        )
        refreshed = probe.transform(with_refreshed_labels(fraud, settings, cutoff))
        changed = sorted(
            r[0] for r in refreshed.where("_label_changed").select("as_of_date").distinct().collect()
        )
        if not changed:
            return {"relabelled_days": 0, "rows": 0}
        rewritten = (
            gold.read(where=[("as_of_date", "in", changed)])
            .transform(with_refreshed_labels(fraud, settings, cutoff))
            .select(*TRANSACTION_FEATURES_SCHEMA.fieldNames())
        )
        outcome = gold.overwrite_where(rewritten, [("as_of_date", "in", changed)])
    finally:
        fraud.unpersist()
    return {"relabelled_days": len(changed), "rows": outcome.rows_added}
