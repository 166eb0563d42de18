"""Event-time window helpers: frames strictly before each row, and distances between points.

Time frames order by a ``long`` microsecond column, so ``rangeBetween(-w, -1)`` means exactly
"events in [t - w, t)": an event at the same instant as the row (a tie) is not before it.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import Column, Window, WindowSpec
from pyspark.sql import functions as F

MICROS_PER_SECOND = 1_000_000
MICROS_PER_HOUR = 3_600 * MICROS_PER_SECOND
EARTH_RADIUS_KM = 6_371.0


def epoch_micros(ts: Column) -> Column:
    """A timestamp as microseconds since the epoch (a long, for exact range frames)."""
    return F.unix_micros(ts)


def window_before(partition_by: Sequence[str], order_micros: str, length_micros: int | None) -> WindowSpec:
    """Rows of the same partition in [t - length, t) by ``order_micros`` (unbounded when length is None)."""
    start = Window.unboundedPreceding if length_micros is None else -length_micros
    return Window.partitionBy(*partition_by).orderBy(order_micros).rangeBetween(start, -1)


def haversine_km(lat1: Column, lon1: Column, lat2: Column, lon2: Column) -> Column:
    """Great-circle distance in km between two points given in degrees (NULL if any is NULL)."""
    p1, p2 = F.radians(lat1), F.radians(lat2)
    dlat, dlon = p2 - p1, F.radians(lon2) - F.radians(lon1)
    a = F.pow(F.sin(dlat / 2), 2) + F.cos(p1) * F.cos(p2) * F.pow(F.sin(dlon / 2), 2)
    # Clamp rounding above 1 with when(), not least(): least() skips NULLs and would invent a distance.
    return F.lit(2 * EARTH_RADIUS_KM) * F.asin(F.sqrt(F.when(a > 1, F.lit(1.0)).otherwise(a)))


def sample_std(count: Column, total: Column, total_of_squares: Column) -> Column:
    """Sample standard deviation from n, Σx and Σx² (NULL for fewer than two values)."""
    variance = (total_of_squares - total * total / count) / (count - 1)
    return F.when(count >= 2, F.sqrt(F.greatest(variance, F.lit(0.0))))
