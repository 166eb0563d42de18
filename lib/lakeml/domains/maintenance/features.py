"""Maintenance gold: ``gold/machine_features``, one row per machine reading, keyed by (machine_id, as_of).

``as_of`` is the reading's ``ts`` (UTC) and ``as_of_date`` its UTC date (the partition). Every
feature of a row uses only data at or before its ``as_of``; the labels look forward.

Features (config ``features.maintenance``):

- ``regime``: the operating regime, (setting_1, setting_2, setting_3) each rounded to a multiple of
  ``regime_round_step`` (``"0.25|0.5|60.0"``).
- ``<sensor>_z``: the reading normalized per regime, ``(x - mean) / std`` with the population mean
  and std of that regime over *all machines'* readings in the ``regime_stats_days`` days strictly
  before ``as_of_date`` (a trailing reference, so it is point-in-time). NULL when the regime has no
  reference readings (the first days of data) or a zero std, or the sensor is NULL. Every reading in
  a row's windows is normalized with the reference of the row's ``as_of_date``.
- ``<sensor>_<short|long>_<mean|std|min|max|slope>``: rolling statistics of ``<sensor>_z`` over the
  last ``short_window_readings`` / ``long_window_readings`` readings of the machine ending at the
  current one (ordered by ts, then cycle), never reaching back before ``as_of_date -
  lookback_days`` (so a day's features depend only on a bounded lookback, and an incremental run for
  one day equals a full recompute). NULL sensors are skipped; std is the sample std (NULL with fewer
  than two values); slope is the least-squares slope per reading (NULL with fewer than two values).
  ``long_window_count`` is the number of readings in the long window (1 = the first reading).
- ``cycles_since_maintenance``: whole cycles (``cycle_minutes``) from the machine's latest
  ``repair`` or ``preventive`` at or before ``as_of`` (a log row at the same ts counts as before the
  reading) to ``as_of``; with ``last_maintenance_kind``. NULL when there is none on or after
  ``as_of_date - maintenance_lookback_days`` (the telemetry ``cycle`` counter, kept as ``cycle``,
  is the machine's own count since its last reset). Event time (``ts``) decides, not when the work
  was logged.

Labels (may look forward; a life ends at a ``failure``, and a repair or overhaul starts a new one):

- ``rul_cycles``: whole cycles from the reading to the machine's next ``failure``, capped at
  ``rul_cap_cycles``. When the next maintenance row is a repair or overhaul (censored life), or there
  is none yet, the RUL is the cap if later readings of the same life prove the machine ran at least
  ``rul_cap_cycles`` more cycles, else NULL. Only data up to ``as_of_date + lookahead`` is used,
  where lookahead = the cap in whole days (rounded up), so labels are the same in an incremental run
  and a full recompute. Recent days' labels mature later: rerunning a day recomputes them.
- ``fails_within``: ``rul_cycles <= fails_within_cycles``; also FALSE when the RUL is unknown but
  the machine is known to have run more than ``fails_within_cycles`` cycles.

A run for the dates [first, last] reads silver telemetry from ``first - max(lookback_days,
regime_stats_days)`` and maintenance from ``first - maintenance_lookback_days``, both up to
``last + lookahead``, and atomically replaces exactly the gold partitions of [first, last];
one date is the incremental run, a range the full recompute, and a rerun is idempotent.
"""

from __future__ import annotations

import math
from datetime import date, timedelta

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lakeml.config import Config, MaintenanceFeaturesConfig
from lakeml.domains.maintenance.silver import (
    MAINTENANCE_SILVER_SCHEMA,
    SENSORS,
    SETTINGS,
    TELEMETRY_SILVER_SCHEMA,
)
from lakeml.errors import ConfigError
from lakeml.ingest.silver import EVENT_DATE
from lakeml.lakehouse import DeltaTableRef, Lakehouse
from lakeml.steps import DateRange, StepResult
from lakeml.transforms.asof import asof_join
from lakeml.transforms.rolling import ROLLING_STATS, with_rolling_stats

GOLD_TABLE = ("gold", "machine_features")
AS_OF_DATE = "as_of_date"
TARGET_DATE = "_target_date"
WINDOWS = ("short", "long")
FAILURE = "failure"
RESET_KINDS = ("repair", "preventive")  # work that resets the machine's health
MINUTES_PER_DAY = 24 * 60
MICROS_PER_MINUTE = 60 * 1_000_000

