"""Exponential time decay and trailing as-of windows (a row per as-of date it falls into)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

SECONDS_PER_DAY = 86_400.0


def decay_factor(age_days: Column, half_life_days: float) -> Column:
    """Reads an age in days; the weight 2^(-age / half_life_days) (1 at age 0, 1/2 at one half-life)."""
    return F.pow(F.lit(2.0), -age_days / F.lit(float(half_life_days)))


def age_days(ts: Column, reference: Column) -> Column:
    """Reads two timestamps; the days from ``ts`` to ``reference`` as a double (microsecond precision)."""
    return (F.unix_micros(reference) - F.unix_micros(ts)) / F.lit(SECONDS_PER_DAY * 1_000_000)


def end_of_day(day: Column) -> Column:
    """Reads a date; the UTC timestamp of the following midnight (the exclusive end of that day)."""
    return F.to_timestamp(F.date_add(day, 1))


def value_of(key: Column, values: Mapping[str, float], default: float = 0.0) -> Column:
    """Reads a string key; the mapped double (``default`` for keys not in ``values`` and for NULL)."""
    result = F.lit(default)
    for name, value in sorted(values.items()):
        result = F.when(key == F.lit(name), F.lit(float(value))).otherwise(result)
    return result


def with_as_of_dates(
    df: DataFrame, day: str, first: date, last: date, window_days: int, as_of: str = "as_of_date"
) -> DataFrame:
    """Reads the date column ``day``; adds ``as_of``: one row per date D in [first, last] with
    day in [D - window_days + 1, D] (the trailing windows the row belongs to); rows in none are dropped."""
    lo = F.greatest(F.col(day), F.lit(first))
    hi = F.least(F.date_add(F.col(day), window_days - 1), F.lit(last))
    return df.where(lo <= hi).withColumn(as_of, F.explode(F.sequence(lo, hi)))
