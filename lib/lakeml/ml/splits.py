"""Leakage-free train / validation / test splits, each a transform adding a ``split`` column.

- time: whole days of a date column, newest last, with an optional gap before test (label maturity);
- latest per user: each user's newest rows go to test, the ones just before to validation;
- grouped: a hash of the group key decides, so no group (machine) is in two splits.
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
    """Reads ``date_column``; adds ``split``: train < validation < gap < test by whole days (NULL after last_day or undated)."""

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
    """Reads user, time and a tiebreak column; adds ``split``: each user's newest rows test, the next validation.

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
    """Reads the group column; adds ``split`` from a hash of the group, so each group lands in one split only."""
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