MACHINE_FEATURES_SCHEMA = T.StructType(
    [
        T.StructField("machine_id", T.StringType(), False),
        T.StructField("as_of", T.TimestampType(), False),  # the reading's ts (UTC)
        T.StructField(AS_OF_DATE, T.DateType(), False),  # partition: UTC date of as_of
        T.StructField("cycle", T.IntegerType(), False),
        T.StructField("regime", T.StringType(), False),
        T.StructField("cycles_since_maintenance", T.IntegerType(), True),
        T.StructField("last_maintenance_kind", T.StringType(), True),
        T.StructField("long_window_count", T.IntegerType(), False),
        *[T.StructField(f"{s}_z", T.DoubleType(), True) for s in SENSORS],
        *[
            T.StructField(f"{s}_{w}_{stat}", T.DoubleType(), True)
            for s in SENSORS
            for w in WINDOWS
            for stat in ROLLING_STATS
        ],
        T.StructField("rul_cycles", T.IntegerType(), True),  # label
        T.StructField("fails_within", T.BooleanType(), True),  # label
    ]
)


def validate(fc: MaintenanceFeaturesConfig) -> None:
    """Raise ConfigError when the features.maintenance settings cannot work together."""
    problems = [
        (fc.short_window_readings < 1, "short_window_readings must be at least 1"),
        (fc.long_window_readings < fc.short_window_readings, "long_window_readings must be >= short"),
        (fc.fails_within_cycles < 0, "fails_within_cycles must be >= 0"),
        (fc.rul_cap_cycles < fc.fails_within_cycles, "rul_cap_cycles must be >= fails_within_cycles"),
        (fc.cycle_minutes <= 0, "cycle_minutes must be positive"),
        (fc.regime_round_step <= 0, "regime_round_step must be positive"),
        (min(fc.lookback_days, fc.maintenance_lookback_days) < 0, "lookback days must be >= 0"),
        (fc.regime_stats_days < 1, "regime_stats_days must be at least 1"),
    ]
    for bad, message in problems:
        if bad:
            raise ConfigError(f"features.maintenance: {message}")


def lookahead_days(fc: MaintenanceFeaturesConfig) -> int:
    """Days after a reading's date that its label may use: the RUL cap in whole days, rounded up."""
    return math.ceil(fc.rul_cap_cycles * fc.cycle_minutes / MINUTES_PER_DAY)


def input_ranges(fc: MaintenanceFeaturesConfig, first: date, last: date) -> dict[str, tuple[date, date]]:
    """The silver event_date range each input is read over for gold dates [first, last]."""
    ahead = timedelta(days=lookahead_days(fc))
    back = timedelta(days=max(fc.lookback_days, fc.regime_stats_days))
    return {
        "telemetry": (first - back, last + ahead),
        "maintenance": (first - timedelta(days=fc.maintenance_lookback_days), last + ahead),
    }


def cycles_between(start: Column, end: Column, cycle_minutes: float) -> Column:
    """Whole cycles from ``start`` to ``end`` (floor), as an int."""
    micros = F.unix_micros(end) - F.unix_micros(start)
    return F.floor(micros / F.lit(cycle_minutes * MICROS_PER_MINUTE)).cast("int")


def with_regime(readings: DataFrame, step: float) -> DataFrame:
    """Reads setting_1..3; adds ``regime``, the settings rounded to multiples of ``step`` joined by ``|``."""
    decimals = max(0, math.ceil(-math.log10(step)))
    rounded = [
        F.round(F.round(F.col(s) / F.lit(step)) * F.lit(step), decimals).cast("string") for s in SETTINGS
    ]
    return readings.withColumn("regime", F.concat_ws("|", *rounded))


