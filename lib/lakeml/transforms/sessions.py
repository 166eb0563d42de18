"""Sessionization and burst counting: window functions over each entity's events in time order."""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

MICROS_PER_SECOND = 1_000_000
SECONDS_PER_MINUTE = 60


def sessionize(
    df: DataFrame,
    keys: Sequence[str],
    ts: str,
    tiebreak: str,
    gap_minutes: float,
    start_col: str = "session_start_ts",
    seeds: DataFrame | None = None,
) -> DataFrame:
    """Reads ``keys``, ``ts``, ``tiebreak``; adds ``start_col``: ts of the first event of the event's session.

    Events of one key are ordered by (ts, tiebreak); an event starts a new session when it is the key's
    first event or comes strictly more than ``gap_minutes`` after the previous one (exactly the gap is
    the same session; equal timestamps are always the same session). Only earlier events matter, so
    adding later events never changes an earlier event's session.

    ``seeds`` (``keys``, ``ts``, ``start_col``; at most one row per key, earlier than its events) is
    each key's last event before ``df`` and its session start, as an earlier run computed them: a
    session open at the seed continues into ``df`` with that start, as if the history were read.
    """
    seeded = df.withColumn("_seed", F.lit(False)).withColumn(start_col, F.lit(None).cast("timestamp"))
    if seeds is not None:
        seeded = seeded.unionByName(
            seeds.select(*keys, ts, start_col).withColumn("_seed", F.lit(True)), allowMissingColumns=True
        )
    order = Window.partitionBy(*keys).orderBy(F.col(ts), F.col(tiebreak))
    gap_micros = int(gap_minutes * SECONDS_PER_MINUTE * MICROS_PER_SECOND)
    previous = F.lag(F.unix_micros(F.col(ts))).over(order)
    starts = previous.isNull() | (F.unix_micros(F.col(ts)) - previous > F.lit(gap_micros))
    running = order.rowsBetween(Window.unboundedPreceding, Window.currentRow)
    # A seed starts its key's rows; its start is the one recorded (not later than its ts, so the max holds).
    start = F.coalesce(F.col(start_col), F.col(ts))
    return (
        seeded.withColumn("_starts", starts)
        .withColumn(start_col, F.max(F.when(F.col("_starts"), start)).over(running))
        .where(~F.col("_seed"))
        .drop("_starts", "_seed")
    )


def events_within(keys: Sequence[str], ts: str, seconds: int) -> Column:
    """Reads ``keys`` and ``ts``; the number of the key's events in the ``seconds`` up to and including ts.

    A range frame over microseconds: events at ts - seconds (exclusive) .. ts (inclusive), ties counted.
    """
    frame = (
        Window.partitionBy(*keys)
        .orderBy(F.unix_micros(F.col(ts)))
        .rangeBetween(-seconds * MICROS_PER_SECOND + 1, Window.currentRow)
    )
    return F.count(F.lit(1)).over(frame)
