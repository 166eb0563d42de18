"""Leakage-free train / validation / test splits, each a transform adding a ``split`` column.

- time: whole days of a date column, newest last, with an optional gap before test (label maturity);
- latest per user: each user's newest rows go to test, the ones just before to validation;
- grouped: a hash of the group key decides, so no group (machine) is in two splits;
- time fraction: shares of a timestamp range, oldest rows train (tables of a few days or hours);
- stratified: a seeded hash of a row id decides, cut per class so each split has the same positive rate
  (no time order: an entity whose rows span splits leaks between them).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from lakeml.transforms import Transform

SPLIT = "split"
TRAIN, VALIDATION, GAP, TEST = "train", "validation", "gap", "test"


@dataclass(frozen=True)
class TimeSplitBounds:
    """First day of each later split; train is every day before ``validation_start``."""

    validation_start: dt.date
    gap_start: dt.date
    test_start: dt.date
    last_day: dt.date

    @classmethod
    def ending(
        cls, last_day: dt.date, test_days: int, gap_days: int, validation_days: int
    ) -> TimeSplitBounds:
        """Bounds counted back from ``last_day``: test_days, then gap_days, then validation_days."""
        if test_days < 1 or validation_days < 1 or gap_days < 0:
            raise ValueError("test_days and validation_days must be >= 1 and gap_days >= 0")
        test_start = last_day - dt.timedelta(days=test_days - 1)
        gap_start = test_start - dt.timedelta(days=gap_days)
        return cls(gap_start - dt.timedelta(days=validation_days), gap_start, test_start, last_day)


def describe_bounds(bounds: TimeSplitBounds) -> str:
    """The split days as a person reads them: train ..–d, validation d–d, gap d–d (if any), test d–d."""
    day = dt.timedelta(days=1)
    parts = [
        f"train … {bounds.validation_start - day}",
        f"validation {bounds.validation_start} – {bounds.gap_start - day}",
    ]
    if bounds.test_start > bounds.gap_start:
        parts.append(f"gap {bounds.gap_start} – {bounds.test_start - day}")
    parts.append(f"test {bounds.test_start} – {bounds.last_day}")
    return "; ".join(parts)


def with_time_split(date_column: str, bounds: TimeSplitBounds) -> Transform:
    """Reads ``date_column``; adds ``split``: train < validation < gap < test by whole days (NULL after
    last_day or undated)."""

    def apply(df: DataFrame) -> DataFrame:
        day = F.col(date_column)
        split = (
            F.when(day.isNull() | (day > F.lit(bounds.last_day)), F.lit(None).cast("string"))
            .when(day >= F.lit(bounds.test_start), TEST)
            .when(day >= F.lit(bounds.gap_start), GAP)
            .when(day >= F.lit(bounds.validation_start), VALIDATION)
            .otherwise(TRAIN)
        )
        return df.withColumn(SPLIT, split)

    return apply


def with_latest_per_user_split(
    user_column: str,
    time_column: str,
    tiebreak_column: str,
    test_items: int,
    validation_items: int,
    min_user_items: int,
) -> Transform:
    """Reads user, time and a tiebreak column; adds ``split``: each user's newest rows test, the next
    validation.

    Users with fewer than ``min_user_items`` rows stay wholly in train (too little history to hold out).
    """

    def apply(df: DataFrame) -> DataFrame:
        newest_first = Window.partitionBy(user_column).orderBy(
            F.col(time_column).desc(), F.col(tiebreak_column).desc()
        )
        rank = F.row_number().over(newest_first)
        count = F.count(F.lit(1)).over(Window.partitionBy(user_column))
        split = (
            F.when(count < min_user_items, TRAIN)
            .when(rank <= test_items, TEST)
            .when(rank <= test_items + validation_items, VALIDATION)
            .otherwise(TRAIN)
        )
        return df.withColumn(SPLIT, split)

    return apply


def group_bucket(group_column: str, seed: int) -> Column:
    """A uniform number in [0, 1) per group value, stable across runs and engines for a seed."""
    return F.pmod(F.xxhash64(F.col(group_column).cast("string"), F.lit(seed)), F.lit(1_000_000)) / 1_000_000.0


def with_group_split(
    group_column: str, test_fraction: float, validation_fraction: float, seed: int
) -> Transform:
    """Reads the group column; adds ``split`` from a hash of the group, so each group lands in one split
    only."""
    if not (test_fraction > 0 and validation_fraction >= 0 and test_fraction + validation_fraction < 1):
        raise ValueError("need 0 < test_fraction, 0 <= validation_fraction, and their sum < 1")

    def apply(df: DataFrame) -> DataFrame:
        u = group_bucket(group_column, seed)
        split = (
            F.when(u < test_fraction, TEST)
            .when(u < test_fraction + validation_fraction, VALIDATION)
            .otherwise(TRAIN)
        )
        return df.withColumn(SPLIT, split)

    return apply


@dataclass(frozen=True)
class TimeFractionBounds:
    """Instants splitting a time range: train < ``validation_start`` <= validation < ``test_start`` <=
    test."""

    first: dt.datetime
    validation_start: dt.datetime
    test_start: dt.datetime
    last: dt.datetime

    @classmethod
    def of_range(
        cls, first: dt.datetime, last: dt.datetime, validation_fraction: float, test_fraction: float
    ) -> TimeFractionBounds:
        """The last ``test_fraction`` of [first, last] is test, the ``validation_fraction`` before it
        validation."""
        if not (validation_fraction > 0 and test_fraction > 0 and validation_fraction + test_fraction < 1):
            raise ValueError("need 0 < validation_fraction, 0 < test_fraction, and their sum < 1")
        span = last - first
        test_start = last - span * test_fraction
        return cls(first, test_start - span * validation_fraction, test_start, last)

    def __str__(self) -> str:
        return (
            f"train {self.first} … < {self.validation_start}; validation < {self.test_start}; "
            f"test … {self.last}"
        )


def with_time_fraction_split(time_column: str, bounds: TimeFractionBounds) -> Transform:
    """Reads ``time_column``; adds ``split`` by the instants of ``bounds`` (NULL when untimed or after
    ``last``)."""

    def apply(df: DataFrame) -> DataFrame:
        ts = F.col(time_column).cast("timestamp")
        split = (
            F.when(ts.isNull() | (ts > F.lit(bounds.last)), F.lit(None).cast("string"))
            .when(ts >= F.lit(bounds.test_start), TEST)
            .when(ts >= F.lit(bounds.validation_start), VALIDATION)
            .otherwise(TRAIN)
        )
        return df.withColumn(SPLIT, split)

    return apply


def row_bucket(id_column: str, seed: int) -> Column:
    """A uniform number in [0, 1) per row id, stable across runs for a seed."""
    return group_bucket(id_column, seed)


def stratified_cuts(
    df: DataFrame,
    label_column: str,
    id_column: str,
    validation_fraction: float,
    test_fraction: float,
    seed: int,
) -> dict[float, tuple[float, float]]:
    """Per label value, the row-bucket quantiles at ``test_fraction`` and ``test + validation`` (one small
    aggregate: a row per class), so each class is cut in the same shares, however rare it is."""
    if not (validation_fraction > 0 and test_fraction > 0 and validation_fraction + test_fraction < 1):
        raise ValueError("need 0 < validation_fraction, 0 < test_fraction, and their sum < 1")
    q = F.percentile_approx(
        row_bucket(id_column, seed), [test_fraction, test_fraction + validation_fraction], 100_000
    )
    rows = df.groupBy(F.col(label_column).cast("double").alias("y")).agg(q.alias("q")).collect()  # per class
    return {float(r["y"]): (float(r["q"][0]), float(r["q"][1])) for r in rows if r["y"] is not None}


def with_stratified_split(
    label_column: str, id_column: str, cuts: dict[float, tuple[float, float]], seed: int
) -> Transform:
    """Reads the label and id columns; adds ``split`` from the row's bucket against its class's ``cuts``
    (bucket <= first cut: test, <= second: validation, else train)."""

    def apply(df: DataFrame) -> DataFrame:
        u, y = row_bucket(id_column, seed), F.col(label_column).cast("double")
        split = F.lit(None).cast("string")
        for value, (test_cut, validation_cut) in sorted(cuts.items(), reverse=True):
            split = F.when(
                y == F.lit(value),
                F.when(u <= test_cut, TEST).when(u <= validation_cut, VALIDATION).otherwise(TRAIN),
            ).otherwise(split)
        return df.withColumn(SPLIT, split)

    return apply