def regime_reference(readings: DataFrame, first: date, last: date, days: int) -> DataFrame:
    """Reads regime, event_date and the sensors; adds per (regime, _target_date in [first, last]) each
    sensor's population mean and std over the ``days`` days before the target date."""
    daily = readings.groupBy("regime", EVENT_DATE).agg(
        *[agg for s in SENSORS for agg in (
            F.count(s).alias(f"{s}_n"),
            F.sum(s).alias(f"{s}_sum"),
            F.sum(F.col(s) * F.col(s)).alias(f"{s}_sum2"),
        )]
    )  # fmt: skip
    start = F.greatest(F.date_add(EVENT_DATE, 1), F.lit(first))
    stop = F.least(F.date_add(EVENT_DATE, days), F.lit(last))
    targets = daily.where(start <= stop).withColumn(TARGET_DATE, F.explode(F.sequence(start, stop)))
    totals = targets.groupBy("regime", TARGET_DATE).agg(
        *[F.sum(f"{s}_{part}").alias(f"{s}_{part}") for s in SENSORS for part in ("n", "sum", "sum2")]
    )
    columns = []
    for s in SENSORS:
        n = F.col(f"{s}_n")
        mean = F.when(n > 0, F.col(f"{s}_sum") / n)
        variance = F.greatest(F.col(f"{s}_sum2") / n - mean * mean, F.lit(0.0))
        columns += [mean.alias(f"{s}_ref_mean"), F.when(n > 0, F.sqrt(variance)).alias(f"{s}_ref_std")]
    return totals.select("regime", TARGET_DATE, *columns)


def with_target_dates(readings: DataFrame, first: date, last: date, lookback_days: int) -> DataFrame:
    """Reads event_date; adds ``_target_date``: one row per gold date in [first, last] whose windows may
    see the reading."""
    start = F.greatest(F.col(EVENT_DATE), F.lit(first))
    stop = F.least(F.date_add(EVENT_DATE, lookback_days), F.lit(last))
    return readings.where(start <= stop).withColumn(TARGET_DATE, F.explode(F.sequence(start, stop)))


def with_maintenance_asof(
    readings: DataFrame, maintenance: DataFrame, fc: MaintenanceFeaturesConfig
) -> DataFrame:
    """Reads machine_id, ts, event_date and the maintenance log; adds cycles_since_maintenance and
    last_maintenance_kind."""
    resets = maintenance.where(F.col("kind").isin(*RESET_KINDS)).select(
        "machine_id", "ts", F.col("ts").alias("_reset_ts"), F.col("kind").alias("_reset_kind")
    )
    joined = asof_join(readings, resets, ["machine_id"], "ts", ["_reset_ts", "_reset_kind"])
    in_reach = F.to_date("_reset_ts") >= F.date_sub(EVENT_DATE, fc.maintenance_lookback_days)
    return joined.select(
        *readings.columns,
        F.when(in_reach, cycles_between(F.col("_reset_ts"), F.col("ts"), fc.cycle_minutes)).alias(
            "cycles_since_maintenance"
        ),
        F.when(in_reach, F.col("_reset_kind")).alias("last_maintenance_kind"),
    )


def with_labels(readings: DataFrame, maintenance: DataFrame, fc: MaintenanceFeaturesConfig) -> DataFrame:
    """Reads machine_id, ts, event_date and the maintenance log; adds rul_cycles and fails_within."""
    ahead = lookahead_days(fc)
    ends = maintenance.select(
        "machine_id",
        "ts",
        F.col("ts").alias("_next_ts"),
        F.col("kind").alias("_next_kind"),
        F.col(EVENT_DATE).alias("_next_date"),
    )
    joined = asof_join(
        readings, ends, ["machine_id"], "ts", ["_next_ts", "_next_kind", "_next_date"], direction="forward"
    )
    # The readings of the same life (same next log row) up to the lookahead prove the machine ran.
    same_life = (
        Window.partitionBy("machine_id", "_next_ts").orderBy(F.unix_date(EVENT_DATE)).rangeBetween(0, ahead)
    )
    seen = F.col("_next_date") <= F.date_add(EVENT_DATE, ahead)
    failure_ts = F.when(seen & (F.col("_next_kind") == FAILURE), F.col("_next_ts"))
    to_failure = cycles_between(F.col("ts"), failure_ts, fc.cycle_minutes)
    survived = cycles_between(F.col("ts"), F.max("ts").over(same_life), fc.cycle_minutes)
    cap, horizon = fc.rul_cap_cycles, fc.fails_within_cycles
    rul = F.when(failure_ts.isNotNull(), F.least(to_failure, F.lit(cap))).when(survived >= cap, F.lit(cap))
    fails = F.when(failure_ts.isNotNull(), to_failure <= horizon).when(survived > horizon, F.lit(False))
    return joined.select(*readings.columns, rul.alias("rul_cycles"), fails.alias("fails_within"))


