"""Commerce gold features: silver/clickstream → gold/user_item_interactions and gold/item_stats.

Both tables are keyed by (entity, ``as_of_date``) and partitioned by ``as_of_date``. All settings are
``features.commerce`` in conf/base.yaml (``CommerceFeaturesConfig``). The rules:

- **As of D** means as of the end of UTC day D: only events with ``ts < D + 1 day`` (00:00 UTC) count;
  an event at exactly midnight belongs to the day it starts. Each table looks at a trailing window of
  event days: ``[D - lookback_days + 1, D]`` for interactions, ``[D - item_window_days + 1, D]`` for
  item stats. Nothing after D and nothing before the window is read for D (point-in-time by
  construction).
- **Bot/abuse filter.** A user's UTC day is a bot day when the user has more than
  ``bot_max_events_per_minute`` events within any 60 s (a range frame over ``ts``, counting events in
  ``(ts - 60 s, ts]`` of the same UTC day) or more than ``bot_max_events_per_day`` events that day.
  All of the user's events of a bot day are excluded from both tables; other days are unaffected.
- **Sessions.** Over the remaining events of each user, ordered by (ts, event_id): a new session starts
  when the gap to the previous event is strictly more than ``session_gap_minutes``. ``sessions`` counts
  the distinct sessions with a (user, item) event in the window; a session that began before the
  window counts once, so the count does not depend on how much history was read. How it is counted
  without carrying sets of sessions through the per-date aggregation: a user's sessions do not
  overlap in time, so a session with the pair's events on several days spans consecutive active days
  of the pair, and it is the latest session of the pair's earlier day and the earliest of the next.
  So each pair-day keeps ``carried_session`` (1 when its earliest session start equals the latest of
  the pair's previous active day) and ``new_sessions`` (its distinct sessions minus that one). The
  window's count is the sum of ``new_sessions`` plus ``carried_session`` of its first active day,
  whose predecessor lies outside the window.
- **Interaction strength** of (user, item) as of D: the sum over the pair's counted events in the
  window of ``event_weights[event_type] * 2^(-age / half_life_days)``, age = days from ts to the end of
  D. Event types without a weight (``rating``) add 0. The window truncation is part of the definition
  (an event ``lookback_days`` old weighs at most ``2^(-lookback_days / half_life_days)``), which makes an
  incremental run for D (reading only the window's partitions) equal to a full recompute. It is
  computed from per-day sums relative to each day's end, scaled by ``2^(-(D - day) / half_life_days)``.
- **Explicit ratings** are kept apart from strength: ``rating_last`` (latest rating event in the
  window, ties broken by event_id), its ``rating_ts``, and ``rating_count``.
- **Which (user, item) rows exist for D** (table size): the pair has at least one counted event in
  the window, the user has at least ``min_user_events`` counted events in it, and the item has at least
  ``min_item_users`` distinct counted users in it. A pair without activity in ``lookback_days`` has no
  row (its strength would be 0 by the definition above).
- **item_stats** per (item_id, D), over the item window: counted ``views``, ``carts`` (add_to_cart),
  ``purchases``, all counted ``events``, distinct ``users``, ``rating_count`` and ``rating_mean``;
  ``category`` is the category of the item's latest event in the window that has one (NULL if none);
  ``category_rank`` is 1 for the most popular item of its category (distinct users desc, then
  purchases, views desc, item_id asc) and ``category_share`` = events / the category's events. Both
  are NULL for items without a category. An item has a row for D when it has a counted event in the
  window.

**How user_item_interactions is computed.** The table holds a full window per date, so it is many
times larger than its input (about 30 rows per event at the default 56-day window). Exploding each
pair-day into every date of its window and aggregating again would sort and spill that output-sized
data. Instead, a pair's row only changes (apart from decay) on the dates one of its days enters or
leaves the window: ``interaction_segments`` evaluates the window once per such change (a range frame
over the pair's change dates; strength as of the change date), ``interaction_pieces`` keeps the parts
of those segments on which the user and the item pass the activity filters (both are counts over the
segments' date ranges, kept as ranges), and ``expand_interactions`` writes one row per date of each
piece, decaying the strength to that date. Every sort and join is over pair-days, not pair-dates.

**Stored per-day aggregates.** Both tables are computed from pair-days (``pair_day_aggregates``),
which ``gold/user_item_days`` keeps, so a run for D computes D's pair-days from silver and reads the
lookback's from there instead of re-reading, sessionizing and aggregating 56 days of events.
``load_user_item_days`` reads the stored dates that are current (``lakeml.derived_dates``: not
current = new, other settings, silver got rows for the date since, or an earlier date was recomputed
later) and computes the rest from the first stale date on. Sessions are the only state that crosses
days: the recomputed range starts with each user's last counted event of the day before and its
session start (``session_tails`` of the stored day), so the result equals one pass over the whole
history. The carry between a pair's days (``with_session_carry``) is applied after reading, over the
days of the window.

``build_commerce_features`` writes every as_of_date of its dates [first, last] with one atomic
``overwrite_where`` per table (one date = the incremental run, a range = the full recompute), so a
rerun replaces the same partitions with the same rows. No Python UDFs; nothing proportional to the
data reaches the driver.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date, timedelta

from pyspark.sql import Column, DataFrame, SparkSession, Window, WindowSpec
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lakeml.config import CommerceFeaturesConfig, Config
from lakeml.derived_dates import DerivedDates
from lakeml.lakehouse import DeltaTableRef, Lakehouse
from lakeml.steps import DateRange, StepResult
from lakeml.transforms.decay import age_days, decay_factor, end_of_day, value_of, with_as_of_dates
from lakeml.transforms.segments import (
    SEGMENT_END,
    SEGMENT_START,
    clip_segments,
    coverage_segments,
    intersect_segments,
    merge_touching_segments,
    trailing_window_segments,
)
from lakeml.transforms.sessions import events_within, sessionize

USER_ITEM_INTERACTIONS = "user_item_interactions"
ITEM_STATS = "item_stats"
USER_ITEM_DAYS = "user_item_days"
AS_OF_DATE = "as_of_date"
BURST_SECONDS = 60

USER_ITEM_INTERACTIONS_SCHEMA = T.StructType(
    [
        T.StructField("user_id", T.StringType(), False),
        T.StructField("item_id", T.StringType(), False),
        T.StructField("strength", T.DoubleType(), False),  # decayed implicit interaction strength
        T.StructField("views", T.LongType(), False),
        T.StructField("carts", T.LongType(), False),  # add_to_cart events
        T.StructField("removes", T.LongType(), False),  # remove_from_cart events
        T.StructField("purchases", T.LongType(), False),
        T.StructField("purchased_units", T.LongType(), False),  # sum of quantity on purchases
        T.StructField("events", T.LongType(), False),  # all counted events of the pair
        T.StructField("sessions", T.LongType(), False),  # distinct sessions with the pair
        T.StructField("last_event_ts", T.TimestampType(), False),
        T.StructField("rating_last", T.IntegerType(), True),  # explicit rating, NULL when none
        T.StructField("rating_ts", T.TimestampType(), True),
        T.StructField("rating_count", T.LongType(), False),
        T.StructField(AS_OF_DATE, T.DateType(), False),  # partition
    ]
)


def _latest(field: str, kind: T.DataType) -> T.StructType:
    """What ``max(struct(ts, event_id, <field>))`` gives: the day's latest event's value, ties by event_id."""
    return T.StructType(
        [
            T.StructField("ts", T.TimestampType()),
            T.StructField("event_id", T.StringType()),
            T.StructField(field, kind),
        ]
    )


# Per-day aggregates both tables are computed from, kept so a run for D computes only D's day.
USER_ITEM_DAYS_SCHEMA = T.StructType(
    [
        T.StructField("user_id", T.StringType(), False),
        T.StructField("item_id", T.StringType(), False),
        T.StructField("contribution", T.DoubleType(), False),  # strength added, as of the end of the day
        T.StructField("views", T.LongType(), False),
        T.StructField("carts", T.LongType(), False),
        T.StructField("removes", T.LongType(), False),
        T.StructField("purchases", T.LongType(), False),
        T.StructField("purchased_units", T.LongType(), False),
        T.StructField("events", T.LongType(), False),
        T.StructField("sessions", T.LongType(), False),  # distinct sessions with the pair's events that day
        T.StructField("first_session_start", T.TimestampType(), False),
        T.StructField("last_session_start", T.TimestampType(), False),
        T.StructField("last_event_ts", T.TimestampType(), False),
        T.StructField("last_rating", _latest("rating", T.IntegerType()), True),
        T.StructField("rating_count", T.LongType(), False),
        T.StructField("rating_sum", T.LongType(), True),
        T.StructField("last_category", _latest("category", T.StringType()), True),
        T.StructField("event_date", T.DateType(), False),  # partition
    ]
)

ITEM_STATS_SCHEMA = T.StructType(
    [
        T.StructField("item_id", T.StringType(), False),
        T.StructField("category", T.StringType(), True),
        T.StructField("views", T.LongType(), False),
        T.StructField("carts", T.LongType(), False),
        T.StructField("purchases", T.LongType(), False),
        T.StructField("events", T.LongType(), False),
        T.StructField("users", T.LongType(), False),  # distinct users
        T.StructField("rating_count", T.LongType(), False),
        T.StructField("rating_mean", T.DoubleType(), True),
        T.StructField("category_rank", T.IntegerType(), True),  # 1 = most popular in its category
        T.StructField("category_share", T.DoubleType(), True),  # events / category's events
        T.StructField(AS_OF_DATE, T.DateType(), False),  # partition
    ]
)


def _is(event_type: str) -> Column:
    return F.col("event_type") == F.lit(event_type)


def _count_if(condition: Column) -> Column:
    return F.sum(F.when(condition, F.lit(1)).otherwise(F.lit(0))).cast("long")


def read_range(cfg: CommerceFeaturesConfig, first: date, last: date) -> tuple[date, date]:
    """The event days the as-of dates [first, last] need: the longest trailing window before first."""
    window = max(cfg.lookback_days, cfg.item_window_days)
    return first - timedelta(days=window - 1), last


def flag_bot_days(events: DataFrame, cfg: CommerceFeaturesConfig) -> DataFrame:
    """Reads user_id, event_date, ts; adds is_bot_day (the user's UTC day breaks a bot threshold)."""
    day = Window.partitionBy("user_id", "event_date")
    burst = events_within(["user_id", "event_date"], "ts", BURST_SECONDS)
    return (
        events.withColumn("_burst", burst)
        .withColumn(
            "is_bot_day",
            (F.max("_burst").over(day) > F.lit(cfg.bot_max_events_per_minute))
            | (F.count(F.lit(1)).over(day) > F.lit(cfg.bot_max_events_per_day)),
        )
        .drop("_burst")
    )


def counted_events(
    events: DataFrame, cfg: CommerceFeaturesConfig, seeds: DataFrame | None = None
) -> DataFrame:
    """Reads silver clickstream rows; keeps non-bot-day events and adds session_start_ts.

    ``seeds`` (``session_tails`` of the day before the events): sessions open at midnight continue.
    """
    kept = events.select(
        "event_id", "ts", "user_id", "event_type", "item_id", "category", "quantity", "rating", "event_date"
    )
    return (
        kept.transform(flag_bot_days, cfg)
        .where(~F.col("is_bot_day"))
        .drop("is_bot_day")
        .transform(sessionize, ["user_id"], "ts", "event_id", cfg.session_gap_minutes, seeds=seeds)
    )


def pair_day_aggregates(events: DataFrame, cfg: CommerceFeaturesConfig) -> DataFrame:
    """Reads counted events; one USER_ITEM_DAYS_SCHEMA row per (user_id, item_id, event_date): the day's
    sums, strength contribution relative to the end of that day, sessions and their first and last
    start, latest rating and category."""
    weight = value_of(F.col("event_type"), cfg.event_weights)
    decay = decay_factor(age_days(F.col("ts"), end_of_day(F.col("event_date"))), cfg.half_life_days)
    is_rating = _is("rating") & F.col("rating").isNotNull()
    return (
        events.groupBy("user_id", "item_id", "event_date")
        .agg(
            F.sum(weight * decay).alias("contribution"),
            _count_if(_is("view")).alias("views"),
            _count_if(_is("add_to_cart")).alias("carts"),
            _count_if(_is("remove_from_cart")).alias("removes"),
            _count_if(_is("purchase")).alias("purchases"),
            F.sum(F.when(_is("purchase"), F.coalesce(F.col("quantity"), F.lit(0))).otherwise(F.lit(0)))
            .cast("long")
            .alias("purchased_units"),
            F.count(F.lit(1)).alias("events"),
            F.size(F.collect_set("session_start_ts")).cast("long").alias("sessions"),
            F.min("session_start_ts").alias("first_session_start"),
            F.max("session_start_ts").alias("last_session_start"),
            F.max("ts").alias("last_event_ts"),
            F.max(F.when(is_rating, F.struct("ts", "event_id", "rating"))).alias("last_rating"),
            _count_if(is_rating).alias("rating_count"),
            F.sum(F.when(is_rating, F.col("rating"))).cast("long").alias("rating_sum"),
            F.max(F.when(F.col("category").isNotNull(), F.struct("ts", "event_id", "category"))).alias(
                "last_category"
            ),
        )
        .select(*USER_ITEM_DAYS_SCHEMA.fieldNames())
    )


def session_tails(days: DataFrame) -> DataFrame:
    """Reads pair-day aggregates of one day; per user_id, the last counted event ``ts`` and its
    ``session_start_ts`` (the day's latest session: sessions of a user do not overlap)."""
    return days.groupBy("user_id").agg(
        F.max("last_event_ts").alias("ts"), F.max("last_session_start").alias("session_start_ts")
    )


def pair_days(events: DataFrame, cfg: CommerceFeaturesConfig) -> DataFrame:
    """Reads counted events; ``pair_day_aggregates`` with the session carry between a pair's days."""
    return pair_day_aggregates(events, cfg).transform(with_session_carry)


def with_session_carry(days: DataFrame) -> DataFrame:
    """Reads pair-day aggregates (session count and first/last start); adds new_sessions and
    carried_session."""
    previous = Window.partitionBy("user_id", "item_id").orderBy("event_date")
    carried = F.coalesce(
        F.lag("last_session_start").over(previous) == F.col("first_session_start"), F.lit(False)
    )
    return days.withColumn("carried_session", carried.cast("long")).withColumn(
        "new_sessions", F.col("sessions") - F.col("carried_session")
    )


def interaction_segments(days: DataFrame, cfg: CommerceFeaturesConfig, first: date, last: date) -> DataFrame:
    """Reads pair_days rows; per (user_id, item_id), the date ranges [segment_start, segment_end) within
    [first, last] over which the pair's window holds the same days, with the window's values and
    ``strength_at`` (the strength as of ``decay_from``, the date its content last changed)."""
    sums = ["views", "carts", "removes", "purchases", "purchased_units", "events", "rating_count"]
    active = F.col("event_date").isNotNull()  # NULL on the rows of days leaving the window

    def decayed(day: Column) -> Column:  # a day's contribution as of the segment's start
        age = F.datediff(F.col(SEGMENT_START), day["event_date"]).cast("double")
        return day["contribution"] * decay_factor(age, cfg.half_life_days)

    def window_values(frame: WindowSpec) -> list[Column]:
        contributions = F.collect_list(F.when(active, F.struct("event_date", "contribution"))).over(frame)
        first_day = F.min(F.when(active, F.struct("event_date", "carried_session"))).over(frame)
        return [
            F.aggregate(contributions, F.lit(0.0), lambda total, day: total + decayed(day)).alias(
                "strength_at"
            ),
            *[F.sum(c).over(frame).cast("long").alias(c) for c in sums],
            (F.sum("new_sessions").over(frame) + first_day["carried_session"]).alias("sessions"),
            F.max("last_event_ts").over(frame).alias("last_event_ts"),
            F.max("last_rating").over(frame).alias("_rating"),
        ]

    return (
        days.transform(
            trailing_window_segments,
            ["user_id", "item_id"],
            "event_date",
            cfg.lookback_days,
            window_values,
            until=last + timedelta(days=1),
        )
        .withColumn("decay_from", F.col(SEGMENT_START))
        # Plain columns before the explode: Spark 4.0 failed to plan the write with a struct's fields
        # pruned through it ("Couldn't find _extract_ts").
        .withColumn("rating_last", F.col("_rating.rating"))
        .withColumn("rating_ts", F.col("_rating.ts"))
        .drop("_rating")
        .transform(clip_segments, F.lit(first), F.lit(last + timedelta(days=1)))
    )


def interaction_pieces(segments: DataFrame, cfg: CommerceFeaturesConfig) -> DataFrame:
    """Reads interaction_segments rows; their parts on the dates where both the user (counted events)
    and the item (distinct users) pass the minimum-activity filters."""
    users = (
        coverage_segments(segments, ["user_id"], F.col("events"))
        .where(F.col("covered") >= F.lit(cfg.min_user_events))
        .transform(merge_touching_segments, ["user_id"])
    )
    # A pair's segments do not overlap, so the segments covering a date count the item's users.
    items = (
        coverage_segments(segments, ["item_id"], F.lit(1))
        .where(F.col("covered") >= F.lit(cfg.min_item_users))
        .transform(merge_touching_segments, ["item_id"])
    )
    return segments.transform(intersect_segments, users, ["user_id"]).transform(
        intersect_segments, items, ["item_id"]
    )


def expand_interactions(pieces: DataFrame, cfg: CommerceFeaturesConfig) -> DataFrame:
    """Reads interaction_pieces rows; one row per (user_id, item_id, as_of_date) of each piece's dates."""
    age = F.datediff(F.col(AS_OF_DATE), F.col("decay_from")).cast("double")
    return (
        pieces.withColumn(
            AS_OF_DATE, F.explode(F.sequence(F.col(SEGMENT_START), F.date_sub(F.col(SEGMENT_END), 1)))
        )
        .withColumn("strength", F.col("strength_at") * decay_factor(age, cfg.half_life_days))
        .select(*USER_ITEM_INTERACTIONS_SCHEMA.fieldNames())
    )


def user_item_interactions(
    days: DataFrame, cfg: CommerceFeaturesConfig, first: date, last: date
) -> DataFrame:
    """Reads pair_days rows; one row per (user_id, item_id, as_of_date) in [first, last] (module rules)."""
    segments = interaction_segments(days, cfg, first, last)
    return segments.transform(interaction_pieces, cfg).transform(expand_interactions, cfg)


def item_stats(days: DataFrame, cfg: CommerceFeaturesConfig, first: date, last: date) -> DataFrame:
    """Reads pair_days rows; one row per (item_id, as_of_date) in [first, last] (module rules)."""
    items = (
        days.transform(with_as_of_dates, "event_date", first, last, cfg.item_window_days)
        .groupBy("item_id", AS_OF_DATE)
        .agg(
            F.sum("views").cast("long").alias("views"),
            F.sum("carts").cast("long").alias("carts"),
            F.sum("purchases").cast("long").alias("purchases"),
            F.sum("events").cast("long").alias("events"),
            F.countDistinct("user_id").alias("users"),
            F.sum("rating_count").cast("long").alias("rating_count"),
            F.sum("rating_sum").alias("_rating_sum"),
            F.max("last_category").alias("_category"),
        )
        .withColumn("category", F.col("_category.category"))
        .withColumn(
            "rating_mean",
            F.when(F.col("rating_count") > 0, F.col("_rating_sum").cast("double") / F.col("rating_count")),
        )
    )
    category = Window.partitionBy("category", AS_OF_DATE)
    ranked = category.orderBy(
        F.col("users").desc(), F.col("purchases").desc(), F.col("views").desc(), F.col("item_id")
    )
    known = F.col("category").isNotNull()
    return (
        items.withColumn("category_rank", F.when(known, F.row_number().over(ranked)))
        .withColumn(
            "category_share",
            F.when(known, F.col("events").cast("double") / F.sum("events").over(category)),
        )
        .select(*ITEM_STATS_SCHEMA.fieldNames())
    )


# Raise when the code computing gold/user_item_days changes its results: stored days are recomputed.
USER_ITEM_DAYS_LOGIC = 1


def settings_fingerprint(cfg: CommerceFeaturesConfig) -> str:
    """Identifies the logic, schema and settings stored pair-day aggregates were computed with."""
    identity = f"{USER_ITEM_DAYS_LOGIC}|{USER_ITEM_DAYS_SCHEMA.json()}|{cfg!r}"
    return hashlib.sha256(identity.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class PendingDays:
    """Pair-day aggregates computed from silver for [start, last], to be stored (``store_user_item_days``)."""

    start: date
    last: date
    silver_version: int


def _user_item_days_tables(
    lake: Lakehouse, cfg: CommerceFeaturesConfig
) -> tuple[DeltaTableRef, DerivedDates]:
    silver = lake.table("silver", "clickstream")
    table = lake.table("gold", USER_ITEM_DAYS).create(USER_ITEM_DAYS_SCHEMA, ["event_date"])
    freshness = DerivedDates(
        lake.table("ops", "derived_dates"),
        f"gold/{USER_ITEM_DAYS}",
        table,
        silver,
        "event_date",
        settings_fingerprint(cfg),
    )
    return table, freshness


def load_user_item_days(
    lake: Lakehouse, cfg: CommerceFeaturesConfig, first: date, last: date
) -> tuple[DataFrame, PendingDays | None]:
    """Pair-day aggregates of event dates [first, last], partitioned by user_id; and what is not stored yet.

    Stored dates that are current (``DerivedDates``) are read from gold/user_item_days; from the first
    date that is not (new, settings changed, late silver rows, or an earlier date recomputed since)
    to ``last``, they are computed from silver, and sessions open at the end of the day before
    continue from its stored tails.
    """
    table, freshness = _user_item_days_tables(lake, cfg)
    silver = freshness.source
    version = silver.version() if silver.exists() else -1
    start = freshness.first_stale(first, last) if version >= 0 else None
    if start is None:
        return table.read(where=[("event_date", ">=", first), ("event_date", "<=", last)]).repartition(
            "user_id"
        ), None
    seeds = session_tails(table.read(where=[("event_date", "=", start - timedelta(days=1))]))
    events = silver.read(version=version, where=[("event_date", ">=", start), ("event_date", "<=", last)])
    # Partitioned by user_id already (sessions are per user, and the aggregation keeps that).
    days = pair_day_aggregates(counted_events(events, cfg, seeds), cfg)
    if start > first:
        stored = table.read(where=[("event_date", ">=", first), ("event_date", "<", start)])
        days = stored.unionByName(days).repartition("user_id")
    return days, PendingDays(start, last, version)


def store_user_item_days(
    lake: Lakehouse, cfg: CommerceFeaturesConfig, days: DataFrame, pending: PendingDays
) -> None:
    """Write the computed dates of ``days`` (``load_user_item_days``) to gold/user_item_days and record
    them current."""
    table, freshness = _user_item_days_tables(lake, cfg)
    dates = [("event_date", ">=", pending.start), ("event_date", "<=", pending.last)]
    computed = days.where(F.col("event_date") >= F.lit(pending.start)).select(
        *USER_ITEM_DAYS_SCHEMA.fieldNames()
    )
    # One task per date writes it (few, large files for the runs that read many days), unsorted.
    written = table.overwrite_where(
        computed.repartition("event_date"), dates, open_files=(pending.last - pending.start).days + 1
    )
    # A plain overwrite (no txn) always commits, so its version is the commit that holds the rows.
    assert written.version is not None
    freshness.record(pending.start, pending.last, pending.silver_version, written.version)


def build_commerce_features(spark: SparkSession, config: Config, dates: DateRange) -> StepResult:
    """Compute and write every as_of_date of ``dates`` of both gold tables.

    Details: rows written per table and ``events``, the counted (non-bot) silver events in the window
    (the rows in; rows out are both tables' rows).
    """
    first, last = dates.first, dates.last
    cfg = config.features.commerce
    lake = Lakehouse(spark, config)
    targets = {
        USER_ITEM_INTERACTIONS: lake.table("gold", USER_ITEM_INTERACTIONS).create(
            USER_ITEM_INTERACTIONS_SCHEMA, [AS_OF_DATE]
        ),
        ITEM_STATS: lake.table("gold", ITEM_STATS).create(ITEM_STATS_SCHEMA, [AS_OF_DATE]),
    }
    where = [(AS_OF_DATE, ">=", first), (AS_OF_DATE, "<=", last)]
    d0, d1 = read_range(cfg, first, last)
    raw_days, pending = load_user_item_days(lake, cfg, d0, d1)
    days = raw_days.transform(with_session_carry).persist()
    segments: DataFrame | None = None
    try:
        if pending is not None:
            store_user_item_days(lake, cfg, days, pending)
        # Cached: the activity filters and the pieces all read the segments.
        segments = interaction_segments(days, cfg, first, last).persist()
        events = days.agg(F.coalesce(F.sum("events"), F.lit(0))).head(1)[0][0]
        interactions = interaction_pieces(segments, cfg).transform(expand_interactions, cfg)
        counts = {
            # Each task holds pieces of every date: one open file per date, no sort of the output.
            USER_ITEM_INTERACTIONS: targets[USER_ITEM_INTERACTIONS]
            .overwrite_where(interactions, where, open_files=len(dates))
            .rows_added,
            ITEM_STATS: targets[ITEM_STATS]
            .overwrite_where(item_stats(days, cfg, first, last), where)
            .rows_added,
        }
    finally:
        if segments is not None:
            segments.unpersist()
        days.unpersist()
    details = {**counts, "events": int(events)}
    return StepResult(rows_in=int(events), rows_out=sum(counts.values()), details=details)
