"""Date segments: per key, the date ranges [segment_start, segment_end) over which a value stays constant.

A feature keyed by (entity, as_of_date) over a trailing window of days only changes on the dates one
of the entity's days enters or leaves the window. Evaluating it once per such segment and expanding
segments to dates only when writing keeps every sort and aggregation input-sized: nothing is exploded
to one row per date and then aggregated again. Segment ends are exclusive; all dates are UTC days.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date
from functools import reduce

from pyspark.sql import Column, DataFrame, Window, WindowSpec
from pyspark.sql import functions as F

SEGMENT_START = "segment_start"
SEGMENT_END = "segment_end"


def trailing_window_segments(
    days: DataFrame,
    keys: Sequence[str],
    day: str,
    window_days: int,
    aggregates: Callable[[WindowSpec], Sequence[Column]],
    until: date,
) -> DataFrame:
    """Reads one row per (keys, ``day``) with value columns; one row per (keys, segment) before
    ``until`` over which the key's days in the trailing window [D - window_days + 1, D] are the same
    nonempty set, with ``segment_start``, ``segment_end`` and ``aggregates(frame)`` over that set.

    The frame also holds one row per day leaving the window, with NULL in ``day`` and every value
    column, so aggregates must ignore NULLs (sum, max, count(column), collect_list, when(...) do).
    They may refer to ``segment_start``, the date the window's content last changed.
    """
    number = F.unix_date(F.col(day))
    end = F.unix_date(F.lit(until))
    values = [c for c in days.columns if c not in keys]
    # Each day twice: entering (shift 0) and leaving (shift window_days, values NULL). A generator,
    # not a union, so the rows keep the input's partitioning and the window needs no shuffle.
    points = (
        days.withColumn("_shift", F.explode(F.array(F.lit(0), F.lit(window_days))))
        .select(
            *keys,
            (number + F.col("_shift")).alias("_t"),
            *[F.when(F.col("_shift") == 0, F.col(c)).alias(c) for c in values],
        )
        # Changes from ``until`` on are not asked for: without them the last segment ends at
        # ``until`` (for one as-of date, no day leaves the window at all).
        .where(F.col("_t") < end)
        .withColumn(SEGMENT_START, F.date_from_unix_date(F.col("_t")))
    )
    order = Window.partitionBy(*keys).orderBy("_t")
    frame = order.rangeBetween(-(window_days - 1), Window.currentRow)
    return (
        points.select(
            *keys,
            SEGMENT_START,
            "_t",
            F.coalesce(F.lead("_t").over(order), end).alias("_next"),
            F.count(F.col(day)).over(frame).alias("_days"),
            *aggregates(frame),
        )
        # Rows at the same date see the same frame: the last of them carries the next date.
        .where((F.col("_next") != F.col("_t")) & (F.col("_days") > 0))
        .withColumn(SEGMENT_END, F.date_from_unix_date(F.col("_next")))
        .drop("_t", "_next", "_days")
    )


def coverage_segments(intervals: DataFrame, keys: Sequence[str], weight: Column) -> DataFrame:
    """Reads (keys, segment_start, segment_end) intervals; per key, the segments over which the sum of
    ``weight`` over the intervals covering a date is constant, as (keys, segment_start, segment_end,
    covered), gaps included (covered 0)."""
    bounds = intervals.select(
        *keys,
        F.array(
            F.struct(F.unix_date(F.col(SEGMENT_START)).alias("t"), weight.alias("w")),
            F.struct(F.unix_date(F.col(SEGMENT_END)).alias("t"), (-weight).alias("w")),
        ).alias("_bounds"),
    ).select(*keys, F.inline("_bounds"))
    order = Window.partitionBy(*keys).orderBy("t")
    # A range frame takes every bound at the same date, so the running sum is the value from t on.
    running = order.rangeBetween(Window.unboundedPreceding, Window.currentRow)
    return (
        bounds.select(
            *keys, "t", F.lead("t").over(order).alias("_next"), F.sum("w").over(running).alias("covered")
        )
        .where(F.col("_next") != F.col("t"))
        .select(
            *keys,
            F.date_from_unix_date(F.col("t")).alias(SEGMENT_START),
            F.date_from_unix_date(F.col("_next")).alias(SEGMENT_END),
            "covered",
        )
    )


def merge_touching_segments(segments: DataFrame, keys: Sequence[str]) -> DataFrame:
    """Reads non-overlapping (keys, segment_start, segment_end); one row per maximal run of a key's
    segments that touch (one's end is the next one's start)."""
    order = Window.partitionBy(*keys).orderBy(SEGMENT_START)
    starts_run = F.coalesce(F.lag(SEGMENT_END).over(order) != F.col(SEGMENT_START), F.lit(True))
    run = F.sum(starts_run.cast("long")).over(order.rowsBetween(Window.unboundedPreceding, Window.currentRow))
    return (
        segments.withColumn("_run", run)
        .groupBy(*keys, "_run")
        .agg(F.min(SEGMENT_START).alias(SEGMENT_START), F.max(SEGMENT_END).alias(SEGMENT_END))
        .drop("_run")
    )


def clip_segments(segments: DataFrame, first: Column, until: Column) -> DataFrame:
    """Reads segment_start, segment_end; keeps segments meeting [first, until), cut to that range."""
    return (
        segments.withColumn(SEGMENT_START, F.greatest(F.col(SEGMENT_START), first))
        .withColumn(SEGMENT_END, F.least(F.col(SEGMENT_END), until))
        .where(F.col(SEGMENT_START) < F.col(SEGMENT_END))
    )


def intersect_segments(segments: DataFrame, ranges: DataFrame, keys: Sequence[str]) -> DataFrame:
    """Reads segments and (keys, segment_start, segment_end) ranges; the parts of segments inside a range
    of their keys (a range join: equal keys, overlapping dates)."""
    renamed = ranges.select(
        *[F.col(k).alias(f"_range_{k}") for k in keys],
        F.col(SEGMENT_START).alias("_range_start"),
        F.col(SEGMENT_END).alias("_range_end"),
    )
    condition = reduce(
        lambda a, b: a & b,
        [F.col(k) == F.col(f"_range_{k}") for k in keys],
        (F.col(SEGMENT_START) < F.col("_range_end")) & (F.col("_range_start") < F.col(SEGMENT_END)),
    )
    return (
        segments.join(renamed, condition)
        .transform(clip_segments, F.col("_range_start"), F.col("_range_end"))
        .drop(*[f"_range_{k}" for k in keys], "_range_start", "_range_end")
    )