def machine_features(
    telemetry: DataFrame,
    maintenance: DataFrame,
    fc: MaintenanceFeaturesConfig,
    first: date,
    last: date,
) -> DataFrame:
    """Reads silver telemetry and maintenance (the input_ranges); adds the gold rows of [first, last]
    (MACHINE_FEATURES_SCHEMA)."""
    readings = telemetry.select("machine_id", "ts", "cycle", *SETTINGS, *SENSORS, EVENT_DATE)
    readings = with_regime(readings, fc.regime_round_step)
    reference = regime_reference(readings, first, last, fc.regime_stats_days)
    # Only the windows' days go through the as-of join and the labels (the reference needs the
    # sensors alone); the labels look forward only, so earlier readings cannot change them.
    windowed = readings.where(F.col(EVENT_DATE) >= F.lit(first - timedelta(days=fc.lookback_days)))
    windowed = with_maintenance_asof(windowed, maintenance, fc)
    windowed = with_labels(windowed, maintenance, fc)
    targets = with_target_dates(windowed, first, last, fc.lookback_days)
    normalized = targets.join(F.broadcast(reference), ["regime", TARGET_DATE], "left").select(
        *[c for c in targets.columns if c not in SENSORS],
        *[
            F.when(
                F.col(f"{s}_ref_std") > 0, (F.col(s) - F.col(f"{s}_ref_mean")) / F.col(f"{s}_ref_std")
            ).alias(s)
            for s in SENSORS
        ],
    )
    # Day first: each task's rows leave sorted by day, the order the partitioned writer wants.
    per_day, order = [TARGET_DATE, "machine_id"], ["ts", "cycle"]
    # Rows in the long window: the row's position in its (machine, day) partition, capped.
    position = F.row_number().over(Window.partitionBy(*per_day).orderBy(*order))
    counted = normalized.withColumn("long_window_count", F.least(position, F.lit(fc.long_window_readings)))
    windows = {"short": fc.short_window_readings, "long": fc.long_window_readings}
    rolled = with_rolling_stats(counted, SENSORS, per_day, order, windows)
    renamed = {"ts": "as_of", TARGET_DATE: AS_OF_DATE, **{s: f"{s}_z" for s in SENSORS}}
    sources = {target: source for source, target in renamed.items()}
    return rolled.where(F.col(EVENT_DATE) == F.col(TARGET_DATE)).select(
        *[F.col(sources.get(f.name, f.name)).cast(f.dataType).alias(f.name) for f in MACHINE_FEATURES_SCHEMA]
    )


def _silver(
    lake: Lakehouse, name: str, schema: T.StructType, first: date, last: date
) -> tuple[DataFrame, int]:
    """The silver table's rows with event_date in [first, last] (empty if the table does not exist) and
    their count."""
    table: DeltaTableRef = lake.table("silver", name)
    if not table.exists():
        return lake.spark.createDataFrame([], schema), 0
    where = [(EVENT_DATE, ">=", first), (EVENT_DATE, "<=", last)]
    rows = sum(f.num_records or 0 for f in table.files(where))
    return table.read(where=where), rows


def build_machine_features(spark: SparkSession, config: Config, dates: DateRange) -> StepResult:
    """Compute and write gold/machine_features for every as_of_date of ``dates``; rows read and written."""
    first, last = dates.first, dates.last
    fc = config.features.maintenance
    validate(fc)
    lake = Lakehouse(spark, config)
    ranges = input_ranges(fc, first, last)
    telemetry, telemetry_rows = _silver(lake, "telemetry", TELEMETRY_SILVER_SCHEMA, *ranges["telemetry"])
    maintenance, maintenance_rows = _silver(
        lake, "maintenance", MAINTENANCE_SILVER_SCHEMA, *ranges["maintenance"]
    )
    features = machine_features(telemetry, maintenance, fc, first, last)
    gold = lake.table(*GOLD_TABLE).create(MACHINE_FEATURES_SCHEMA, [AS_OF_DATE])
    outcome = gold.overwrite_where(features, [(AS_OF_DATE, ">=", first), (AS_OF_DATE, "<=", last)])
    counts = {
        "telemetry_rows": telemetry_rows,
        "maintenance_rows": maintenance_rows,
        "machine_features_rows": outcome.rows_added,
    }
    return StepResult(rows_in=telemetry_rows + maintenance_rows, rows_out=outcome.rows_added, details=counts)
